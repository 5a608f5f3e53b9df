"""Fixtures for the end-to-end tests: DuckDB opened directly on the demo mesh's files.

The ``direct`` connection is the oracle: it reads the very files the gateway serves,
without going through Meshgate, and exposes them under the same names
(``sales.orders``, ``crm.customers``, ``logistics.shipments``) so that one SQL text
can run on both sides and the Arrow results (rows and types) can be compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from support.oracle import open_direct


@pytest.fixture(scope="session")
def direct(demo_mesh: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB on the demo mesh's files, products addressable as <domain>.<product>."""
    con = open_direct(demo_mesh)
    yield con
    con.close()


@pytest.fixture(scope="session")
def direct_arrow(direct: duckdb.DuckDBPyConnection):
    """Run SQL on the direct DuckDB and return an Arrow table (thread-safe via cursors)."""

    def run(sql: str, params: list | tuple | None = None) -> pa.Table:
        cursor = direct.cursor()
        try:
            return cursor.sql(sql, params=list(params) if params else None).to_arrow_table()
        finally:
            cursor.close()

    return run
