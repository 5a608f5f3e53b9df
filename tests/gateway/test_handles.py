"""Handles (tickets, prepared statements): bounded in count, bytes and age per owner;
another owner's handle is unknown."""

from __future__ import annotations

import contextlib
import sys
import threading

import pytest
from support.clocks import ManualClock

from gateway.errors import HandleNotFound, ResourceExhausted
from gateway.query.handles import HandleStore


def _full(owner: str, limit: int) -> str:
    return f"{owner} is full at {limit}"


def refusing(clock: ManualClock | None = None, ttl: float = 60) -> HandleStore[str]:
    """A store like the prepared statements': 1,000 bytes an owner, refused past them."""
    return HandleStore(
        "prepared statement",
        ttl,
        capacity=100,
        per_owner=100,
        full_message=_full,
        clock=clock or ManualClock(),
        weigh=len,
        per_owner_bytes=1_000,
    )


def test_an_evicting_store_drops_an_owners_oldest_past_its_bytes() -> None:
    store: HandleStore[str] = HandleStore(
        "ticket", 60, capacity=100, per_owner=100, weigh=len, per_owner_bytes=1_000
    )
    handles = [store.put("erin", "x" * 300) for _ in range(5)]
    assert store.bytes_of("erin") == 900
    for handle in handles[:2]:
        with pytest.raises(HandleNotFound):
            store.get("erin", handle)
    assert [store.get("erin", h) for h in handles[2:]] == ["x" * 300] * 3
    other = store.put("bob", "y" * 300)  # another owner's bytes are their own
    assert store.get("bob", other) and store.bytes_of("erin") == 900


def test_a_refusing_store_refuses_past_the_bytes_and_keeps_what_it_has() -> None:
    store = refusing()
    kept = [store.put("erin", "x" * 400) for _ in range(2)]
    with pytest.raises(ResourceExhausted, match="erin is full at 1000"):
        store.put("erin", "x" * 400)
    with pytest.raises(ResourceExhausted):
        store.replace("erin", kept[0], "x" * 700)  # growing past it is refused too
    assert store.get("erin", kept[0]) == "x" * 400
    store.replace("erin", kept[0], "x" * 100)
    assert store.bytes_of("erin") == 500
    store.put("erin", "x" * 400)
    store.discard("erin", kept[1])
    assert store.bytes_of("erin") == 500


def test_bytes_leave_with_taken_and_expired_handles() -> None:
    clock = ManualClock()
    store: HandleStore[str] = HandleStore(
        "ticket", 10, capacity=100, per_owner=100, clock=clock, weigh=len, per_owner_bytes=10_000
    )
    taken = store.put("erin", "abc")
    store.put("erin", "defg")
    assert store.take("erin", taken) == "abc" and store.bytes_of("erin") == 4
    clock.now = 11
    store.put("erin", "hi")  # the expired one is dropped on the way
    assert store.bytes_of("erin") == 2


def test_expired_handles_go_whoever_puts_next() -> None:
    """An owner who never returns does not keep their expired values (and what those
    hold: a retired catalog) until the count bound: anyone's next put drops them."""
    clock = ManualClock()
    store: HandleStore[str] = HandleStore(
        "ticket", 10, capacity=100, per_owner=100, clock=clock, weigh=len
    )
    gone = [store.put("erin", "x" * 100) for _ in range(3)]
    clock.now = 5
    kept = store.put("erin", "y")
    clock.now = 12  # erin's first three expired, her last not yet
    assert store.bytes_of("erin") == 301
    store.put("bob", "z")
    assert store.bytes_of("erin") == 1
    assert store.get("erin", kept) == "y"
    for handle in gone:
        with pytest.raises(HandleNotFound):
            store.get("erin", handle)


def test_revise_changes_every_value_and_reweighs() -> None:
    store = refusing()
    shrunk = store.put("erin", "x" * 400)
    same = store.put("erin", "ab")
    store.revise(lambda value: value[:10] if len(value) > 10 else value)
    assert store.get("erin", shrunk) == "x" * 10 and store.get("erin", same) == "ab"
    assert store.bytes_of("erin") == 12


def test_update_changes_a_live_handle_only_within_the_bytes() -> None:
    clock = ManualClock()
    store = refusing(clock, ttl=10)
    handle = store.put("erin", "x" * 100)
    assert store.update("erin", handle, lambda value: value + "y")
    assert store.get("erin", handle) == "x" * 100 + "y" and store.bytes_of("erin") == 101
    assert not store.update("erin", handle, lambda value: value * 20)  # past 1,000 bytes
    assert not store.update("bob", handle, lambda value: "")  # not bob's
    assert store.get("erin", handle) == "x" * 100 + "y"
    clock.now = 11
    assert not store.update("erin", handle, lambda value: "z")  # expired


def test_owners_named_with_any_letters_are_told_apart() -> None:
    store: HandleStore[str] = HandleStore("ticket", 60, capacity=10)
    handle = store.put("zoë", "value")
    with pytest.raises(HandleNotFound):
        store.get("zoe", handle)
    assert store.take("zoë", handle) == "value"
    odd = store.put("\ud800sub", "value")  # a lone surrogate, as a token's subject may hold
    with pytest.raises(HandleNotFound):
        store.get("\ud801sub", odd)
    assert store.get("\ud800sub", odd) == "value"


def test_a_handle_is_taken_once_by_racing_callers() -> None:
    """Four threads take the same 2,000 handles, switching as often as CPython allows:
    every value comes out exactly once (two locked steps let about one in a hundred out
    twice)."""
    store: HandleStore[int] = HandleStore("ticket", 60, capacity=5_000, per_owner=5_000)
    handles = [store.put("erin", n) for n in range(2_000)]
    taken: list[int] = []
    start = threading.Barrier(4)

    def take_all() -> None:
        start.wait()
        for handle in handles:
            with contextlib.suppress(HandleNotFound):
                taken.append(store.take("erin", handle))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        racers = [threading.Thread(target=take_all) for _ in range(4)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
    finally:
        sys.setswitchinterval(interval)
    assert sorted(taken) == list(range(2_000))


def test_another_owners_handle_is_unknown() -> None:
    store: HandleStore[str] = HandleStore("ticket", 60, capacity=10)
    handle = store.put("erin", "value")
    with pytest.raises(HandleNotFound):
        store.get("bob", handle)


def test_a_bind_is_judged_on_live_statements_only() -> None:
    clock = ManualClock()
    store = refusing(clock, ttl=10)
    store.put("erin", "x" * 600)
    clock.now = 5
    live = store.put("erin", "x" * 300)
    clock.now = 11  # the first has expired, the second not
    store.replace("erin", live, "x" * 900)  # fits once the dead one weighs nothing
    assert store.get("erin", live) == "x" * 900 and store.bytes_of("erin") == 900
