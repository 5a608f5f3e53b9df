"""Connector partitions (split endpoints): disjoint, covering, stable, pushed down."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from sqlglot import exp

from connectors.duckdb_file import ROW_GROUP_ROWS, range_bounds
from gateway.catalog.catalog import load_catalog
from gateway.config import EngineSettings
from gateway.planning.naming import PARTITION_SCHEMA, partition_table, product_table

SPLIT = 4


@pytest.mark.parametrize("rows", [0, 1, 5, 1000, 4 * ROW_GROUP_ROWS - 7, 10 * ROW_GROUP_ROWS + 3])
@pytest.mark.parametrize("count", [2, 3, 4, 16])
def test_range_bounds_ascend_and_align_to_row_groups(rows: int, count: int):
    bounds = range_bounds(rows, count)
    assert len(bounds) == count - 1
    assert list(bounds) == sorted(bounds)
    assert all(0 <= b <= rows + ROW_GROUP_ROWS for b in bounds)
    if rows // count >= ROW_GROUP_ROWS:
        assert all(b % ROW_GROUP_ROWS == 0 for b in bounds)
        sizes = [b - a for a, b in zip((0, *bounds), (*bounds, rows), strict=True)]
        assert all(
            abs(size - rows / count) <= ROW_GROUP_ROWS for size in sizes
        )  # bounds move <= 1/2 group


def _count(cursor, table: exp.Table) -> int:
    return cursor.sql(exp.select("count(*)").from_(table).sql("duckdb")).fetchall()[0][0]


def _rows(cursor, table: exp.Table) -> list[tuple]:
    return sorted(cursor.sql(exp.select("*").from_(table).sql("duckdb")).fetchall())


def test_demo_products_split_exactly(demo_mesh: Path):
    catalog = load_catalog(demo_mesh, EngineSettings(), partitions=SPLIT)
    engine = catalog.engine
    assert set(engine.partitions) == {
        "sales.orders",
        "logistics.shipments",
    }  # crm.customers: one file
    with engine.cursor() as cursor:
        for key in engine.partitions:
            domain, name = key.split(".")
            parts = [_rows(cursor, partition_table(domain, name, i, SPLIT)) for i in range(SPLIT)]
            assert sorted(row for part in parts for row in part) == _rows(
                cursor, product_table(domain, name)
            )
        orders = [
            _count(cursor, partition_table("sales", "orders", i, SPLIT)) for i in range(SPLIT)
        ]
        assert orders == [50_000] * SPLIT
        hidden = cursor.sql(
            f"SELECT count(*) FROM duckdb_views() WHERE schema_name = '{PARTITION_SCHEMA}'"
        )
        assert hidden.fetchall()[0][0] == 2 * SPLIT
    engine.close()


def test_no_partitions_without_split(demo_mesh: Path):
    catalog = load_catalog(demo_mesh, EngineSettings())
    assert catalog.engine.partitions == {}
    catalog.engine.close()


def _write_files(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for number, name in enumerate(names):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY (SELECT {number} * 1000 + range AS id FROM range(1000)) TO '{target}' (FORMAT parquet)"
        )
    con.close()


def test_file_membership_is_stable_when_files_are_published(mesh_copy: Path):
    """A file's partition depends on its own path only: publishing a file later moves no
    other file, and the new one lands in exactly one partition."""
    shipments = mesh_copy / "logistics" / "data" / "shipments"
    catalog = load_catalog(mesh_copy, EngineSettings(), partitions=SPLIT)
    engine = catalog.engine

    def members() -> list[set[str]]:
        with engine.cursor() as cursor:
            return [
                {
                    r[0]
                    for r in cursor.sql(
                        exp.select("region")
                        .distinct()
                        .from_(partition_table("logistics", "shipments", i, SPLIT))
                        .sql("duckdb")
                    ).fetchall()
                }
                for i in range(SPLIT)
            ]

    before = members()
    con = duckdb.connect()
    (shipments / "region=LATAM").mkdir()
    con.execute(
        f"COPY (SELECT * REPLACE ('LATAM' AS region) FROM read_parquet('{shipments}/region=EU/*.parquet')) "
        f"TO '{shipments}/region=LATAM/data_0.parquet' (FORMAT parquet)"
    )
    con.close()
    after = members()
    assert [m - {"LATAM"} for m in after] == before
    assert sum("LATAM" in m for m in after) == 1
    engine.close()


def _explain(cursor, table: exp.Table) -> str:
    plan = cursor.sql(
        "EXPLAIN ANALYZE " + exp.select("count(*)").from_(table).sql("duckdb")
    ).fetchall()
    return plan[0][1]


def test_duckdb_prunes_row_groups_and_files(tmp_path: Path, mesh_copy: Path):
    """The partition filters are pushed into the scans: a rowid range reads only its row
    groups, a file group only its files (measured with EXPLAIN ANALYZE)."""
    con = duckdb.connect(str(mesh_copy / "sales" / "data" / "orders.duckdb"))
    con.execute("CREATE OR REPLACE TABLE orders AS SELECT * FROM orders, range(3) t(copy) ")
    con.execute("ALTER TABLE orders DROP COLUMN copy")
    con.close()
    catalog = load_catalog(mesh_copy, EngineSettings(), partitions=SPLIT)
    with catalog.engine.cursor() as cursor:
        plan = _explain(cursor, partition_table("sales", "orders", 1, SPLIT))
        scanned = re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan)
        if scanned:  # the plan reports row groups: a quarter of them, give or take one
            assert int(scanned.group(1)) <= int(scanned.group(2)) // SPLIT + 1, plan
        files = _explain(cursor, partition_table("logistics", "shipments", 0, SPLIT))
        reading = re.search(r"Scanning Files: (\d+)/(\d+)", files)
        if reading:
            assert int(reading.group(1)) < int(reading.group(2)), files
        assert scanned or reading, "EXPLAIN ANALYZE reported neither row groups nor files"
    catalog.engine.close()
