"""The oracle of the demo rules: what each demo user should see, computed from the demo
mesh's raw files with DuckDB, never through Meshgate.

For each demo user, an in-memory DuckDB in which ``sales.orders``, ``crm.customers`` and
``logistics.shipments`` are views written by hand, here, from the demo rules
(gateway/demo/files/): the rows the user may see, with the columns masked as the rules say
(``sha256(key || CAST(x AS VARCHAR))``, first letter + ``***@`` + domain,
``CAST(round(amount/100)*100 AS DECIMAL(12,2))``). Products the user may not read do not
exist there. The same SQL text then runs on both sides.
"""

from __future__ import annotations

import tomllib
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


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def hash_key(mesh: Path) -> str:
    return tomllib.loads((mesh / "mesh.toml").read_text(encoding="utf-8"))["governance"]["hash_key"]


def hashed(column: str, key: str) -> str:
    """The `hash` mask by hand: keyed lower-hex sha256, NULL stays NULL."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL "
        f"ELSE sha256({sql_string(key)} || CAST({column} AS VARCHAR)) END"
    )


def partial_email(column: str) -> str:
    """The `partial_email` mask by hand: first letter, ***@, the domain."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL "
        f"ELSE left({column}, 1) || '***@' || split_part({column}, '@', 2) END"
    )


def rounded(column: str, step: int, type_: str) -> str:
    """The `round:<step>` mask by hand."""
    return f"CAST(round({column} / {step}) * {step} AS {type_})"


def raw_sources(mesh: Path) -> dict[str, str]:
    return {
        "sales.orders": "oracle_src.main.orders",
        "crm.customers": f"read_parquet({sql_string(str(mesh / CUSTOMERS_PARQUET))})",
        "logistics.shipments": (
            f"read_parquet({sql_string(str(mesh / SHIPMENTS_DIR / '**' / '*.parquet'))}, "
            "hive_partitioning = true)"
        ),
    }


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
                f"SELECT customer_id, name, {partial_email('email')} AS email, "
                f"{hashed('ssn', key)} AS ssn, region FROM {customers}"
            ),
        },
        # marketing: customers only, ssn does not exist, email hashed.
        "carol": {
            "crm.customers": f"SELECT customer_id, name, {hashed('email', key)} AS email, region FROM {customers}",
        },
        # ops: shipments as they are, orders with amounts rounded to hundreds.
        "erin": {
            "sales.orders": (
                f"SELECT order_id, customer_id, region, {rounded('amount', 100, 'DECIMAL(12,2)')} AS amount, "
                f"order_date FROM {orders}"
            ),
            "logistics.shipments": everything["logistics.shipments"],
        },
        # no roles: nothing at all.
        "dave": {},
    }


class Oracle:
    """One in-memory DuckDB per user, products defined by hand as in ``user_views``."""

    def __init__(self, mesh: Path, key: str) -> None:
        self.mesh = mesh
        self.key = key
        self.views = user_views(mesh, key)
        self._cons: dict[str, duckdb.DuckDBPyConnection] = {}
        for user, views in self.views.items():
            con = duckdb.connect(":memory:")
            con.execute(f"ATTACH {sql_string(str(mesh / ORDERS_DB))} AS oracle_src (READ_ONLY)")
            for product, select in views.items():
                domain, name = product.split(".")
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {domain}")
                con.execute(f"CREATE VIEW {domain}.{name} AS {select}")
            self._cons[user] = con
        raw = duckdb.connect(":memory:")
        raw.execute(f"ATTACH {sql_string(str(mesh / ORDERS_DB))} AS oracle_src (READ_ONLY)")
        for product, select in user_views(mesh, key)["bob"].items():
            domain, name = product.split(".")
            raw.execute(f"CREATE SCHEMA IF NOT EXISTS {domain}")
            raw.execute(f"CREATE VIEW {domain}.{name} AS {select}")
        self._cons["__raw__"] = raw

    def may_read(self, user: str, product: str) -> bool:
        return product in self.views[user]

    def run(self, user: str, sql: str, params: list | tuple | None = None) -> pa.Table:
        cursor = self._cons[user].cursor()
        try:
            return cursor.sql(sql, params=list(params) if params else None).to_arrow_table()
        finally:
            cursor.close()

    def raw(self, sql: str, params: list | tuple | None = None) -> pa.Table:
        """The unmasked, unfiltered data (for 'the mask really changed something' checks)."""
        return self.run("__raw__", sql, params)

    def schema(self, user: str, product: str) -> pa.Schema:
        return self.run(user, f"SELECT * FROM {product} LIMIT 0").schema

    def close(self) -> None:
        for con in self._cons.values():
            con.close()


def open_direct(mesh: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB reading the mesh's files, with one view per product name."""
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH {sql_string(str(mesh / ORDERS_DB))} AS oracle_src (READ_ONLY)")
    for key, source in raw_sources(mesh).items():
        domain, name = key.split(".")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {domain}")
        con.execute(f"CREATE VIEW {domain}.{name} AS SELECT * FROM {source}")
    return con
