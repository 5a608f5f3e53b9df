"""The workload scheduler in process: groups, queueing, fairness, cancel, cost, rate."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from pydantic import ValidationError
from support.polling import poll_for

from gateway.config import MeshConfig
from gateway.engine.plan_cost import PlanCost
from gateway.errors import QueryRefused, ResourceExhausted
from gateway.security.principal import Principal
from gateway.workload.scheduler import Slot, Workload

ALICE = Principal("alice", roles=("analyst_eu",))
BOB = Principal("bob", roles=("admin",))
CAROL = Principal("carol", roles=("analyst_us",))


def workload(clock: Callable[[], float] | None = None, **groups: dict) -> Workload:
    config = MeshConfig.model_validate(
        {
            "gateway": {"max_concurrent_queries_per_user": 2, "max_queries_per_minute_per_user": 3},
            "engine": {"query_timeout_seconds": 120},
            "workload": {"groups": groups},
        }
    )
    return Workload(config) if clock is None else Workload(config, clock)


class Waiter:
    """A thread that takes a slot and holds it until released."""

    def __init__(self, work: Workload, principal: Principal, name: str) -> None:
        self._start(work, work.new_slot(principal, "running", lambda: self.cancelled, name), name)

    @classmethod
    def holding_slot(cls, work: Workload, slot: Slot, name: str) -> Waiter:
        waiter = cls.__new__(cls)
        waiter._start(work, slot, name)
        return waiter

    def _start(self, work: Workload, slot: Slot, name: str) -> None:
        self.name = name
        self.error: BaseException | None = None
        self.holding = threading.Event()
        self.cancelled = False
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work, slot), daemon=True)
        self._thread.start()

    def _run(self, work: Workload, slot: Slot) -> None:
        try:
            with work.holding(slot):
                self.holding.set()
                self._release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc

    def release(self) -> None:
        self._release.set()
        self._thread.join(30)

    def done(self) -> bool:
        return not self._thread.is_alive()


@pytest.fixture
def waiters() -> Iterator[list[Waiter]]:
    started: list[Waiter] = []
    yield started
    for waiter in started:
        waiter.release()


def start(waiters: list[Waiter], work: Workload, principal: Principal, name: str) -> Waiter:
    waiter = Waiter(work, principal, name)
    waiters.append(waiter)
    return waiter


def queued(work: Workload, count: int) -> bool:
    return sum(1 for a in work.activity() if a.state == "queued") == count


def test_groups_are_chosen_by_user_then_role_in_file_order_with_default_last() -> None:
    work = workload(
        etl={"users": ["bob"], "max_running": 1},
        analysts={"roles": ["analyst_eu", "analyst_us"], "query_timeout_seconds": 30},
    )
    assert work.group_of(BOB).name == "etl"
    assert work.group_of(ALICE).name == "analysts"
    assert work.group_of(Principal("dave")).name == "default"
    analysts = work.group_of(CAROL)
    assert analysts.query_timeout_seconds == 30
    assert analysts.max_running_per_user == 2  # from [gateway]
    # a group's time limit never exceeds the engine's
    assert (
        workload(slow={"query_timeout_seconds": 999}).group_of(ALICE).query_timeout_seconds == 120
    )


def test_a_query_over_the_limit_waits_and_runs_when_a_slot_frees(waiters) -> None:
    work = workload(default={"max_running_per_user": 1})
    first = start(waiters, work, ALICE, "first")
    assert first.holding.wait(10)
    second = start(waiters, work, ALICE, "second")
    assert poll_for(lambda: queued(work, 1), 10), "the second query never queued"
    assert not second.holding.is_set()
    assert work.counts()["default"] == (1, 1)
    first.release()
    assert second.holding.wait(10), "the queued query never got the freed slot"
    assert second.error is None and first.error is None


def test_the_user_with_fewer_running_queries_goes_first(waiters) -> None:
    """alice holds both group slots and queues two more; carol, queued after them, gets
    the first slot that frees."""
    work = workload(default={"max_running": 2, "max_running_per_user": 4})
    holders = [start(waiters, work, ALICE, f"alice{i}") for i in range(2)]
    assert all(h.holding.wait(10) for h in holders)
    alice_queued = [start(waiters, work, ALICE, f"alice-q{i}") for i in range(2)]
    assert poll_for(lambda: queued(work, 2), 10)
    carol = start(waiters, work, CAROL, "carol")
    assert poll_for(lambda: queued(work, 3), 10)
    holders[0].release()
    assert carol.holding.wait(10), "carol waited behind alice's queued queries"
    assert not any(q.holding.is_set() for q in alice_queued)
    holders[1].release()
    assert poll_for(lambda: sum(q.holding.is_set() for q in alice_queued) == 1, 10)


def test_a_user_at_their_limit_does_not_block_others_queued_behind(waiters) -> None:
    work = workload(default={"max_running": 8, "max_running_per_user": 1})
    alice = start(waiters, work, ALICE, "alice")
    assert alice.holding.wait(10)
    blocked = start(waiters, work, ALICE, "alice-again")
    assert poll_for(lambda: queued(work, 1), 10)
    carol = start(waiters, work, CAROL, "carol")  # arrives later, has room: runs now
    assert carol.holding.wait(10), "carol waited behind alice's queued query"
    assert not blocked.holding.is_set()
    assert work.counts()["default"] == (2, 1)


def test_the_queue_wait_is_bounded_on_the_clock() -> None:
    now = [0.0]
    work = workload(
        lambda: now[0], default={"max_running_per_user": 1, "max_queue_wait_seconds": 5}
    )
    errors: list[BaseException] = []
    with work.slot(ALICE, "running", "holder"):

        def wait() -> None:
            try:
                with work.slot(ALICE, "running", "waiter"):
                    pass
            except ResourceExhausted as exc:
                errors.append(exc)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        assert poll_for(lambda: queued(work, 1), 10)
        now[0] = 4.0
        assert not poll_for(lambda: errors, 0.3), "refused before its wait was over"
        now[0] = 5.5
        thread.join(10)
    assert errors and "resource group default is busy" in str(errors[0])
    assert "alice may retry" in str(errors[0])
    assert queued(work, 0)


def test_a_full_queue_refuses_at_once() -> None:
    work = workload(default={"max_running_per_user": 1, "max_queued": 0})
    with (
        work.slot(ALICE, "running", "holder"),
        pytest.raises(ResourceExhausted, match="its queue is full"),
        work.slot(ALICE, "running", "second"),
    ):
        pass


def test_a_client_that_cancels_leaves_the_queue(waiters) -> None:
    work = workload(default={"max_running_per_user": 1})
    holder = start(waiters, work, ALICE, "holder")
    assert holder.holding.wait(10)
    waiting = start(waiters, work, ALICE, "waiting")
    assert poll_for(lambda: queued(work, 1), 10)
    waiting.cancelled = True
    assert poll_for(waiting.done, 10)
    assert isinstance(waiting.error, ResourceExhausted)
    assert "cancelled while it waited" in str(waiting.error)
    assert queued(work, 0)


def test_an_operator_cancel_stops_a_queued_and_marks_a_running_query(waiters) -> None:
    work = workload(default={"max_running_per_user": 1})
    holder = start(waiters, work, ALICE, "holder")
    assert holder.holding.wait(10)
    waiting = start(waiters, work, ALICE, "waiting")
    assert poll_for(lambda: queued(work, 1), 10)
    by_name = {a.statement: a for a in work.activity()}
    assert by_name["holder"].state == "running" and by_name["waiting"].state == "queued"
    assert work.cancel(by_name["waiting"].query_id)
    assert poll_for(waiting.done, 10) and isinstance(waiting.error, ResourceExhausted)
    running: list[Slot] = []
    with work.slot(CAROL, "running", "carol") as slot:
        running.append(slot)
        assert not slot.is_cancelled()
        assert work.cancel(slot.query_id)
        assert slot.is_cancelled()  # what the engine's watchdog polls
    assert not work.cancel("q-none")


def test_cost_above_the_group_budget_is_refused_naming_estimate_and_limit() -> None:
    work = workload(analysts={"roles": ["analyst_eu"], "max_estimated_rows": 1e6})
    work.admit_cost(ALICE, PlanCost(999_999.0, 0))
    work.admit_cost(ALICE, None)  # EXPLAIN: nothing to run
    with pytest.raises(QueryRefused) as refused:
        work.admit_cost(ALICE, PlanCost(7.3e14, 0))
    text = str(refused.value)
    assert "about 7e+14 intermediate rows" in text
    assert "resource group analysts (1e+06, [workload] max_estimated_rows)" in text
    assert "730000000000000" not in text
    work.admit_cost(BOB, PlanCost(7.3e10, 0))  # the default group's budget is 1e11


def test_the_per_minute_rate_is_counted_per_user_on_the_clock() -> None:
    now = [100.0]
    work = workload(lambda: now[0])
    for _ in range(3):
        work.admit_rate("alice")
    with pytest.raises(ResourceExhausted, match=r"ran 3 queries in the last minute"):
        work.admit_rate("alice")
    work.admit_rate("carol")
    now[0] = 160.5
    work.admit_rate("alice")


def test_users_idle_for_a_minute_are_forgotten_and_active_ones_still_counted() -> None:
    """The per-minute counts keep no entry for a user idle a minute (a gateway whose
    identity provider signs a new subject per login would otherwise grow forever)."""
    now = [100.0]
    work = workload(lambda: now[0])
    for n in range(1000):
        work.admit_rate(f"once-{n}")
    now[0] = 150.0
    for _ in range(3):
        work.admit_rate("carol")  # at her limit until 210
    now[0] = 161.0
    for n in range(200):
        work.admit_rate(f"later-{n}")
    assert len(work._recent) == 201  # the 1000 are gone; carol and the 200 remain
    with pytest.raises(ResourceExhausted, match=r"carol ran 3 queries"):
        work.admit_rate("carol")
    now[0] = 210.5
    work.admit_rate("carol")


def test_a_group_may_select_on_the_clients_source() -> None:
    work = workload(
        dashboards={"roles": ["analyst_eu"], "sources": ["superset.*", "grafana"]},
        analysts={"roles": ["analyst_eu"]},
    )
    assert work.group_of(replace(ALICE, source="superset/6.1")).name == "dashboards"
    assert work.group_of(replace(ALICE, source="grafana")).name == "dashboards"
    assert work.group_of(replace(ALICE, source="grafana-agent")).name == "analysts"
    assert work.group_of(replace(BOB, source="superset/6.1")).name == "default"


def test_a_source_that_is_not_a_pattern_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="is not a regular expression"):
        workload(bad={"sources": ["(unclosed"]})


def test_heavy_queries_share_a_gateway_wide_lane_that_light_ones_pass(waiters) -> None:
    """Two heavy queries may run at once across groups; a third waits while a light query
    of the same user runs at once."""
    work = workload(
        analysts={"roles": ["analyst_eu"], "max_running_per_user": 4},
        default={"max_running_per_user": 4},
    )
    work.max_heavy_running = 2
    assert work.is_heavy(PlanCost(1e7, 0)) and not work.is_heavy(PlanCost(9e6, 0))
    assert not work.is_heavy(None)

    def heavy(principal: Principal, name: str) -> Waiter:
        slot = work.new_slot(principal, "running", statement=name)
        slot.heavy = True
        waiter = Waiter.holding_slot(work, slot, name)
        waiters.append(waiter)
        return waiter

    first, second = heavy(ALICE, "h1"), heavy(BOB, "h2")
    assert first.holding.wait(10) and second.holding.wait(10)
    third = heavy(ALICE, "h3")
    assert poll_for(lambda: queued(work, 1), 10)
    light = start(waiters, work, ALICE, "light")
    assert light.holding.wait(10), "a light query waited behind the heavy lane"
    assert not third.holding.is_set()
    second.release()
    assert third.holding.wait(10)


def test_activity_keeps_only_the_head_of_a_long_statement() -> None:
    """(A running statement set by the service: tests/e2e/test_top.py.)"""
    work = workload()
    with work.slot(CAROL, "running", "x" * 100_000):
        assert [len(a.statement) for a in work.activity()] == [200]
