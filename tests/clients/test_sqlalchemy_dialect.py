"""The ``meshgate://`` SQLAlchemy dialect (gateway/clients/meshgate-sqlalchemy) against real
gateway processes: reflection as each demo user sees the mesh, bound parameters, types,
``text()``, ``select()`` over reflected tables, pandas ``read_sql_table``, the URL forms.

These run under the SQLAlchemy 2 of the test environment; tests/clients/test_superset.py
runs the same dialect under Superset's SQLAlchemy 1.4 and pandas 2.1.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from meshgate_sqlalchemy.dialect import MeshgateDialect
from meshgate_sqlalchemy.url import connect_args
from pyarrow import flight
from sqlalchemy.dialects import postgresql
from support.logs import audit_records
from support.polling import wait_until
from support.servers import RunningGateway
from support.tls import tls_private

USERS = ("alice", "bob", "carol", "dave", "erin")


def _port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def engines(gateway: RunningGateway) -> Iterator[dict[str, sa.engine.Engine]]:
    """One engine per demo user (password = user name) on the session gateway."""
    port = _port(gateway.uri)
    made = {user: sa.create_engine(f"meshgate://{user}:{user}@127.0.0.1:{port}") for user in USERS}
    yield made
    for engine in made.values():
        engine.dispose()


def _visible(oracle, user: str) -> dict[str, list[str]]:
    """domain -> sorted products that ``user`` may read, by the oracle."""
    shown: dict[str, list[str]] = {}
    for product in sorted(oracle.views[user]):
        domain, name = product.split(".")
        shown.setdefault(domain, []).append(name)
    return shown


# --------------------------------------------------------------------------- packaging

#: prints which modules of the server (or its engine) importing the dialect loaded
_PRINT_SERVER_MODULES = (
    "import sys, meshgate_sqlalchemy.dialect; "
    "print(sorted({m.split('.')[0] for m in sys.modules} & "
    "{'gateway', 'connectors', 'policies', 'duckdb', 'sqlglot', 'duckdb_engine'}))"
)


def test_the_dialect_is_registered_through_its_entry_points():
    names = {
        ep.name: ep.value for ep in importlib.metadata.entry_points(group="sqlalchemy.dialects")
    }
    for name in ("meshgate", "meshgate.adbc", "meshgate.tls"):
        assert names[name] == "meshgate_sqlalchemy.dialect:MeshgateDialect"
    for url in ("meshgate://a:b@h:1", "meshgate+adbc://a:b@h:1", "meshgate+tls://a:b@h:1"):
        assert isinstance(sa.create_engine(url).dialect, MeshgateDialect)


def test_the_client_distribution_needs_nothing_of_the_server():
    """It installs into a BI tool's environment: only the ADBC driver, pyarrow and
    SQLAlchemy (Superset behind an extra), and importing it loads nothing of the server."""
    required = importlib.metadata.requires("meshgate-sqlalchemy") or []
    plain = sorted(
        r.split(">")[0].split("<")[0].split("=")[0] for r in required if "extra" not in r
    )
    assert plain == ["adbc-driver-flightsql", "adbc-driver-manager", "pyarrow", "sqlalchemy"]
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            _PRINT_SERVER_MODULES,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


# --------------------------------------------------------------------------- reflection


@pytest.mark.parametrize("user", USERS)
def test_each_user_reflects_only_the_products_they_may_read(engines, oracle, user):
    expected = _visible(oracle, user)
    inspector = sa.inspect(engines[user])
    assert inspector.get_schema_names() == sorted(expected)
    for domain in ("sales", "crm", "logistics"):
        assert inspector.get_table_names(schema=domain) == expected.get(domain, [])
        assert inspector.get_view_names(schema=domain) == []
    for domain, products in expected.items():
        for product in products:
            columns = inspector.get_columns(product, schema=domain)
            assert [c["name"] for c in columns] == oracle.schema(user, f"{domain}.{product}").names
            assert inspector.get_pk_constraint(product, schema=domain)["constrained_columns"] == []
            assert inspector.get_foreign_keys(product, schema=domain) == []


def test_a_column_the_user_may_not_read_is_not_reflected(engines):
    """carol (marketing) may not read crm.customers.ssn: it is not among her columns."""
    carol = [c["name"] for c in sa.inspect(engines["carol"]).get_columns("customers", "crm")]
    alice = [c["name"] for c in sa.inspect(engines["alice"]).get_columns("customers", "crm")]
    assert "ssn" in alice and "ssn" not in carol


def test_a_product_the_user_may_not_read_does_not_exist_for_them(engines):
    carol = engines["carol"]
    assert not sa.inspect(carol).has_table("orders", schema="sales")
    assert sa.inspect(engines["alice"]).has_table("orders", schema="sales")
    with pytest.raises(sa.exc.NoSuchTableError):
        sa.Table("orders", sa.MetaData(), schema="sales", autoload_with=carol)
    with carol.connect() as conn, pytest.raises(sa.exc.DBAPIError) as refused:
        conn.execute(sa.text("SELECT * FROM sales.orders"))
    assert "unknown product sales.orders (or you may not read it)" in str(refused.value)


def test_names_are_matched_exactly_not_as_patterns(engines):
    """Reflection sends names as LIKE patterns with ``_`` and ``%`` escaped."""
    inspector = sa.inspect(engines["bob"])
    assert inspector.get_table_names(schema="sale_") == []
    assert inspector.get_table_names(schema="%") == []
    assert not inspector.has_table("order_", schema="sales")
    with pytest.raises(sa.exc.NoSuchTableError):
        inspector.get_columns("%", schema="sales")


def test_reflected_types_follow_the_contracts(engines):
    bob = sa.inspect(engines["bob"])
    orders = {c["name"]: c["type"] for c in bob.get_columns("orders", "sales")}
    assert isinstance(orders["order_id"], sa.BigInteger)
    assert isinstance(orders["region"], sa.String)
    assert isinstance(orders["amount"], sa.Numeric)
    assert (orders["amount"].precision, orders["amount"].scale) == (12, 2)
    assert isinstance(orders["order_date"], sa.Date)
    shipped_at = {c["name"]: c["type"] for c in bob.get_columns("shipments", "logistics")}[
        "shipped_at"
    ]
    assert isinstance(shipped_at, sa.DateTime) and not shipped_at.timezone
    dialect = engines["bob"].dialect
    assert [orders[c].compile(dialect=dialect) for c in orders] == [
        "BIGINT",
        "BIGINT",
        "VARCHAR",
        "NUMERIC(12, 2)",
        "DATE",
    ]


def test_values_come_back_as_python_types(engines):
    with engines["bob"].connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT o.order_id, o.amount, o.order_date, s.shipped_at FROM sales.orders AS o "
                "JOIN logistics.shipments AS s ON s.order_id = o.order_id "
                "ORDER BY o.order_id LIMIT 1"
            )
        ).one()
    assert isinstance(row.order_id, int)
    assert isinstance(row.amount, Decimal)
    assert type(row.order_date) is datetime.date
    assert isinstance(row.shipped_at, datetime.datetime)


# --------------------------------------------------------------------------- statements


def _record_of(gateway: RunningGateway, marker: str) -> dict:
    def found() -> dict | None:
        return next(
            (
                r
                for r in audit_records(gateway.mesh_dir)
                if r.get("event") == "query_begin" and marker in (r.get("sql") or "")
            ),
            None,
        )

    return wait_until(found, timeout=10, what=f"the audit record of {marker}")


def test_parameters_are_bound_never_inlined(engines, gateway, oracle):
    marker = f"probe_{uuid.uuid4().hex[:12]}"
    statement = sa.text(
        f"SELECT count(*) AS {marker} FROM sales.orders WHERE region = :region AND amount > :floor"
    )
    with engines["bob"].connect() as conn:
        count = conn.execute(statement, {"region": "EU", "floor": Decimal("100.00")}).scalar_one()
        injected = conn.execute(
            statement, {"region": "EU' OR 'x' = 'x", "floor": Decimal("0")}
        ).scalar_one()
    assert (
        count
        == oracle.raw_rows(
            "SELECT count(*) FROM sales.orders WHERE region = ? AND amount > ?", ["EU", 100]
        )[0][0]
    )
    assert count > 0 and injected == 0
    record = _record_of(gateway, marker)
    assert record["parameters"] == 2
    assert "?" in record["sql"] and "EU" not in record["sql"] and "100" not in record["sql"]


def test_select_over_a_reflected_table_compiles_qualified_with_bound_values(engines, oracle):
    alice = engines["alice"]
    orders = sa.Table("orders", sa.MetaData(), schema="sales", autoload_with=alice)
    query = (
        sa.select(orders.c.region, sa.func.count().label("n"), sa.func.sum(orders.c.amount))
        .where(orders.c.order_date >= datetime.date(2024, 1, 1))
        .group_by(orders.c.region)
        .order_by(orders.c.region)
    )
    compiled = str(query.compile(alice))
    assert "FROM sales.orders" in compiled and "2024" not in compiled and "?" in compiled
    with alice.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query)]
    assert rows == oracle.rows(
        "alice",
        "SELECT region, count(*), sum(amount) FROM sales.orders "
        "WHERE order_date >= DATE '2024-01-01' GROUP BY region ORDER BY region",
    )
    assert [r[0] for r in rows] == ["EU"]


def test_pandas_read_sql_table_with_a_schema(engines, oracle):
    frame = pd.read_sql_table("orders", engines["alice"], schema="sales")
    assert list(frame.columns) == oracle.schema("alice", "sales.orders").names
    assert len(frame) == oracle.rows("alice", "SELECT count(*) FROM sales.orders")[0][0]
    assert set(frame["region"]) == {"EU"}


def test_a_masked_column_arrives_masked(engines, oracle):
    sql = "SELECT customer_id, email FROM crm.customers ORDER BY customer_id LIMIT 50"
    with engines["alice"].connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql))]
    assert rows == oracle.rows("alice", sql)
    raw = {email for _, email in oracle.raw_rows(sql)}
    assert not raw & {email for _, email in rows}


# --------------------------------------------------------------------------- default schema


@pytest.fixture
def schema_engine(gateway: RunningGateway) -> Iterator:
    """make(user, schema): an engine on ``meshgate://user:user@.../schema``, disposed after."""
    made: list[sa.engine.Engine] = []

    def make(user: str, schema: str) -> sa.engine.Engine:
        engine = sa.create_engine(
            f"meshgate://{user}:{user}@127.0.0.1:{_port(gateway.uri)}/{schema}"
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def test_unqualified_names_resolve_in_the_urls_schema(schema_engine, oracle):
    alice = schema_engine("alice", "sales")
    with alice.connect() as conn:
        regions = [tuple(r) for r in conn.execute(sa.text("SELECT DISTINCT region FROM orders"))]
        bare = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()
    assert regions == [("EU",)]
    assert bare == oracle.rows("alice", "SELECT count(*) FROM sales.orders")[0][0]
    inspector = sa.inspect(alice)
    assert inspector.default_schema_name == "sales"
    assert inspector.get_table_names() == ["orders"]
    orders = sa.Table("orders", sa.MetaData(), autoload_with=alice)
    assert [c.name for c in orders.columns] == oracle.schema("alice", "sales.orders").names
    query = sa.select(sa.func.count()).select_from(orders).where(orders.c.region == "EU")
    assert "FROM orders" in str(query.compile(alice))
    with alice.connect() as conn:
        assert conn.execute(query).scalar_one() == bare
    frame = pd.read_sql_table("orders", alice)
    assert len(frame) == bare and set(frame["region"]) == {"EU"}


def test_a_schema_the_user_may_read_nothing_of_is_refused_at_connect(schema_engine):
    """carol may read nothing in sales: /sales is refused by name, as a domain that does
    not exist is (the same sentence: no way to learn what exists)."""
    refusals = {}
    for schema in ("sales", "nowhere"):
        with pytest.raises(sa.exc.DBAPIError) as refused, schema_engine("carol", schema).connect():
            pass
        refusals[schema] = str(refused.value.orig)
    assert "unknown schema sales (or you may not read any of its products)" in refusals["sales"]
    assert refusals["nowhere"] == refusals["sales"].replace("sales", "nowhere")


def test_in_a_readable_schema_a_product_the_user_may_not_read_is_refused(schema_engine):
    """carol's /crm resolves bare names in crm only: ``orders`` is crm.orders, not
    sales.orders, and is refused as such; crm's products are hers."""
    carol = schema_engine("carol", "crm")
    with carol.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one() > 0
        with pytest.raises(sa.exc.DBAPIError) as refused:
            conn.execute(sa.text("SELECT * FROM orders"))
    assert "unknown product crm.orders (or you may not read it)" in str(refused.value)
    assert sa.inspect(carol).get_table_names() == ["customers"]


# --------------------------------------------------------------------------- URLs


def test_a_bearer_token_url_logs_in_as_the_token_holder(gateway, oracle):
    client = flight.FlightClient(gateway.uri)
    try:
        _, header = client.authenticate_basic_token("carol", "carol")
    finally:
        client.close()
    token = header.decode().removeprefix("Bearer ")
    engine = sa.create_engine(f"meshgate://127.0.0.1:{_port(gateway.uri)}?token={token}")
    try:
        assert sa.inspect(engine).get_schema_names() == sorted(_visible(oracle, "carol"))
    finally:
        engine.dispose()


def test_a_wrong_password_is_refused(gateway):
    engine = sa.create_engine(f"meshgate://alice:wrong@127.0.0.1:{_port(gateway.uri)}")
    try:
        with pytest.raises(sa.exc.DBAPIError) as refused, engine.connect():
            pass
    finally:
        engine.dispose()
    assert "invalid username or password" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "uri", "db_kwargs"),
    [
        ("meshgate://u:p@h", "grpc://h:8815", {"username": "u", "password": "p"}),
        ("meshgate://u:p@h:9?tls=true", "grpc+tls://h:9", {"username": "u", "password": "p"}),
        ("meshgate+tls://u:p%40x@h:9", "grpc+tls://h:9", {"username": "u", "password": "p@x"}),
        (
            "meshgate://h:9?token=abc",
            "grpc://h:9",
            {"adbc.flight.sql.authorization_header": "Bearer abc"},
        ),
        (
            "meshgate://u:p@h:9?tls_skip_verify=true",
            "grpc+tls://h:9",
            {
                "username": "u",
                "password": "p",
                "adbc.flight.sql.client_option.tls_skip_verify": "true",
            },
        ),
    ],
)
def test_url_forms(url, uri, db_kwargs):
    args, kwargs = connect_args(sa.engine.make_url(url))
    assert args == [uri]
    assert kwargs == {"db_kwargs": db_kwargs, "autocommit": True}


def test_a_url_path_is_the_connections_default_schema():
    args, kwargs = connect_args(sa.engine.make_url("meshgate://u:p@h:9/Sales"))
    assert args == ["grpc://h:9"]
    assert kwargs["conn_kwargs"] == {"adbc.connection.db_schema": "sales"}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("meshgate://u:p@h:9/sales/orders", "path is one domain"),
        ("meshgate://u:p@h:9?colour=red", "unknown option colour"),
        ("meshgate://u:p@h:9?token=abc", "not both"),
        ("meshgate://h:9", "needs credentials"),
        ("meshgate://u:p@h:9?tls=maybe", "true or false"),
        ("meshgate://u:p@h:9?tls_root_certs=/nonexistent/ca.pem", "cannot read tls_root_certs"),
    ],
)
def test_url_mistakes_are_named(url, says):
    with pytest.raises(sa.exc.ArgumentError, match=says):
        connect_args(sa.engine.make_url(url))


def test_compiled_sql_is_duckdb_flavoured():
    """PostgreSQL's compiler (DuckDB follows PostgreSQL's SQL), qmark placeholders."""
    dialect = MeshgateDialect()
    table = sa.table("orders", sa.column("region"), sa.column("amount"), schema="sales")
    query = (
        sa.select(table.c.region)
        .where(table.c.region.ilike("e%"))
        .where(table.c.amount.cast(postgresql.DOUBLE_PRECISION) > 1)
        .limit(5)
    )
    expected = (
        "SELECT sales.orders.region FROM sales.orders WHERE sales.orders.region ILIKE ? "
        "AND CAST(sales.orders.amount AS DOUBLE PRECISION) > ? LIMIT ?"
    )
    assert " ".join(str(query.compile(dialect=dialect)).split()) == expected


@pytest.mark.slow
def test_tls_urls(demo_mesh: Path, tmp_path: Path, oracle):
    with tls_private(demo_mesh, tmp_path) as private:
        assert private.root_certs is not None
        ca = tmp_path / "ca.pem"
        ca.write_bytes(private.root_certs)
        for url in (
            f"meshgate+tls://alice:alice@localhost:{private.port}?tls_root_certs={ca}",
            f"meshgate://alice:alice@127.0.0.1:{private.port}?tls=true&tls_root_certs={ca}",
        ):
            engine = sa.create_engine(url)
            try:
                assert sa.inspect(engine).get_schema_names() == sorted(_visible(oracle, "alice"))
            finally:
                engine.dispose()
        untrusted = sa.create_engine(f"meshgate+tls://alice:alice@localhost:{private.port}")
        try:
            with pytest.raises(sa.exc.DBAPIError), untrusted.connect():
                pass
        finally:
            untrusted.dispose()
