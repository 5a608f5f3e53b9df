"""pandas and polars read through the ADBC connection, compared with DuckDB direct."""

from __future__ import annotations

import pandas as pd
import polars as pl
import polars.testing
import pytest
from support.clients import adbc_connect

QUERIES = {
    "orders_by_region": (
        "SELECT region, count(*) AS n, sum(amount) AS revenue, avg(amount) AS avg_amount, "
        "min(order_date) AS first_day FROM sales.orders GROUP BY region ORDER BY region"
    ),
    "customers_page": "SELECT * FROM crm.customers WHERE customer_id BETWEEN 1000 AND 1999 ORDER BY customer_id",
    "shipments_sample": (
        "SELECT shipment_id, order_id, carrier, shipped_at, region FROM logistics.shipments "
        "WHERE shipment_id % 50 = 0 ORDER BY shipment_id"
    ),
    "join": (
        "SELECT c.name, o.order_id, o.amount, o.order_date FROM sales.orders o "
        "JOIN crm.customers c USING (customer_id) WHERE o.customer_id <= 30 ORDER BY o.order_id"
    ),
    "empty": "SELECT * FROM sales.orders WHERE order_id < 0",
}


@pytest.fixture(scope="module")
def conn(gateway):
    with adbc_connect(gateway.uri, "bob") as connection:
        yield connection


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_pandas_read_sql(conn, direct_arrow, name):
    sql = QUERIES[name]
    frame = pd.read_sql(sql, conn)
    expected_arrow = direct_arrow(sql)
    expected = expected_arrow.to_pandas()
    assert list(frame.columns) == expected_arrow.column_names
    assert len(frame) == expected_arrow.num_rows
    pd.testing.assert_frame_equal(frame, expected, check_dtype=True)


def test_pandas_read_sql_values_are_the_real_ones(conn, direct):
    frame = pd.read_sql(QUERIES["orders_by_region"], conn)
    assert frame["region"].tolist() == ["APAC", "EU", "US"]
    assert frame["n"].sum() == 200_000
    total = direct.execute("SELECT sum(amount) FROM sales.orders").fetchone()[0]
    assert sum(frame["revenue"]) == total


def test_pandas_read_sql_with_arrow_dtypes(conn, direct_arrow):
    sql = QUERIES["shipments_sample"]
    frame = pd.read_sql(sql, conn, dtype_backend="pyarrow")
    expected = direct_arrow(sql).to_pandas(types_mapper=pd.ArrowDtype)
    assert str(frame["shipped_at"].dtype).startswith("timestamp[us]")
    pd.testing.assert_frame_equal(frame, expected)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_polars_read_database(conn, direct_arrow, name):
    sql = QUERIES[name]
    frame = pl.read_database(sql, conn)
    expected = pl.from_arrow(direct_arrow(sql))
    assert isinstance(frame, pl.DataFrame)
    polars.testing.assert_frame_equal(frame, expected)


def test_polars_read_database_types(conn):
    frame = pl.read_database("SELECT * FROM sales.orders LIMIT 10", conn)
    assert frame.schema == pl.Schema(
        {
            "order_id": pl.Int64,
            "customer_id": pl.Int64,
            "region": pl.String,
            "amount": pl.Decimal(12, 2),
            "order_date": pl.Date,
        }
    )


def test_polars_read_database_iter_batches_full_scan(conn, direct_arrow):
    sql = "SELECT * FROM sales.orders"
    frames = list(pl.read_database(sql, conn, iter_batches=True, batch_size=50_000))
    assert len(frames) > 1, "a 200k-row result should arrive as several frames"
    assert all(isinstance(f, pl.DataFrame) for f in frames)
    got = pl.concat(frames).sort("order_id")
    assert got.height == 200_000
    expected = pl.from_arrow(direct_arrow("SELECT * FROM sales.orders ORDER BY order_id"))
    polars.testing.assert_frame_equal(got, expected)


def test_polars_read_database_iter_batches_small_result(conn, direct_arrow):
    sql = QUERIES["join"]
    frames = list(pl.read_database(sql, conn, iter_batches=True, batch_size=10))
    got = pl.concat(frames)
    polars.testing.assert_frame_equal(got, pl.from_arrow(direct_arrow(sql)))


def test_polars_read_database_with_parameters(conn, direct_arrow):
    sql = "SELECT order_id, amount FROM sales.orders WHERE customer_id = ? ORDER BY order_id"
    frame = pl.read_database(sql, conn, execute_options={"parameters": (42,)})
    expected = pl.from_arrow(direct_arrow(sql, [42]))
    assert frame.height > 0
    polars.testing.assert_frame_equal(frame, expected)
