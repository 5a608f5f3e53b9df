"""Fixtures for the end-to-end tests: DuckDB opened directly on the demo mesh's files.

The ``direct`` connection is the oracle's raw data (``support.oracle``): it reads the
very files the gateway serves, without going through Meshgate, and exposes them under the
same names (``sales.orders``, ``crm.customers``, ``logistics.shipments``) so that one SQL
text can run on both sides and the Arrow results (rows and types) can be compared.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pyarrow as pa
import pytest
from support.oracle import Oracle


@pytest.fixture(scope="session")
def direct(oracle: Oracle) -> duckdb.DuckDBPyConnection:
    """DuckDB on the demo mesh's files, products addressable as <domain>.<product>."""
    return oracle.direct


@pytest.fixture(scope="session")
def direct_arrow(oracle: Oracle) -> Callable[..., pa.Table]:
    """``run(sql, params=None)``: SQL on the direct DuckDB as an Arrow table (a cursor of
    its own per call: thread-safe)."""
    return oracle.raw
