"""The DuckDB engine as the second wall: even SQL that bypasses the pipeline cannot read
files, install or load extensions, attach databases or change the configuration, and a
product view exposes exactly its contract's declared columns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml

from gateway.catalog.catalog import Catalog, load_catalog
from gateway.config import EngineSettings

ROW_COUNTS = {"sales.orders": 200_000, "crm.customers": 20_000, "logistics.shipments": 150_000}


@pytest.fixture(scope="module")
def catalog(demo_mesh: Path) -> Iterator[Catalog]:
    catalog = load_catalog(demo_mesh, EngineSettings())
    assert catalog.problems == ()
    yield catalog
    catalog.engine.close()


def query(catalog: Catalog, sql: str) -> list[tuple]:
    with catalog.engine.cursor() as cursor:
        return cursor.execute(sql).fetchall()


def setting(catalog: Catalog, name: str) -> object:
    return query(catalog, f"SELECT value FROM duckdb_settings() WHERE name = '{name}'")[0][0]


def assert_products_readable(catalog: Catalog) -> None:
    for key, rows in ROW_COUNTS.items():
        domain, name = key.split(".")
        assert catalog.engine.row_count(domain, name) == rows
        assert query(catalog, f"SELECT count(*) FROM memory.{domain}.{name}") == [(rows,)]


# --------------------------------------------------------------------------- the second wall

FORBIDDEN = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/etc/*')",
    "ATTACH '/tmp/meshgate-test-attach.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 8",
    "SET GLOBAL threads = 8",
    "RESET threads",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET allowed_directories = ['/']",
    "SET allowed_paths = ['/etc/passwd']",
    "SET memory_limit = '100GB'",
    "SET autoinstall_known_extensions = true",
    "SET autoload_known_extensions = true",
    "COPY (SELECT 1) TO '/tmp/meshgate-test-copy.csv'",
]


@pytest.mark.parametrize("sql", FORBIDDEN)
def test_cursor_refuses(sql: str, catalog: Catalog) -> None:
    with catalog.engine.cursor() as cursor, pytest.raises(duckdb.Error):
        cursor.execute(sql).fetchall()
    assert_products_readable(catalog)


def test_nothing_was_written_by_the_refused_statements() -> None:
    assert not Path("/tmp/meshgate-test-attach.db").exists()
    assert not Path("/tmp/meshgate-test-copy.csv").exists()


def test_configuration_is_unchanged_after_the_attempts(catalog: Catalog) -> None:
    settings = EngineSettings()
    assert str(setting(catalog, "threads")) == str(settings.threads)
    assert str(setting(catalog, "enable_external_access")).lower() == "false"
    assert str(setting(catalog, "lock_configuration")).lower() == "true"
    assert str(setting(catalog, "autoload_known_extensions")).lower() == "false"
    assert str(setting(catalog, "autoinstall_known_extensions")).lower() == "false"


def test_a_cursor_never_reads_a_python_object_by_name(catalog: Catalog) -> None:
    """DuckDB's Python replacement scan reads an Arrow table or DataFrame a statement names
    from the calling code's variables. It is off in every cursor a query runs on, not only
    in the database's own session (a plain SET reaches that one alone)."""
    leaked = pa.table({"secret": [42]})
    assert leaked.num_rows == 1  # what the scan would find by the name "leaked"
    assert str(setting(catalog, "python_enable_replacements")).lower() == "false"
    with catalog.engine.cursor() as cursor, pytest.raises(duckdb.Error):
        cursor.sql("SELECT * FROM leaked").fetchall()


@pytest.mark.parametrize(
    "relative",
    ["mesh.toml", "sales/orders.odcs.yaml", "crm/customers.odcs.yaml", "README.md"],
)
def test_mesh_files_other_than_product_data_are_unreadable(
    relative: str, demo_mesh: Path, catalog: Catalog
) -> None:
    """mesh.toml holds password hashes; contracts are not data."""
    with pytest.raises(duckdb.Error):
        query(catalog, f"SELECT * FROM read_text('{demo_mesh / relative}')")


def test_products_are_readable(catalog: Catalog) -> None:
    assert_products_readable(catalog)
    assert (
        query(catalog, "SELECT count(*) FROM memory.logistics.shipments WHERE region = 'EU'")[0][0]
        > 0
    )


def test_each_cursor_is_independent_and_returned(catalog: Catalog) -> None:
    with catalog.engine.cursor() as first, catalog.engine.cursor() as second:
        assert first is not second
        assert first.execute("SELECT 1").fetchall() == second.execute("SELECT 1").fetchall()


# --------------------------------------------------------------------------- declared columns only


def _rewrite_customers_with_extra_column(mesh: Path) -> None:
    data = mesh / "crm/data/customers.parquet"
    widened = data.with_name("widened.parquet")
    duckdb.sql(
        f"COPY (SELECT *, 'secret-' || customer_id AS internal_note FROM read_parquet('{data}')) "
        f"TO '{widened}' (FORMAT parquet)"
    )
    widened.replace(data)


def test_view_exposes_only_declared_columns_of_a_parquet_source(mesh_copy: Path) -> None:
    _rewrite_customers_with_extra_column(mesh_copy)
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        assert catalog.problems == ()
        product = catalog.product("crm", "customers")
        declared = [c.name for c in product.columns]
        assert product.schema.names == declared
        with catalog.engine.cursor() as cursor:
            relation = cursor.sql("SELECT * FROM memory.crm.customers LIMIT 1")
            assert relation.columns == declared
            with pytest.raises(duckdb.BinderException):
                cursor.execute("SELECT internal_note FROM memory.crm.customers").fetchall()
    finally:
        catalog.engine.close()


def test_view_exposes_only_declared_columns_of_a_duckdb_source(mesh_copy: Path) -> None:
    database = mesh_copy / "sales/data/orders.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("ALTER TABLE orders ADD COLUMN margin DECIMAL(12,2) DEFAULT 1.5")
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        assert catalog.problems == ()
        product = catalog.product("sales", "orders")
        declared = [c.name for c in product.columns]
        assert "margin" not in declared
        assert product.schema.names == declared
        with catalog.engine.cursor() as cursor:
            assert cursor.sql("SELECT * FROM memory.sales.orders LIMIT 1").columns == declared
            with pytest.raises(duckdb.BinderException):
                cursor.execute("SELECT margin FROM memory.sales.orders").fetchall()
    finally:
        catalog.engine.close()


def test_view_follows_the_contract_column_order(mesh_copy: Path) -> None:
    path = mesh_copy / "crm/customers.odcs.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    columns = document["schema"][0]["properties"]
    document["schema"][0]["properties"] = [columns[4], columns[0], columns[1]]  # region, id, name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        assert catalog.problems == ()
        assert catalog.product("crm", "customers").schema.names == ["region", "customer_id", "name"]
        with catalog.engine.cursor() as cursor:
            assert cursor.sql("SELECT * FROM memory.crm.customers").columns == [
                "region",
                "customer_id",
                "name",
            ]
            with pytest.raises(duckdb.BinderException):
                cursor.execute("SELECT ssn FROM memory.crm.customers").fetchall()
    finally:
        catalog.engine.close()


def test_engine_data_files_are_attached_read_only(mesh_copy: Path) -> None:
    catalog = load_catalog(mesh_copy, EngineSettings())
    try:
        databases = query(
            catalog,
            "SELECT database_name, readonly FROM duckdb_databases() "
            "WHERE NOT internal AND database_name <> 'memory'",
        )
        assert databases, "the sales DuckDB file should be attached"
        assert all(readonly for _, readonly in databases)
    finally:
        catalog.engine.close()
