"""``BoundCache`` keeps what binding told by statement text: bounded in entries and in the
bytes of those texts, never keeping a statement the plan cache would not keep."""

from __future__ import annotations

from gateway.query.bound_cache import BoundCache
from gateway.query.plan_cache import MAX_ENTRY_BYTES


class Snapshot:
    """A stand-in catalog snapshot (caches hold theirs weakly)."""


CATALOG = Snapshot()


def test_entries_are_bounded_by_their_texts_bytes() -> None:
    cache: BoundCache[int] = BoundCache(capacity=1000, max_bytes=10_000)
    for n in range(30):
        cache.put(CATALOG, 1, f"statement {n}", (), n, 1_000)
    assert len(cache) == 10
    assert cache.get(CATALOG, 1, "statement 29", ()) == 29
    assert cache.get(CATALOG, 1, "statement 19", ()) is None  # the oldest went first


def test_a_statement_too_large_to_plan_cache_is_not_kept() -> None:
    cache: BoundCache[int] = BoundCache()
    cache.put(CATALOG, 1, "huge", (), 1, MAX_ENTRY_BYTES + 1)
    assert cache.get(CATALOG, 1, "huge", ()) is None and len(cache) == 0
    cache.put(CATALOG, 1, "fits", (), 2, MAX_ENTRY_BYTES)
    assert cache.get(CATALOG, 1, "fits", ()) == 2


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    cache: BoundCache[int] = BoundCache(capacity=1000, max_bytes=3_000)
    for value in range(10):
        cache.put(CATALOG, 1, "same", (), value, 1_000)
    cache.put(CATALOG, 1, "other", (), 0, 1_000)
    cache.put(CATALOG, 1, "third", (), 0, 1_000)
    assert len(cache) == 3 and cache.get(CATALOG, 1, "same", ()) == 9


def test_another_catalog_or_policy_starts_afresh() -> None:
    cache: BoundCache[int] = BoundCache(capacity=1000, max_bytes=2_000)
    cache.put(CATALOG, 1, "a", (), 1, 1_500)
    cache.put(CATALOG, 2, "b", (), 2, 1_500)  # the first entry's bytes are gone with it
    assert cache.get(CATALOG, 2, "b", ()) == 2 and len(cache) == 1
    assert cache.get(CATALOG, 1, "a", ()) is None
