"""A dynamic PIVOT in the statement planner and the engine (issue 14): DuckDB computes
its values when it binds it, from the governed rows, and leaves them behind as a
temporary ENUM type in the connection that ran it; such connections are never reused
by another query (another user)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from gateway.audit.recorder import NullAuditRecorder
from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.engine.streaming import stream_batches
from gateway.query import explain
from gateway.query.statements import StatementPlanner
from gateway.security.principal import Principal

ALICE = Principal("alice", ("analyst_eu",), {"region": "EU"})
PIVOT = "PIVOT sales.orders ON region USING sum(amount) GROUP BY customer_id"


@pytest.fixture
def state(mesh_copy: Path) -> MeshState:
    return MeshState(mesh_copy, load_config(mesh_copy))


@pytest.fixture
def planner(state: MeshState) -> StatementPlanner:
    return StatementPlanner(state, NullAuditRecorder())


def _pivot_types_left(state: MeshState) -> list[str]:
    """The pivot ENUM types in every connection the engine would hand out next."""
    engine = state.current.catalog.engine
    found: list[str] = []
    with ExitStack() as stack:
        for _ in range(20):  # more than the pool holds: every pooled connection is seen
            cursor = stack.enter_context(engine.cursor())
            found += [
                row[0]
                for row in cursor.sql(
                    "SELECT type_name FROM duckdb_types() WHERE type_name LIKE '__pivot%'"
                ).fetchall()
            ]
    return found


def test_a_dynamic_pivot_is_planned_from_governed_rows_and_leaves_nothing(
    state: MeshState, planner: StatementPlanner
) -> None:
    planned = planner.plan(ALICE, PIVOT)
    assert planned.schema.names == ["customer_id", "EU"]
    assert planned.query.columns_from_data
    rows = sum(batch.num_rows for batch in stream_batches(planned, lambda: False))
    assert rows > 0
    table = explain.explanation(
        planner.plan(Principal("bob", ("admin",)), "EXPLAIN " + PIVOT), False, "duckdb"
    )
    assert "Column Data Scan" not in table.column("explain_value")[1].as_py()
    assert _pivot_types_left(state) == []


def test_a_dynamic_pivot_is_costed_on_a_plan_not_on_its_result(
    planner: StatementPlanner,
) -> None:
    """Its cost is that of grouping the rows it reads, as for the same GROUP BY; the
    plan of a bound dynamic PIVOT would only scan its materialised result."""
    pivot = planner.plan(ALICE, PIVOT)
    grouped = planner.plan(ALICE, "SELECT customer_id, sum(amount) FROM sales.orders GROUP BY 1")
    assert pivot.cost is not None and grouped.cost is not None
    assert pivot.cost.rows >= grouped.cost.rows / 2
