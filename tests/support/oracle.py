"""The oracle of the demo rules: what each demo user should see under the demo policies,
computed from the demo mesh's raw files with DuckDB, never through Meshgate.

``Oracle(mesh)`` holds, for the whole session (the ``oracle`` fixture of tests/conftest.py):

- the raw data: ``direct``, an in-memory DuckDB in which ``sales.orders``,
  ``crm.customers`` and ``logistics.shipments`` are views over the files as they are
  (every row, every column, unmasked); ``raw(sql)`` runs SQL there;
- each user's view: one in-memory DuckDB per demo user in which the same names are views
  written by hand, here, from the demo rules (gateway/demo/files/): the rows the user may
  see, with the columns masked as the rules say (``sha256(key || CAST(x AS VARCHAR))``,
  first letter + ``***@`` + domain, ``CAST(round(amount/100)*100 AS DECIMAL(12,2))``).
  Products the user may not read do not exist there. ``run(user, sql)`` runs SQL there, so
  the same SQL text runs on both sides;
- facts of the data, for the leak checks (``support.leaks``) and sharper expectations:
  the raw secrets (ssns, emails, the hash key), their keyed hashes, the EU orders, ...
  They are never printed: ``repr(oracle)`` names the mesh only.
"""

from __future__ import annotations

import hashlib
import tomllib
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

ORDERS_DB = Path("sales/data/orders.duckdb")
CUSTOMERS_PARQUET = Path("crm/data/customers.parquet")
SHIPMENTS_DIR = Path("logistics/data/shipments")

USERS = ("alice", "bob", "carol", "erin", "dave")
PRODUCTS = ("sales.orders", "crm.customers", "logistics.shipments")
PRIMARY_KEY = {
    "sales.orders": "order_id",
    "crm.customers": "customer_id",
    "logistics.shipments": "shipment_id",
}
DENIED_TEMPLATE = "unknown product {key} (or you may not read it)"
#: The alias under which the oracle's DuckDBs attach the demo's orders database.
ORDERS_ALIAS = "raw_sales"


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def hash_key(mesh: Path) -> str:
    """The mesh's ``[governance] hash_key``."""
    return tomllib.loads((mesh / "mesh.toml").read_text(encoding="utf-8"))["governance"]["hash_key"]


def raw_sources(mesh: Path) -> dict[str, str]:
    """Each product as a DuckDB FROM-clause over its raw files (no views involved), in a
    DuckDB that attached the orders database as ``ORDERS_ALIAS``."""
    return {
        "sales.orders": f"{ORDERS_ALIAS}.main.orders",
        "crm.customers": f"read_parquet({sql_string(str(mesh / CUSTOMERS_PARQUET))})",
        "logistics.shipments": (
            f"read_parquet({sql_string(str(mesh / SHIPMENTS_DIR / '**' / '*.parquet'))}, "
            "hive_partitioning = true)"
        ),
    }


# --------------------------------------------------------------------------- the demo rules by hand


def _hash_mask(column: str, key: str) -> str:
    """The `hash` mask by hand: keyed lower-hex sha256, NULL stays NULL."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL "
        f"ELSE sha256({sql_string(key)} || CAST({column} AS VARCHAR)) END"
    )


def _partial_email_mask(column: str) -> str:
    """The `partial_email` mask by hand: first letter, ***@, the domain."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL "
        f"ELSE left({column}, 1) || '***@' || split_part({column}, '@', 2) END"
    )


def _round_mask(column: str, step: int, type_: str) -> str:
    """The `round:<step>` mask by hand."""
    return f"CAST(round({column} / {step}) * {step} AS {type_})"


def user_views(mesh: Path, key: str) -> dict[str, dict[str, str]]:
    """user -> product -> the SELECT that stands for what the demo rules let the user see."""
    src = raw_sources(mesh)
    orders, customers, shipments = (
        src["sales.orders"],
        src["crm.customers"],
        src["logistics.shipments"],
    )
    everything = {
        "sales.orders": f"SELECT order_id, customer_id, region, amount, order_date FROM {orders}",
        "crm.customers": f"SELECT customer_id, name, email, ssn, region FROM {customers}",
        "logistics.shipments": f"SELECT shipment_id, order_id, carrier, shipped_at, region FROM {shipments}",
    }
    return {
        # admin (inherits pii_reader): everything, unmasked.
        "bob": dict(everything),
        # analyst_eu, region=EU: EU orders only; email partial, ssn hashed (global pii floor).
        "alice": {
            "sales.orders": f"{everything['sales.orders']} WHERE region = 'EU'",
            "crm.customers": (
                f"SELECT customer_id, name, {_partial_email_mask('email')} AS email, "
                f"{_hash_mask('ssn', key)} AS ssn, region FROM {customers}"
            ),
        },
        # marketing: customers only, ssn does not exist, email hashed.
        "carol": {
            "crm.customers": f"SELECT customer_id, name, {_hash_mask('email', key)} AS email, region FROM {customers}",
        },
        # ops: shipments as they are, orders with amounts rounded to hundreds.
        "erin": {
            "sales.orders": (
                f"SELECT order_id, customer_id, region, {_round_mask('amount', 100, 'DECIMAL(12,2)')} AS amount, "
                f"order_date FROM {orders}"
            ),
            "logistics.shipments": everything["logistics.shipments"],
        },
        # no roles: nothing at all.
        "dave": {},
    }


def _connect(mesh: Path, views: dict[str, str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB on the mesh's files with ``views`` (product -> SELECT)."""
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH {sql_string(str(mesh / ORDERS_DB))} AS {ORDERS_ALIAS} (READ_ONLY)")
    for product, select in views.items():
        domain, name = product.split(".")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {domain}")
        con.execute(f"CREATE VIEW {domain}.{name} AS {select}")
    return con


# --------------------------------------------------------------------------- the oracle


class Oracle:
    """The demo mesh's raw data, each demo user's view of it, and facts of it (see the
    module's docstring)."""

    def __init__(self, mesh: Path) -> None:
        self.mesh = mesh
        #: The server-side path of the mesh, as it would appear in a leaked message.
        self.mesh_dir = str(mesh.resolve())
        self.hash_key = hash_key(mesh)
        self.views = user_views(mesh, self.hash_key)
        #: Every product under its name, as the files hold it.
        self.direct = _connect(
            mesh,
            {product: f"SELECT * FROM {source}" for product, source in raw_sources(mesh).items()},
        )
        self._users = {user: _connect(mesh, views) for user, views in self.views.items()}
        self._read_facts()

    def __repr__(self) -> str:  # never the secrets a failing test would print
        return f"Oracle({self.mesh_dir!r})"

    # ----------------------------------------------------------------------- running SQL

    def connection(self, user: str | None = None) -> duckdb.DuckDBPyConnection:
        """The DuckDB of ``user``'s view (None: the raw data, ``direct``)."""
        return self.direct if user is None else self._users[user]

    def run(self, user: str, sql: str, params: list | tuple | None = None) -> pa.Table:
        """``sql`` on ``user``'s view, as an Arrow table (a cursor of its own: thread-safe)."""
        return self._table(self.connection(user), sql, params)

    def raw(self, sql: str, params: list | tuple | None = None) -> pa.Table:
        """``sql`` on the unmasked, unfiltered data, as an Arrow table."""
        return self._table(self.direct, sql, params)

    def rows(self, user: str, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """``sql`` on ``user``'s view, as DuckDB's Python rows."""
        with self.connection(user).cursor() as cursor:
            return cursor.execute(sql, list(params) if params else None).fetchall()

    def raw_rows(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """``sql`` on the unmasked, unfiltered data, as DuckDB's Python rows."""
        with self.direct.cursor() as cursor:
            return cursor.execute(sql, list(params) if params else None).fetchall()

    def may_read(self, user: str, product: str) -> bool:
        return product in self.views[user]

    def schema(self, user: str, product: str) -> pa.Schema:
        return self.run(user, f"SELECT * FROM {product} LIMIT 0").schema

    def close(self) -> None:
        self.direct.close()
        for con in self._users.values():
            con.close()

    @staticmethod
    def _table(con: duckdb.DuckDBPyConnection, sql: str, params) -> pa.Table:
        cursor = con.cursor()
        try:
            return cursor.sql(sql, params=list(params) if params else None).to_arrow_table()
        finally:
            cursor.close()

    # ----------------------------------------------------------------------- facts

    @property
    def customers_parquet(self) -> str:
        return str(Path(self.mesh_dir) / CUSTOMERS_PARQUET)

    @property
    def shipments_glob(self) -> str:
        return str(Path(self.mesh_dir) / SHIPMENTS_DIR / "**" / "*.parquet")

    def hashed(self, value: str) -> str:
        """``value`` as the `hash` mask shows it: sha256(hash_key || value), lower hex."""
        return hashlib.sha256((self.hash_key + value).encode()).hexdigest()

    def _read_facts(self) -> None:
        values = self.raw_rows
        columns = ("customer_id", "name", "email", "ssn", "region")
        customers = values(
            "SELECT customer_id, name, email, ssn, region FROM crm.customers ORDER BY customer_id"
        )
        self.raw_ssns: frozenset[str] = frozenset(r[3] for r in customers)
        self.raw_emails: frozenset[str] = frozenset(r[2] for r in customers)
        #: alice's view of ssn, carol's view of email.
        self.ssn_hashes = frozenset(self.hashed(s) for s in self.raw_ssns)
        self.email_hashes = frozenset(self.hashed(e) for e in self.raw_emails)
        self.customers = len(customers)
        #: customer 1 and a US customer, with raw values.
        self.sample_customer: dict = dict(zip(columns, customers[0], strict=True))
        self.us_customer: dict = dict(
            zip(columns, next(r for r in customers if r[4] == "US"), strict=True)
        )
        self.orders_by_region: dict[str, int] = dict(
            values("SELECT region, count(*) FROM sales.orders GROUP BY ALL")
        )
        self.eu_order_ids: frozenset[int] = frozenset(
            r[0] for r in values("SELECT order_id FROM sales.orders WHERE region = 'EU'")
        )
        #: A few US / APAC orders.
        self.non_eu_order_ids: tuple[int, ...] = tuple(
            r[0]
            for r in values(
                "SELECT order_id FROM sales.orders WHERE region <> 'EU' ORDER BY order_id LIMIT 5"
            )
        )
        eu_sum, eu_max_id, eu_min_amount, eu_max_amount = values(
            "SELECT sum(amount), max(order_id), min(amount), max(amount) FROM sales.orders WHERE region = 'EU'"
        )[0]
        self.eu_amount_sum: Decimal = eu_sum
        self.eu_max_order_id: int = eu_max_id
        self.eu_min_amount: Decimal = eu_min_amount
        self.eu_max_amount: Decimal = eu_max_amount
        self.carriers: frozenset[str] = frozenset(
            r[0] for r in values("SELECT DISTINCT carrier FROM logistics.shipments")
        )
        self.shipments: int = values("SELECT count(*) FROM logistics.shipments")[0][0]
