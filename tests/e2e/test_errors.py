"""Refusals and failures reach real clients as clean, useful messages, and never take the
server down, leak data values, Python tracebacks, internal SQL or server paths."""

from __future__ import annotations

from pathlib import Path

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, error_text, flight_client
from support.oracle import CUSTOMERS_PARQUET

REFUSED = (flight.FlightError, pa.ArrowException)


@pytest.fixture(scope="module")
def conn(gateway):
    with adbc_connect(gateway.uri, "bob") as connection:
        yield connection


@pytest.fixture
def cur(conn):
    with conn.cursor() as cursor:
        yield cursor


@pytest.fixture(scope="module")
def flight_bob(gateway):
    client, options = flight_client(gateway.uri, "bob")
    yield client, options
    client.close()


def adbc_failure(cur, sql: str) -> str:
    """Run ``sql`` through ADBC, require an error, return everything the client sees."""
    with pytest.raises(adbc_driver_manager.Error) as info:
        cur.execute(sql)
        cur.fetchall()
    return error_text(info.value)


def flight_failure(flight_bob, sql: str) -> str:
    """Run ``sql`` through plain pyarrow.flight (GetFlightInfo + DoGet), require an error."""
    client, options = flight_bob
    with pytest.raises(REFUSED) as info:
        flight_info = client.get_flight_info(
            flight.FlightDescriptor.for_command(sql.encode()), options
        )
        client.do_get(flight_info.endpoints[0].ticket, options).read_all()
    return str(info.value)


def assert_clean(message: str, mesh: Path) -> None:
    """No traceback, no internal SQL or catalog names, no server paths."""
    assert "Traceback" not in message
    assert 'File "' not in message
    assert '"memory"' not in message and "memory." not in message
    assert "src_" not in message
    assert "LINE 1" not in message
    assert str(mesh) not in message
    assert "/work/" not in message and "site-packages" not in message


def assert_server_answers(gateway) -> None:
    with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM sales.orders")
        assert cur.fetchall() == [(200_000,)]


# --------------------------------------------------------------------------- names


def test_syntax_error(cur, flight_bob, demo_mesh):
    for message in (adbc_failure(cur, "SELEC 1"), flight_failure(flight_bob, "SELEC 1")):
        assert "syntax error" in message.lower()
        assert "line 1" in message
        assert_clean(message, demo_mesh)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM sales.orders WHERE",
            "incomplete WHERE clause: expected an expression after 'WHERE', at the end (line 1, column 28)",
        ),
        (
            "SELECT * FROM sales.orders WHERE ORDER BY order_id",
            "incomplete WHERE clause: expected an expression, found 'ORDER BY' (line 1, column 34",
        ),
        (
            "SELEC * FRM sales.orders",
            "unknown statement 'SELEC' (line 1, column 1); expected a query",
        ),
        (
            "SELECT * FRM sales.orders",
            "unexpected 'sales' (line 1, column 14, after 'SELECT * FRM')",
        ),
        (
            "SELECT order_id FROM sales.orders WHERE (order_id = 1",
            "expected ) after '1', at the end (line 1, column",
        ),
        ("SELECT 1 +", "incomplete expression: expected an expression after '+', at the end"),
    ],
    ids=[
        "where-at-end",
        "where-then-order",
        "misspelt-select",
        "misspelt-from",
        "unclosed",
        "operator",
    ],
)
def test_syntax_error_names_the_token_and_what_was_expected(cur, demo_mesh, sql, expected):
    """What was expected, the offending token and its position: never sqlglot's internals."""
    message = adbc_failure(cur, sql)
    assert f"SQL syntax error: {expected}" in message, message
    assert "<class" not in message and "<Token" not in message and "sqlglot" not in message
    assert "Invalid expression / Unexpected token" not in message
    assert_clean(message, demo_mesh)


def test_unknown_product(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT * FROM sales.nope")
    assert "unknown product sales.nope" in message
    assert_clean(message, demo_mesh)


def test_unknown_domain(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT * FROM hr.people")
    assert "unknown product hr.people" in message
    assert_clean(message, demo_mesh)


def test_unqualified_product_gets_a_hint(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT * FROM orders")
    assert "<domain>.<product>" in message
    assert "sales.orders" in message
    assert_clean(message, demo_mesh)


def test_internal_catalog_is_not_addressable(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT * FROM memory.sales.orders")
    assert "unknown catalog" in message
    assert "'mesh'" in message


def test_unknown_column_names_the_column(cur, flight_bob, demo_mesh):
    sql = "SELECT no_such_column FROM sales.orders"
    for message in (adbc_failure(cur, sql), flight_failure(flight_bob, sql)):
        assert "no_such_column" in message
        assert "sales.orders" in message
        assert_clean(message, demo_mesh)


def test_ambiguous_column_in_a_join(cur, demo_mesh):
    message = adbc_failure(
        cur, "SELECT region FROM sales.orders JOIN crm.customers USING (customer_id)"
    )
    assert "region" in message and "mbiguous" in message
    assert_clean(message, demo_mesh)


def test_unknown_function(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT no_such_function(order_id) FROM sales.orders")
    assert "no_such_function" in message
    assert_clean(message, demo_mesh)


def test_several_statements_are_refused(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT 1; SELECT 2")
    assert "2 statements" in message
    assert_clean(message, demo_mesh)


def test_oversized_statement_is_refused(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT 1 AS x WHERE '" + "a" * 1_100_000 + "' <> ''")
    assert "over the limit" in message
    assert_clean(message, demo_mesh)


def test_deeply_nested_expression_is_refused_cleanly(cur, demo_mesh):
    message = adbc_failure(cur, "SELECT " + "(" * 3000 + "1" + ")" * 3000 + " AS x")
    assert "nest" in message and "deep" in message
    assert_clean(message, demo_mesh)


def test_deeply_nested_subqueries_are_refused_cleanly(cur, gateway, demo_mesh):
    """Nesting is refused with a clear message, never answered as an internal error."""
    depth = 1000
    sql = "SELECT * FROM " + "(SELECT * FROM " * depth + "sales.orders" + ") t" * depth + " LIMIT 1"
    with pytest.raises(adbc_driver_manager.Error) as info:
        cur.execute(sql)
        cur.fetchall()
    message = error_text(info.value)
    assert info.value.status_code != adbc_driver_manager.AdbcStatusCode.INTERNAL, message
    assert "internal error" not in message
    assert "nest" in message and "deep" in message
    assert_clean(message, demo_mesh)
    assert gateway.process.poll() is None


# --------------------------------------------------------------------------- read-only


WRITES = {
    "INSERT": "INSERT INTO sales.orders VALUES (1, 2, 'EU', 1.00, DATE '2024-01-01')",
    "UPDATE": "UPDATE sales.orders SET amount = 0",
    "DELETE": "DELETE FROM sales.orders",
    "CREATE": "CREATE TABLE sales.evil (x INTEGER)",
    "DROP": "DROP TABLE sales.orders",
    "COPY": "COPY sales.orders TO '{tmp}/stolen.csv'",
    "ATTACH": "ATTACH '{tmp}/evil.duckdb' AS evil",
    "INSTALL": "INSTALL httpfs",
    "LOAD": "LOAD httpfs",
    "SET": "SET threads = 64",
    "PRAGMA": "PRAGMA version",
}
#: statement -> a word the refusal should contain to say what was refused
MORE_WRITES = {
    "CREATE VIEW v AS SELECT * FROM sales.orders": "CREATE",
    "CREATE MACRO m(x) AS x": "CREATE",
    "DETACH evil": "DETACH",
    "CALL pragma_version()": "CALL",
    "USE sales": "USE",
    "BEGIN TRANSACTION": "TRANSACTION",
    "VACUUM": "VACUUM",
    "CHECKPOINT": "CHECKPOINT",
    "RESET threads": "RESET",
}


@pytest.mark.parametrize("kind", sorted(WRITES))
def test_non_select_statements_are_refused_as_read_only(cur, demo_mesh, tmp_path, kind):
    sql = WRITES[kind].format(tmp=tmp_path)
    message = adbc_failure(cur, sql)
    assert "read-only" in message
    assert kind in message.upper(), f"the message should say what was refused: {message}"
    assert_clean(message, demo_mesh)
    assert list(tmp_path.iterdir()) == [], "a refused statement left a file behind"


@pytest.mark.parametrize("sql", sorted(MORE_WRITES))
def test_other_commands_are_refused_as_read_only(cur, demo_mesh, sql):
    message = adbc_failure(cur, sql)
    assert "read-only" in message
    assert MORE_WRITES[sql] in message.upper(), (
        f"the message should say what was refused: {message}"
    )
    assert_clean(message, demo_mesh)


def test_data_is_unchanged_after_refused_writes(cur, direct):
    cur.execute("SELECT count(*), sum(amount), min(order_date) FROM sales.orders")
    got = cur.fetchall()
    assert (
        got
        == direct.execute(
            "SELECT count(*), sum(amount), min(order_date) FROM sales.orders"
        ).fetchall()
    )
    assert got[0][0] == 200_000


def test_adbc_ingest_is_refused(conn, demo_mesh):
    data = pa.table({"x": [1, 2, 3]})
    for mode in ("create", "append", "replace", "create_append"):
        with conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error) as info:
                cur.adbc_ingest("evil", data, mode=mode, db_schema_name="sales")
            message = error_text(info.value)
            assert "read-only" in message, mode
            assert_clean(message, demo_mesh)
    tables = [
        t["table_name"]
        for c in conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    ]
    assert sorted(tables) == ["customers", "orders", "shipments"]


def test_executemany_is_refused_as_read_only(cur):
    with pytest.raises(adbc_driver_manager.Error) as info:
        cur.executemany("INSERT INTO sales.orders (order_id) VALUES (?)", [(1,), (2,)])
    assert "read-only" in str(info.value)


# --------------------------------------------------------------------------- values


@pytest.fixture(scope="module")
def customer_secrets(direct, demo_mesh):
    """Real names, emails and SSNs from the Parquet file, read directly."""
    path = str(demo_mesh / CUSTOMERS_PARQUET).replace("'", "''")
    rows = direct.execute(
        f"SELECT name, email, ssn FROM read_parquet('{path}') ORDER BY customer_id LIMIT 200"
    ).fetchall()
    values = {v for row in rows for v in row}
    assert len(values) > 300
    return values


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT CAST(name AS INTEGER) FROM crm.customers",
        "SELECT CAST(name AS INTEGER) FROM crm.customers WHERE customer_id = 1",
        "SELECT name::DATE FROM crm.customers",
        "SELECT CAST(ssn AS BIGINT) FROM crm.customers",
        "SELECT CAST(email AS UUID) FROM crm.customers",
        "SELECT strptime(name, '%Y') FROM crm.customers",
        "SELECT json_extract(name, '$') FROM crm.customers",
        "SELECT printf('%d', ssn) FROM crm.customers",
        "SELECT * FROM crm.customers WHERE customer_id = name",
    ],
)
def test_failing_evaluation_does_not_echo_data_values(
    cur, flight_bob, customer_secrets, demo_mesh, sql
):
    for message in (adbc_failure(cur, sql), flight_failure(flight_bob, sql)):
        leaked = sorted(v for v in customer_secrets if v in message)
        assert leaked == [], f"data values in the error message: {leaked[:5]}"
        assert "value is not shown" in message
        assert_clean(message, demo_mesh)


def test_error_function_is_refused_and_does_not_echo_data(cur, customer_secrets):
    """error() would turn a predicate into an oracle on hidden rows: it is not allowed."""
    message = adbc_failure(cur, "SELECT error(name) FROM crm.customers")
    assert "error() is not allowed" in message
    assert not [v for v in customer_secrets if v in message]


def test_cast_failure_message_is_still_useful(cur):
    message = adbc_failure(cur, "SELECT CAST(name AS INTEGER) FROM crm.customers")
    assert "Conversion" in message
    assert "crm.customers" in message


# --------------------------------------------------------------------------- file access


def _customers_path(demo_mesh: Path) -> str:
    return str(demo_mesh / CUSTOMERS_PARQUET)


@pytest.mark.parametrize(
    "template",
    [
        "SELECT * FROM read_parquet('{parquet}')",
        "SELECT * FROM read_parquet('x.parquet')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('{parquet}')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM parquet_metadata('{parquet}')",
        "SELECT * FROM sales.orders, read_csv('/etc/passwd')",
        "SELECT (SELECT count(*) FROM read_csv('/etc/passwd')) AS n",
        "WITH t AS (SELECT * FROM read_parquet('{parquet}')) SELECT * FROM t",
        "SELECT * FROM sales.orders JOIN LATERAL (SELECT * FROM read_text('/etc/passwd')) ON true",
        "SELECT read_text('/etc/passwd')",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM query_table('sales.orders')",
    ],
)
def test_table_functions_and_file_reads_are_refused(cur, demo_mesh, template):
    message = adbc_failure(cur, template.format(parquet=_customers_path(demo_mesh)))
    assert "not allowed" in message
    assert "root:" not in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    "template",
    [
        "SELECT * FROM 'x.parquet'",
        "FROM 'x.parquet'",
        "SELECT * FROM '{parquet}'",
        "FROM '/etc/passwd'",
        'SELECT * FROM "{parquet}"',
        "SELECT * FROM sales.orders UNION ALL SELECT * FROM '{parquet}'",
    ],
)
def test_file_paths_in_from_are_not_read(cur, demo_mesh, template):
    message = adbc_failure(cur, template.format(parquet=_customers_path(demo_mesh)))
    assert "unknown product" in message or "not allowed" in message
    assert "root:" not in message
    assert "Traceback" not in message


# --------------------------------------------------------------------------- server


def test_no_traceback_in_any_error_through_plain_flight(flight_bob, demo_mesh):
    for sql in (
        "SELEC 1",
        "SELECT * FROM sales.nope",
        "SELECT nope FROM sales.orders",
        "DROP TABLE sales.orders",
        "SELECT CAST(name AS INTEGER) FROM crm.customers",
        "SELECT * FROM read_csv('/etc/passwd')",
    ):
        assert_clean(flight_failure(flight_bob, sql), demo_mesh)


def test_server_is_still_up_after_all_errors(gateway):
    assert gateway.process.poll() is None
    assert_server_answers(gateway)
