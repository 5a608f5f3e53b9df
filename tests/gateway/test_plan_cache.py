"""The plan cache: bounded, per principal, forgotten when the catalog or the policy changes."""

from __future__ import annotations

import pyarrow as pa

from gateway.planning.query import Query
from gateway.query.plan_cache import MAX_ENTRY_BYTES, CachedPlan, PlanCache, plan_key
from gateway.security.principal import Principal


class Snapshot:
    """A stand-in catalog snapshot (caches hold theirs weakly)."""


ALICE = Principal("alice", ("analyst_eu",), {"region": "EU"})
SCHEMA = pa.schema([("n", pa.int64())])


def cached(text: str) -> CachedPlan:
    return CachedPlan(Query(text=text, sql=f"governed {text}", display_sql=text), SCHEMA)


def test_a_plan_is_found_for_the_same_principal_catalog_and_policy():
    cache, catalog = PlanCache(), Snapshot()
    cache.put(catalog, 1, plan_key(ALICE, "SELECT 1"), cached("SELECT 1"))
    hit = cache.get(catalog, 1, plan_key(ALICE, "SELECT 1"))
    assert hit is not None and hit.query.sql == "governed SELECT 1" and hit.query.ast is None


def test_other_roles_attributes_users_or_texts_miss():
    cache, catalog = PlanCache(), Snapshot()
    cache.put(catalog, 1, plan_key(ALICE, "SELECT 1"), cached("SELECT 1"))
    for principal, text in [
        (Principal("alice", ("analyst_us",), {"region": "EU"}), "SELECT 1"),
        (Principal("alice", ("analyst_eu",), {"region": "US"}), "SELECT 1"),
        (Principal("bob", ("analyst_eu",), {"region": "EU"}), "SELECT 1"),
        (ALICE, "SELECT 1 "),
    ]:
        assert cache.get(catalog, 1, plan_key(principal, text)) is None


def test_a_new_catalog_or_policy_version_forgets_every_plan():
    cache, catalog = PlanCache(), Snapshot()
    key = plan_key(ALICE, "SELECT 1")
    cache.put(catalog, 1, key, cached("SELECT 1"))
    assert cache.get(catalog, 2, key) is None
    assert cache.get(Snapshot(), 1, key) is None
    cache.put(catalog, 2, plan_key(ALICE, "SELECT 2"), cached("SELECT 2"))
    assert cache.get(catalog, 1, key) is None and len(cache) == 1


def test_bounded_by_entries_least_recently_used_first():
    cache, catalog = PlanCache(capacity=3), Snapshot()
    for i in range(3):
        cache.put(catalog, 1, plan_key(ALICE, f"SELECT {i}"), cached(f"SELECT {i}"))
    cache.get(catalog, 1, plan_key(ALICE, "SELECT 0"))  # now the most recently used
    cache.put(catalog, 1, plan_key(ALICE, "SELECT 3"), cached("SELECT 3"))
    assert len(cache) == 3
    assert cache.get(catalog, 1, plan_key(ALICE, "SELECT 1")) is None
    assert cache.get(catalog, 1, plan_key(ALICE, "SELECT 0")) is not None


def test_bounded_by_bytes():
    cache, catalog = PlanCache(max_bytes=10_000), Snapshot()
    statements = [f"SELECT {i} -- " + "x" * 2_000 for i in range(3)]  # ~6 KB kept each
    for text in statements:
        cache.put(catalog, 1, plan_key(ALICE, text), cached(text))
    assert len(cache) == 1
    assert cache.get(catalog, 1, plan_key(ALICE, statements[-1])) is not None


def test_huge_statements_are_never_kept():
    cache, catalog = PlanCache(), Snapshot()
    huge = "SELECT 1 -- " + "x" * MAX_ENTRY_BYTES
    cache.put(catalog, 1, plan_key(ALICE, huge), cached(huge))
    assert len(cache) == 0


def test_a_wide_result_schema_weighs_its_bytes() -> None:
    """``SELECT *, *, *, ...`` costs a client two bytes of text per product-wide copy of
    the columns: a plan weighs its schema too, so the byte bound holds for such plans; a
    wide plan is still kept (only its text decides whether it is too large to keep)."""
    wide = pa.schema([(f"column_{n}", pa.int64()) for n in range(5_000)])
    assert wide.serialize().size > MAX_ENTRY_BYTES
    catalog = Snapshot()
    cache = PlanCache(max_bytes=4 * wide.serialize().size)
    texts = [f"SELECT *, {n} AS n FROM sales.orders" for n in range(10)]
    for text in texts:
        cache.put(catalog, 1, plan_key(ALICE, text), CachedPlan(Query(text=text, sql=text), wide))
    assert cache.get(catalog, 1, plan_key(ALICE, texts[-1])) is not None
    assert len(cache) <= 4
