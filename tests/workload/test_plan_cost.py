"""The cost read from DuckDB's real plans: rows multiply in cross products, and the bytes
read shrink with partition, filter and column pruning."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from gateway.engine.plan_cost import plan_cost


@pytest.fixture(scope="module")
def con(demo_mesh: Path) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    db.read_parquet(str(demo_mesh / "crm" / "data" / "customers.parquet")).create_view("customers")
    shipments = demo_mesh / "logistics" / "data" / "shipments" / "**" / "*.parquet"
    db.read_parquet(str(shipments), hive_partitioning=True).create_view("shipments")
    return db


def cost(con: duckdb.DuckDBPyConnection, sql: str):
    return plan_cost(con.sql(sql).explain(format="json"))


def test_a_cross_product_costs_the_product_of_its_inputs(con) -> None:
    one = cost(con, "SELECT * FROM customers").rows
    two = cost(con, "SELECT count(*) FROM customers a, customers b").rows
    eight = cost(con, "SELECT count(*) FROM " + ", ".join(f"customers c{i}" for i in range(8)))
    assert 20_000 <= one < 100_000
    assert two >= 20_000**2
    assert eight.rows >= 20_000**8
    joined = cost(con, "SELECT count(*) FROM customers a JOIN customers b USING (customer_id)")
    assert joined.rows < two / 1000


def test_bytes_read_follow_partition_and_column_pruning(con) -> None:
    everything = cost(con, "SELECT * FROM shipments").bytes_read
    one_region = cost(con, "SELECT * FROM shipments WHERE region = 'EU'").bytes_read
    one_column = cost(con, "SELECT shipment_id FROM shipments").bytes_read
    assert 0 < one_region < everything * 0.5  # one partition of three read
    assert 0 < one_column < everything * 0.5  # one column of five read
