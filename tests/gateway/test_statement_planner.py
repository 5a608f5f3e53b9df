"""The statement planner on a real mesh: plan cache, re-planning after a policy reload,
prepared statements (per-user limit, expiry on an injected clock, parameter binding)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from gateway.audit.recorder import NullAuditRecorder
from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.errors import HandleNotFound, InvalidQuery, ResourceExhausted
from gateway.planning.query import PlanContext, Query
from gateway.query import statements
from gateway.query.statements import StatementPlanner
from gateway.security.auth import UserDirectory
from gateway.security.principal import Principal

ORDERS = "SELECT order_id, amount FROM sales.orders"
CUSTOMERS = "SELECT * FROM crm.customers"
BY_ID = "SELECT order_id FROM sales.orders WHERE order_id = ?"


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state(mesh_copy: Path) -> MeshState:
    config = load_config(mesh_copy)
    gateway = config.gateway.model_copy(
        update={"max_prepared_statements_per_user": 2, "ticket_ttl_seconds": 10}
    )
    return MeshState(mesh_copy, config.model_copy(update={"gateway": gateway}))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def planner(state: MeshState, clock: Clock) -> StatementPlanner:
    return StatementPlanner(state, NullAuditRecorder(), clock=clock)


@pytest.fixture
def pipeline_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statement texts the step pipeline planned (cache misses), in order."""
    runs: list[str] = []
    pipeline = statements.plan

    def counted(text: str, context: PlanContext) -> Query:
        runs.append(text)
        return pipeline(text, context)

    monkeypatch.setattr(statements, "plan", counted)
    return runs


def user(state: MeshState, name: str) -> Principal:
    return UserDirectory(state.config.users).principal(name)


def test_a_statement_planned_again_comes_from_the_cache(
    planner: StatementPlanner, state: MeshState, pipeline_runs: list[str]
):
    bob = user(state, "bob")
    first = planner.plan(bob, ORDERS)
    second = planner.plan(bob, ORDERS)
    third = planner.plan(bob, ORDERS)
    assert pipeline_runs == [ORDERS]
    assert third.query is second.query and third.schema is second.schema
    assert second.sql == first.sql and second.query.ast is None
    planner.plan(user(state, "erin"), ORDERS)  # another principal: its own plan
    fresh = planner.plan(bob, ORDERS, keep_ast=True)  # a syntax tree: never from the cache
    assert pipeline_runs == [ORDERS] * 3
    assert fresh.query.ast is not None


def test_a_policy_reload_replans_a_waiting_plan(
    planner: StatementPlanner, state: MeshState, mesh_copy: Path, pipeline_runs: list[str]
):
    carol = user(state, "carol")
    planned = planner.plan(carol, CUSTOMERS)
    assert planner.current(planned) is planned  # nothing changed: no planning
    policy = mesh_copy / "crm" / "policy.csv"
    policy.write_text(policy.read_text() + "p, ops, crm.customers, read, allow\n")
    assert not state.refresh()  # a changed file is taken once it has stopped changing
    assert state.refresh()
    version = state.current.governor.version
    assert version != planned.governor_version

    replanned = planner.current(planned)
    assert pipeline_runs == [CUSTOMERS, CUSTOMERS]
    assert replanned.governor_version == version
    assert replanned.schema == planned.schema
    assert planner.current(replanned) is replanned


def test_a_waiting_plan_whose_schema_a_reload_changed_is_refused(
    planner: StatementPlanner, state: MeshState, mesh_copy: Path
):
    carol = user(state, "carol")
    planned = planner.plan(carol, CUSTOMERS)
    assert "ssn" not in planned.schema.names  # marketing may not read it
    policy = mesh_copy / "crm" / "policy.csv"
    deny = "p, marketing, crm.customers.ssn, read, deny\n"
    assert deny in policy.read_text()
    policy.write_text(policy.read_text().replace(deny, ""))
    assert not state.refresh()  # a changed file is taken once it has stopped changing
    assert state.refresh()
    with pytest.raises(InvalidQuery, match="changed since this query was planned"):
        planner.current(planned)
    assert "ssn" in planner.plan(carol, CUSTOMERS).schema.names


def test_prepared_statements_are_limited_per_user(planner: StatementPlanner, state: MeshState):
    bob, erin = user(state, "bob"), user(state, "erin")
    first, _ = planner.prepare(bob, ORDERS)
    planner.prepare(bob, BY_ID)
    limit = (
        r"resource exhausted: bob has 2 open prepared statements \(the limit, \[gateway\] "
        r"max_prepared_statements_per_user\); close one"
    )
    with pytest.raises(ResourceExhausted, match=limit):
        planner.check_room("bob")
    with pytest.raises(ResourceExhausted, match=limit):
        planner.prepare(bob, ORDERS)
    planner.check_room("erin")  # another user's room is their own
    planner.prepare(erin, ORDERS)
    planner.close("bob", first)
    planner.check_room("bob")
    with pytest.raises(HandleNotFound):
        planner.plan_prepared(bob, first)


def test_prepared_statements_expire_on_the_clock(
    planner: StatementPlanner, state: MeshState, clock: Clock
):
    bob = user(state, "bob")
    ttl = state.config.gateway.ticket_ttl_seconds * 6
    handle, prepared = planner.prepare(bob, ORDERS)
    planner.prepare(bob, ORDERS)
    clock.now = ttl - 0.001
    assert planner.plan_prepared(bob, handle).sql == prepared.sql
    with pytest.raises(ResourceExhausted):
        planner.check_room("bob")
    clock.now = ttl
    with pytest.raises(HandleNotFound, match="unknown or expired prepared statement"):
        planner.plan_prepared(bob, handle)
    planner.check_room("bob")  # expired statements leave room


def test_parameters_are_bound_to_their_own_users_statement(
    planner: StatementPlanner, state: MeshState
):
    bob, erin = user(state, "bob"), user(state, "erin")
    handle, prepared = planner.prepare(bob, BY_ID)
    assert prepared.parameters == (None,)
    with pytest.raises(InvalidQuery, match="1 parameter\\(s\\); bind them first"):
        planner.plan_prepared(bob, handle)

    reads: list[str] = []

    def row(*values: object) -> Iterator[pa.RecordBatch]:
        reads.append("read")
        yield pa.record_batch({f"${i + 1}": [v] for i, v in enumerate(values)})

    with pytest.raises(HandleNotFound):
        planner.bind("erin", handle, row(7))
    assert reads == []  # a foreign handle is refused before the parameters are read
    with pytest.raises(InvalidQuery, match="1 parameter\\(s\\) but 2 were bound"):
        planner.bind("bob", handle, row(7, 8))
    with pytest.raises(
        InvalidQuery, match=r"exactly one row of parameters per execution \(got 0\)"
    ):
        planner.bind("bob", handle, iter(()))
    planner.bind("bob", handle, row(7))
    assert planner.plan_prepared(bob, handle).parameters == (7,)
    with pytest.raises(HandleNotFound):
        planner.plan_prepared(erin, handle)


def test_a_bind_stops_reading_at_the_first_batch_past_its_limits(
    planner: StatementPlanner, state: MeshState
) -> None:
    """A client streaming batch after batch is refused once the rows or the bytes pass the
    limit: the rest of its stream is never read, and nothing is bound."""
    bob = user(state, "bob")
    handle, _ = planner.prepare(bob, BY_ID)
    drawn: list[int] = []

    def endless(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        while True:
            drawn.append(batch.num_rows)
            yield batch

    with pytest.raises(InvalidQuery, match="exactly one row of parameters per execution"):
        planner.bind("bob", handle, endless(pa.record_batch({"$1": [7]})))
    assert drawn == [1, 1]
    drawn.clear()
    big = pa.record_batch({"$1": pa.array([b"x" * 100_000], pa.binary())})
    with pytest.raises(InvalidQuery, match="at most 65,536 may be bound"):
        planner.bind("bob", handle, endless(big))
    assert drawn == [1]
    drawn.clear()
    # one row that holds a big buffer it barely uses is weighed by the buffer
    sliced = pa.record_batch({"$1": pa.array([b"x"] * 100_000, pa.binary())}).slice(0, 1)
    with pytest.raises(InvalidQuery, match="at most 65,536 may be bound"):
        planner.bind("bob", handle, endless(sliced))
    drawn.clear()
    with pytest.raises(InvalidQuery, match="at most 64 batches"):
        planner.bind("bob", handle, endless(pa.record_batch({"$1": pa.array([], pa.int64())})))
    assert len(drawn) == statements.MAX_BIND_MESSAGES + 1
    with pytest.raises(InvalidQuery, match="bind them first"):
        planner.plan_prepared(bob, handle)


def test_a_refused_bind_leaves_no_earlier_values_bound(
    planner: StatementPlanner, state: MeshState
) -> None:
    """A client that ignores a refused bind and executes gets "bind them first", never
    the statement run with the values of its previous bind."""
    bob = user(state, "bob")
    handle, _ = planner.prepare(bob, BY_ID)
    planner.bind("bob", handle, iter([pa.record_batch({"$1": [7]})]))
    assert planner.plan_prepared(bob, handle).parameters == (7,)
    with pytest.raises(InvalidQuery, match="exactly one row"):
        planner.bind("bob", handle, iter([pa.record_batch({"$1": [8, 9]})]))
    with pytest.raises(InvalidQuery, match="bind them first"):
        planner.plan_prepared(bob, handle)
    planner.bind("bob", handle, iter([pa.record_batch({"$1": [8]})]))
    assert planner.plan_prepared(bob, handle).parameters == (8,)


def test_a_users_prepared_statements_are_bounded_in_bytes(
    state: MeshState, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text, kept plans and bound rows count: past the user's budget a prepare is refused
    naming it, and closing one makes room again."""
    monkeypatch.setattr(statements, "PREPARED_BYTES_PER_USER", 20_000)
    planner = StatementPlanner(state, NullAuditRecorder(), clock=clock)
    bob = user(state, "bob")
    padded = ORDERS + " -- " + "x" * 12_000  # one fits, two do not
    first, _ = planner.prepare(bob, padded)
    with pytest.raises(ResourceExhausted, match="would hold more than 20,000 bytes"):
        planner.prepare(bob, padded + " ")
    planner.prepare(bob, ORDERS)  # a short one still fits
    planner.close(bob.user, first)
    planner.prepare(bob, padded + " ")
