"""Helpers shared by the end-to-end tests (DuckDB oracle, server log polling, errors)."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
from support import log_records

ORDERS_DB = Path("sales/data/orders.duckdb")
CUSTOMERS_PARQUET = Path("crm/data/customers.parquet")
SHIPMENTS_DIR = Path("logistics/data/shipments")


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def raw_sources(mesh: Path) -> dict[str, str]:
    """Each product as a DuckDB FROM-clause over its raw files (no views involved)."""
    return {
        "sales.orders": "direct_sales.main.orders",
        "crm.customers": f"read_parquet({_quote(mesh / CUSTOMERS_PARQUET)})",
        "logistics.shipments": (
            f"read_parquet({_quote(mesh / SHIPMENTS_DIR / '**' / '*.parquet')}, hive_partitioning = true)"
        ),
    }


def open_direct(mesh: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB reading the mesh's files, with one view per product name."""
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH {_quote(mesh / ORDERS_DB)} AS direct_sales (READ_ONLY)")
    for key, source in raw_sources(mesh).items():
        domain, name = key.split(".")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {domain}")
        con.execute(f"CREATE VIEW {domain}.{name} AS SELECT * FROM {source}")
    return con


def wait_for_query_log(
    gateway, *, user: str, after: int, timeout: float, outcomes=None
) -> dict | None:
    """The first ``query`` log line of ``user`` after the first ``after`` query lines.

    Polls the gateway's log for up to ``timeout`` seconds; None when nothing came.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = [r for r in log_records(gateway.log(), "query")[after:] if r.get("user") == user]
        if outcomes is not None:
            lines = [r for r in lines if r.get("outcome") in outcomes]
        if lines:
            return lines[0]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
