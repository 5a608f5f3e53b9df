"""A statement's estimated cost (admission's input) is computed once per statement,
principal, typed parameters and data version, and is always the one a fresh EXPLAIN
gives: repeated executions of a prepared statement do not re-EXPLAIN, a change of the
product's files does."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from gateway.audit.recorder import NullAuditRecorder
from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.query import statements
from gateway.query.statements import StatementPlanner
from gateway.security.principal import Principal

ABOVE = "SELECT customer_id FROM crm.customers WHERE customer_id > ?"
REGION_ORDERS = "SELECT order_id FROM sales.orders WHERE amount > ?"


@pytest.fixture
def state(mesh_copy: Path) -> MeshState:
    return MeshState(mesh_copy, load_config(mesh_copy))


@pytest.fixture
def bindings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The governed SQL each binding for a schema and cost (EXPLAIN) ran on."""
    calls: list[str] = []
    bind = statements.result_schema_and_plan

    def counted(catalog, sql, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(sql)
        return bind(catalog, sql, *args, **kwargs)

    monkeypatch.setattr(statements, "result_schema_and_plan", counted)
    return calls


def _principal(state: MeshState, user: str) -> Principal:
    entry = state.config.users[user]
    return Principal(user, tuple(entry.roles), dict(entry.attributes))


def _keep_100_customers(mesh: Path) -> None:
    """Rewrite crm.customers' Parquet file with its first 100 rows (a new file, renamed in)."""
    parquet = mesh / "crm" / "data" / "customers.parquet"
    smaller = parquet.with_suffix(".new")
    duckdb.sql(
        f"COPY (SELECT * FROM read_parquet('{parquet}') LIMIT 100) TO '{smaller}' (FORMAT parquet)"
    )
    os.replace(smaller, parquet)


def _fresh_cost(state: MeshState, principal: Principal, sql: str, parameters: tuple) -> object:
    return StatementPlanner(state, NullAuditRecorder()).plan(principal, sql, parameters).cost


def test_a_repeated_execution_is_not_explained_again(state: MeshState, bindings: list[str]) -> None:
    planner = StatementPlanner(state, NullAuditRecorder())
    bob = _principal(state, "bob")
    first = planner.plan(bob, ABOVE, (100,))
    explained = len(bindings)
    assert explained >= 1
    again = planner.plan(bob, ABOVE, (100,))
    assert len(bindings) == explained, "the same execution was explained again"
    assert (again.cost, again.schema) == (first.cost, first.schema)
    other = planner.plan(bob, ABOVE, (19_000,))  # another value: estimated anew
    assert len(bindings) > explained
    assert other.cost == _fresh_cost(state, bob, ABOVE, (19_000,))


def test_parameters_of_another_type_are_estimated_anew(
    state: MeshState, bindings: list[str]
) -> None:
    planner = StatementPlanner(state, NullAuditRecorder())
    bob = _principal(state, "bob")
    planner.plan(bob, "SELECT ? AS v", (1,))
    explained = len(bindings)
    as_text = planner.plan(bob, "SELECT ? AS v", ("1",))
    assert len(bindings) > explained
    assert str(as_text.schema.field("v").type) in ("string", "large_string")


def test_a_row_filtered_users_cached_cost_is_the_visible_rows_one(
    state: MeshState, bindings: list[str]
) -> None:
    """Cached or not, a row-filtered user's estimate is the one made from the rows they
    may see (the stand-in), never from the product's statistics."""
    planner = StatementPlanner(state, NullAuditRecorder())
    alice = _principal(state, "alice")
    first = planner.plan(alice, REGION_ORDERS, (10,))
    explained = len(bindings)
    again = planner.plan(alice, REGION_ORDERS, (10,))
    assert len(bindings) == explained
    assert again.cost == first.cost == _fresh_cost(state, alice, REGION_ORDERS, (10,))
    bob = _principal(state, "bob")  # no row filter: another plan key, another estimate
    assert planner.plan(bob, REGION_ORDERS, (10,)).cost == _fresh_cost(
        state, bob, REGION_ORDERS, (10,)
    )


def test_a_change_of_the_products_files_is_estimated_anew(
    state: MeshState, mesh_copy: Path, bindings: list[str]
) -> None:
    planner = StatementPlanner(state, NullAuditRecorder())
    bob = _principal(state, "bob")
    before = planner.plan(bob, ABOVE, (0,))
    for sql in ("SELECT * FROM crm.customers", "SELECT 1"):  # parameterless too
        planner.plan(bob, sql)
    explained = len(bindings)
    _keep_100_customers(mesh_copy)
    after = planner.plan(bob, ABOVE, (0,))
    assert len(bindings) == explained + 1, "the changed product's statement was not re-estimated"
    planner.plan(bob, "SELECT * FROM crm.customers")
    assert len(bindings) == explained + 2
    planner.plan(bob, "SELECT 1")  # reads no product: still current
    assert len(bindings) == explained + 2
    assert after.cost == _fresh_cost(state, bob, ABOVE, (0,))
    assert after.cost != before.cost


def test_parameter_types_are_read_once_per_statement(
    state: MeshState, monkeypatch: pytest.MonkeyPatch
) -> None:
    planner = StatementPlanner(state, NullAuditRecorder())
    bob = _principal(state, "bob")
    engine = state.current.catalog.engine
    calls: list[str] = []
    read = engine.parameter_schema

    def counted(sql: str, count: int):  # type: ignore[no-untyped-def]
        calls.append(sql)
        return read(sql, count)

    monkeypatch.setattr(engine, "parameter_schema", counted)
    _, planned = planner.prepare(bob, ABOVE)
    first = planner.parameter_schema(planned)
    _, planned = planner.prepare(bob, ABOVE)
    assert planner.parameter_schema(planned) == first
    assert len(calls) == 1
    assert str(first.field(0).type) == "int64"


def test_a_row_filtered_estimate_counts_the_rows_anew_once_the_files_change(
    mesh_copy: Path, bindings: list[str]
) -> None:
    """The visible rows behind a row-filtered user's estimate are counted again when the
    product's files change, as the estimate itself is (not kept for the catalog's life)."""
    policy = mesh_copy / "crm" / "policy.csv"
    policy.write_text(
        policy.read_text() + "p, analyst_eu, crm.customers, filter, allow, region = {user.region}\n"
    )
    state = MeshState(mesh_copy, load_config(mesh_copy))
    planner = StatementPlanner(state, NullAuditRecorder())
    alice = _principal(state, "alice")
    before = planner.plan(alice, ABOVE, (0,))
    assert before.cost == _fresh_cost(state, alice, ABOVE, (0,))
    _keep_100_customers(mesh_copy)
    after = planner.plan(alice, ABOVE, (0,))
    assert after.cost == _fresh_cost(state, alice, ABOVE, (0,))
    assert after.cost != before.cost
