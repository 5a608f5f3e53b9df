"""Governed queries on Spark return exactly what the gateway's DuckDB returns, for every
demo user and rule, through ADBC and pyarrow.flight against real processes: the session
gateway (DuckDB) on one side, a gateway with ``[engines.spark] route = "always"`` on the
other, both on the demo mesh."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connections, message
from support.logs import log_records
from support.oracle import PRIMARY_KEY, PRODUCTS, USERS
from support.tables import assert_tables_equal

pytestmark = [pytest.mark.spark, pytest.mark.slow]

#: beyond one product at a time: joins on filtered and masked keys, aggregates over
#: masked values, predicates on masked columns, set operations, windows, CTEs
QUERIES = [
    (
        "SELECT o.order_id, c.name, c.email, o.amount FROM sales.orders o "
        "JOIN crm.customers c ON o.customer_id = c.customer_id ORDER BY o.order_id LIMIT 200"
    ),
    (
        "SELECT region, count(*) AS n, sum(amount) AS total, min(amount) AS low, max(amount) AS high "
        "FROM sales.orders GROUP BY region ORDER BY region"
    ),
    (
        "SELECT ssn, count(*) AS n FROM crm.customers GROUP BY ssn HAVING count(*) > 0 "
        "ORDER BY ssn LIMIT 50"
    ),
    "SELECT email FROM crm.customers WHERE email LIKE 'a%' ORDER BY email LIMIT 20",
    (
        "SELECT customer_id FROM crm.customers WHERE region IN ('EU', 'US') AND customer_id < 500 "
        "UNION SELECT customer_id FROM sales.orders WHERE amount > 900 ORDER BY customer_id"
    ),
    (
        "WITH big AS (SELECT customer_id, amount FROM sales.orders WHERE amount BETWEEN 100 AND 200) "
        "SELECT customer_id, count(*) AS n FROM big GROUP BY customer_id ORDER BY n DESC, "
        "customer_id LIMIT 10"
    ),
    (
        "SELECT order_id, row_number() OVER (PARTITION BY region ORDER BY order_id) AS k "
        "FROM sales.orders ORDER BY order_id LIMIT 30"
    ),
    (
        "SELECT s.carrier, count(*) AS n FROM logistics.shipments s "
        "WHERE s.shipped_at >= TIMESTAMP '2024-01-01' GROUP BY s.carrier ORDER BY s.carrier"
    ),
    (
        "SELECT count(*) AS n FROM sales.orders WHERE EXISTS (SELECT 1 FROM crm.customers c "
        "WHERE c.customer_id = sales.orders.customer_id AND c.region = 'EU')"
    ),
    (
        "SELECT length(email) AS l, substring(name, 1, 3) AS s FROM crm.customers "
        "WHERE customer_id < 5 ORDER BY customer_id"
    ),
]


def _outcome(connect, uri: str, user: str, sql: str, params: tuple = ()) -> pa.Table | str:
    cursor = connect(uri, user).cursor()
    try:
        cursor.execute(sql, params or None)
        return cursor.fetch_arrow_table()
    except adbc_driver_manager.Error as exc:
        return message(exc)
    finally:
        cursor.close()


def _same(spark_side: pa.Table | str, duckdb_side: pa.Table | str, what: str) -> None:
    if isinstance(duckdb_side, str):
        assert spark_side == duckdb_side, what
        return
    assert not isinstance(spark_side, str), f"{what}: Spark refused: {spark_side}"
    assert_tables_equal(spark_side, duckdb_side, what)


@pytest.fixture(scope="module")
def connect():
    with adbc_connections() as get:
        yield get


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("product", PRODUCTS)
def test_every_user_sees_each_product_alike_on_spark(
    user, product, connect, gateway, spark_gateway
):
    sql = f"SELECT * FROM {product} ORDER BY {PRIMARY_KEY[product]}"
    duckdb_side = _outcome(connect, gateway.uri, user, sql)
    _same(_outcome(connect, spark_gateway.uri, user, sql), duckdb_side, f"{user}: {sql}")


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("sql", QUERIES, ids=range(len(QUERIES)))
def test_governed_queries_agree_on_spark(user, sql, connect, gateway, spark_gateway):
    duckdb_side = _outcome(connect, gateway.uri, user, sql)
    _same(_outcome(connect, spark_gateway.uri, user, sql), duckdb_side, f"{user}: {sql}")


def test_the_spark_route_really_ran_on_spark(connect, spark_gateway):
    """Every query above went to Spark (the log names its Spark operation)."""
    table = _outcome(connect, spark_gateway.uri, "alice", "SELECT count(*) AS n FROM sales.orders")
    assert isinstance(table, pa.Table)
    records = [r for r in log_records(spark_gateway.log(), "query") if r.get("engine") == "spark"]
    assert records and all(r.get("spark_operation") for r in records)
    assert any(r.get("user") == "alice" and r.get("rows") == 1 for r in records)


@pytest.mark.parametrize("user", ["alice", "erin"])
def test_prepared_statements_bind_parameters_on_spark(user, connect, gateway, spark_gateway):
    sql = "SELECT order_id, amount FROM sales.orders WHERE region = ? AND order_id < ? ORDER BY order_id"
    for params in (("EU", 400), ("US", 900)):
        duckdb_side = _outcome(connect, gateway.uri, user, sql, params)
        _same(_outcome(connect, spark_gateway.uri, user, sql, params), duckdb_side, f"{params}")


def test_flight_clients_get_the_same_rows_on_spark(gateway, spark_gateway):
    sql = "SELECT customer_id, email, ssn FROM crm.customers ORDER BY customer_id LIMIT 100"
    tables = []
    for uri in (gateway.uri, spark_gateway.uri):
        client = flight.FlightClient(uri)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("alice", "alice")]
        )
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        tables.append(
            pa.concat_tables(client.do_get(e.ticket, options).read_all() for e in info.endpoints)
        )
        client.close()
    assert_tables_equal(tables[1], tables[0], sql)
    assert tables[0].num_rows == 100
