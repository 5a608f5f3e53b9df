"""The workload: admission by cost and rate, and slots handed out fairly per resource group.

A query takes a slot of its group while it is planned and again while it runs. With no
slot free it waits in the group's queue (holding nothing) up to the group's maximum
wait; when a slot frees, the waiting query of the user with the fewest running queries
in the group goes first (oldest first among equals), so one user's many heavy queries
cannot starve another's small ones. A client that cancels leaves the queue at once; an
operator's ``cancel`` stops a queued or running query.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from gateway.config import MeshConfig
from gateway.engine.plan_cost import PlanCost
from gateway.errors import QueryRefused, ResourceExhausted
from gateway.memo import IdentityMemo
from gateway.security.principal import Principal
from gateway.workload.cost import magnitude
from gateway.workload.groups import ResourceGroup, group_of, resource_groups

State = Literal["queued", "planning", "running"]

_RATE_WINDOW_SECONDS = 60.0
_POLL_SECONDS = 0.05  # how often a queued query looks at its client and its deadline
_STATEMENT_CHARS = 200  # of a statement kept for ``activity``
#: users idle for a minute forgotten per admission, at most (the oldest first)
_IDLE_USERS_DROPPED = 8
_GROUPS_KEPT = 1024  # principals whose group is kept (see ``Workload.group_of``)


@dataclass(frozen=True)
class Activity:
    """A query holding or waiting for a slot, as operators see it (``meshgate top``)."""

    query_id: str
    user: str
    group: str
    state: State
    started: datetime
    engine: str
    statement: str


@dataclass(eq=False)
class Slot:
    """One query's place in the workload; ``is_cancelled`` is its client's cancel or an
    operator's."""

    query_id: str
    principal: Principal
    group: ResourceGroup
    state: State
    statement: str  # shortened; set once known
    engine: str  # set once routed
    client_cancelled: Callable[[], bool]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    arrival: int = 0
    cancelled_by_operator: bool = False
    heavy: bool = False  # set once the query's cost is known (see ``Workload.is_heavy``)
    #: set once routed: an embedded query estimated to be small, whose slot is free
    #: (``SqlService.answer``: its first batch is read before its schema goes out)
    quick: bool = False

    def is_cancelled(self) -> bool:
        return self.cancelled_by_operator or self.client_cancelled()


class Workload:
    """Admission and slots for every query of one gateway; thread-safe."""

    def __init__(self, config: MeshConfig, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: monotonic seconds (queue waits and the per-minute rate)."""
        self.groups = resource_groups(config)
        self._heavy_rows = config.workload.heavy_rows
        self.max_heavy_running = config.workload.max_heavy_running or max(
            1, (os.cpu_count() or 1) // config.engine.threads
        )
        self._max_per_minute = config.gateway.max_queries_per_minute_per_user
        self._clock = clock
        self._lock = threading.Condition()
        self._running: dict[str, list[Slot]] = defaultdict(list)  # group -> slots
        self._queued: dict[str, list[Slot]] = defaultdict(list)
        #: user -> admission times in the last minute; ordered by each user's last admission
        self._recent: dict[str, deque[float]] = {}
        self._ids = itertools.count(1)
        #: ``on_wait(group, phase, seconds)``: a slot was taken ("planning" or "running")
        #: or given up after waiting that long in its group's queue (0: at once)
        self.on_wait: Callable[[str, str, float], None] | None = None
        self._group_of: IdentityMemo[Principal, ResourceGroup] = IdentityMemo(_GROUPS_KEPT)

    def group_of(self, principal: Principal) -> ResourceGroup:
        """``principal``'s group, kept per principal object while its calls repeat (the
        gateway hands out one object per login; the groups are fixed), taken only for the
        very object it was computed from."""
        return self._group_of.get(principal, lambda: group_of(self.groups, principal))

    # -- admission ------------------------------------------------------------------

    def admit_rate(self, user: str) -> None:
        """Count one statement towards ``user``'s per-minute budget, or refuse it."""
        now = self._clock()
        since = now - _RATE_WINDOW_SECONDS
        with self._lock:
            recent = self._recent.pop(user, None) or deque()
            for idle in list(itertools.islice(self._recent, _IDLE_USERS_DROPPED)):
                if self._recent[idle] and self._recent[idle][-1] > since:
                    break
                del self._recent[idle]  # idle a minute: nothing of theirs counts any more
            self._recent[user] = recent  # the last admitted: the dict runs oldest first
            while recent and recent[0] <= since:
                recent.popleft()
            if len(recent) >= self._max_per_minute:
                wait = math.ceil(recent[0] + _RATE_WINDOW_SECONDS - now)
                raise ResourceExhausted(
                    f"resource exhausted: {user} ran {self._max_per_minute} queries in the last "
                    f"minute (the limit); retry in {wait} s"
                )
            recent.append(now)

    def admit_cost(self, principal: Principal, cost: PlanCost | None) -> None:
        """Refuse a statement whose estimated cost exceeds its group's budget. The message
        gives the estimate to one figure: enough to act on, and no product's row count."""
        group = self.group_of(principal)
        if cost is not None and cost.rows > group.max_estimated_rows:
            raise QueryRefused(
                f"the query is estimated to produce about {magnitude(cost.rows)} intermediate rows, "
                f"above the limit of resource group {group.name} "
                f"({magnitude(group.max_estimated_rows)}, [workload] max_estimated_rows); "
                "add join conditions or filters"
            )

    # -- slots ----------------------------------------------------------------------

    def new_slot(
        self,
        principal: Principal,
        state: State,
        is_cancelled: Callable[[], bool] = lambda: False,
        statement: str = "",
    ) -> Slot:
        """A slot of ``principal``'s group, not yet held (see ``holding``)."""
        return Slot(
            query_id=f"q{next(self._ids)}",
            principal=principal,
            group=self.group_of(principal),
            state=state,
            statement=activity_text(statement),
            engine="",
            client_cancelled=is_cancelled,
        )

    def holding(self, slot: Slot) -> AbstractContextManager[Slot]:
        """Hold ``slot`` while the body runs, after waiting for it in the group's queue if
        need be: ResourceExhausted when the queue is full, the wait too long, or the client
        cancels while it waits."""
        return _Holding(self, slot)

    def release(self, slot: Slot) -> None:
        """Give ``slot`` back: the next one queued in its group may run."""
        with self._lock:
            self._running[slot.group.name].remove(slot)
            self._lock.notify_all()

    def slot(
        self,
        principal: Principal,
        state: State,
        statement: str,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> AbstractContextManager[Slot]:
        """``holding`` a new slot."""
        return self.holding(self.new_slot(principal, state, is_cancelled, statement))

    def acquire(self, slot: Slot) -> None:
        """Take ``slot``, after waiting in its group's queue if need be (see ``holding``)."""
        group = slot.group
        with self._lock:
            queue = self._queued[group.name]
            if not queue and self._has_room(slot):
                self._running[group.name].append(slot)
                self._waited(slot, slot.state, 0.0)
                return
            if len(queue) >= group.max_queued:
                raise ResourceExhausted(self._busy(slot, "its queue is full"))
            final_state = slot.state
            slot.state, slot.arrival = "queued", next(self._ids)
            queue.append(slot)
            queued_at = self._clock()
            deadline = queued_at + group.max_queue_wait_seconds
            try:
                while not (self._is_next(slot) and self._has_room(slot)):
                    if slot.is_cancelled():
                        raise ResourceExhausted(
                            "the query was cancelled while it waited for a slot"
                        )
                    left = deadline - self._clock()
                    if left <= 0:
                        raise ResourceExhausted(self._busy(slot, "the wait exceeded the limit"))
                    self._lock.wait(min(left, _POLL_SECONDS))
            finally:
                queue.remove(slot)
                self._lock.notify_all()
                self._waited(slot, final_state, self._clock() - queued_at)
            slot.state = final_state
            self._running[group.name].append(slot)

    def has_room_now(self, slot: Slot) -> bool:
        """Whether ``slot`` would run at once, queueing behind nobody (a hint: another
        query may take the room before ``acquire``)."""
        with self._lock:
            return not self._queued[slot.group.name] and self._has_room(slot)

    def _waited(self, slot: Slot, phase: str, seconds: float) -> None:
        if self.on_wait is not None:
            self.on_wait(slot.group.name, phase, seconds)

    def is_heavy(self, cost: PlanCost | None) -> bool:
        """True for a query estimated to produce at least ``[workload] heavy_rows`` rows:
        at most ``max_heavy_running`` of those run at once, gateway-wide."""
        return cost is not None and cost.rows >= self._heavy_rows

    def _has_room(self, slot: Slot) -> bool:
        running = self._running[slot.group.name]
        mine = sum(1 for other in running if other.principal.user == slot.principal.user)
        if slot.heavy and self._heavy_running() >= self.max_heavy_running:
            return False
        return len(running) < slot.group.max_running and mine < slot.group.max_running_per_user

    def _heavy_running(self) -> int:
        return sum(
            1 for slot in itertools.chain.from_iterable(self._running.values()) if slot.heavy
        )

    def _is_next(self, slot: Slot) -> bool:
        """True when no queued query of the group goes before ``slot``: among those that
        have room, the one whose user runs the fewest queries, oldest first."""
        candidates = [other for other in self._queued[slot.group.name] if self._has_room(other)]
        if not candidates:
            return False
        running = self._running[slot.group.name]

        def order(other: Slot) -> tuple[int, int]:
            user = other.principal.user
            return sum(1 for r in running if r.principal.user == user), other.arrival

        return min(candidates, key=order) is slot

    def _busy(self, slot: Slot, why: str) -> str:
        group = slot.group
        return (
            f"resource exhausted: resource group {group.name} is busy ({why}: "
            f"{group.max_running} queries at once, {group.max_running_per_user} per user, "
            f"{group.max_queue_wait_seconds:g} s in the queue); {slot.principal.user} "
            "may retry in a moment"
        )

    # -- what operators see and do ----------------------------------------------------

    def activity(self) -> list[Activity]:
        """Every query holding or waiting for a slot, oldest first."""
        with self._lock:
            slots = list(self._slots())
        return sorted(
            (
                Activity(
                    s.query_id,
                    s.principal.user,
                    s.group.name,
                    s.state,
                    s.started,
                    s.engine,
                    s.statement,
                )
                for s in slots
            ),
            key=lambda a: a.started,
        )

    def _slots(self) -> Iterator[Slot]:
        """Every slot held or waited for (call with the lock held)."""
        for slots in (*self._running.values(), *self._queued.values()):
            yield from slots

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per group: (running, queued)."""
        with self._lock:
            return {
                group.name: (len(self._running[group.name]), len(self._queued[group.name]))
                for group in self.groups
            }

    def cancel(self, query_id: str) -> bool:
        """Stop the query ``query_id`` (queued: it leaves the queue; running: the engine is
        interrupted); False when no such query holds or waits for a slot."""
        with self._lock:
            for slot in self._slots():
                if slot.query_id == query_id:
                    slot.cancelled_by_operator = True
                    self._lock.notify_all()
                    return True
        return False


class _Holding(AbstractContextManager[Slot]):
    """``Workload.holding``: a plain context manager (a statement takes two per run)."""

    __slots__ = ("_slot", "_workload")

    def __init__(self, workload: Workload, slot: Slot) -> None:
        self._workload = workload
        self._slot = slot

    def __enter__(self) -> Slot:
        self._workload.acquire(self._slot)
        return self._slot

    def __exit__(self, *_: object) -> None:
        self._workload.release(self._slot)


def activity_text(statement: str) -> str:
    """What ``activity`` (``meshgate top``) keeps and shows of a statement."""
    return statement[:_STATEMENT_CHARS]
