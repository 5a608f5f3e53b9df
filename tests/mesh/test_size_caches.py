"""The federation's caches of sizes and row estimates: kept a minute by an injected clock,
bounded in entries (split plans also in bytes), and measured once at a time per product."""

from __future__ import annotations

import pytest
from support.clocks import ManualClock

from gateway.mesh import sizes
from gateway.mesh.sizes import EstimateCache, SizeCache


def test_an_estimate_is_kept_a_minute_then_planned_again() -> None:
    clock, planned = ManualClock(), []

    def rows_of(sql: str) -> int | None:
        planned.append(sql)
        return len(planned) * 10

    rows = EstimateCache(clock).cached(rows_of)
    assert rows("SELECT 1") == 10
    clock.now += sizes._ESTIMATE_SECONDS - 1
    assert rows("SELECT 1") == 10
    assert planned == ["SELECT 1"]
    clock.now += 1
    assert rows("SELECT 1") == 20
    assert planned == ["SELECT 1", "SELECT 1"]


def test_an_unknown_estimate_is_kept_too() -> None:
    planned: list[str] = []

    def rows_of(sql: str) -> int | None:
        planned.append(sql)
        return None

    rows = EstimateCache(ManualClock()).cached(rows_of)
    assert rows("q") is None and rows("q") is None
    assert planned == ["q"]


def test_estimates_are_bounded() -> None:
    cache = EstimateCache(ManualClock())
    rows = cache.cached(lambda sql: 1)
    for n in range(sizes._ESTIMATE_ENTRIES + 5):
        rows(f"SELECT {n}")
    assert len(cache._rows) <= sizes._ESTIMATE_ENTRIES


def test_a_size_expires_after_a_minute_and_is_measured_once_at_a_time() -> None:
    clock = ManualClock()
    cache = SizeCache(clock)
    key = ("sales", "SELECT * FROM orders")
    assert cache.claim(key)
    assert not cache.claim(key)  # being measured
    cache.put(key, 4096)
    cache.release(key)
    assert cache.get(key) == 4096 and not cache.claim(key)  # known
    clock.now += sizes._SIZE_CACHE_SECONDS
    assert cache.get(key) is None
    assert cache.claim(key)  # stale: measured again


def test_sizes_measured_at_once_are_bounded() -> None:
    cache = SizeCache(ManualClock())
    keys = [("sales", f"q{n}") for n in range(sizes._SIZE_MEASURING + 2)]
    claimed = [cache.claim(key) for key in keys]
    assert claimed == [True] * sizes._SIZE_MEASURING + [False, False]
    cache.release(keys[0])
    assert cache.claim(keys[-1])


def test_a_long_fragment_is_estimated_each_time_not_kept() -> None:
    planned: list[str] = []
    cache = EstimateCache(ManualClock())
    rows = cache.cached(lambda sql: planned.append(sql) or 7)
    long_sql = "SELECT '" + "x" * sizes._ESTIMATE_SQL_BYTES + "'"
    assert rows(long_sql) == 7 and rows(long_sql) == 7
    assert len(planned) == 2 and not cache._rows


def test_split_plans_of_long_statements_are_not_kept() -> None:
    from sqlglot import parse_one

    from gateway.config import NodesSettings
    from gateway.mesh import federation

    nodes = federation.NodeDirectory(
        NodesSettings(ticket_key="ab" * 32, domains={"sales": ("grpc://127.0.0.1:1",)})
    )
    types = {"sales.orders": {"order_id": "INTEGER"}}

    def split(sql: str) -> object:
        return federation.split_fragments(parse_one(sql, read="duckdb"), types, nodes)

    short = 'SELECT "order_id" FROM "memory"."sales"."orders" AS "o"'
    assert split(short) is split(short) and len(nodes.plans) == 1
    long_sql = f'{short} WHERE "order_id" IN ({", ".join(str(n) for n in range(20_000))})'
    first = split(long_sql)
    assert first.final_sql == split(long_sql).final_sql
    assert len(nodes.plans) == 1  # the long statement's plan was split each time, not kept


def test_split_plans_are_bounded_by_the_sql_they_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlglot import parse_one

    from gateway.config import NodesSettings
    from gateway.mesh import federation

    monkeypatch.setattr(federation, "_PLANS_BYTES", 40_000)
    nodes = federation.NodeDirectory(
        NodesSettings(ticket_key="ab" * 32, domains={"sales": ("grpc://127.0.0.1:1",)})
    )
    types = {"sales.orders": {"order_id": "INTEGER"}}
    base = 'SELECT "order_id" FROM "memory"."sales"."orders" AS "o" WHERE "order_id" IN '
    statements = [
        base + "(" + ", ".join(str(n) for n in range(start, start + 400)) + ")"
        for start in range(0, 30 * 400, 400)
    ]  # each well under the 64 KiB a statement may have to be kept at all
    plans = [
        federation.split_fragments(parse_one(sql, read="duckdb"), types, nodes)
        for sql in statements
    ]

    assert 1 < len(nodes.plans) < len(statements)
    assert 0 < nodes.plans.weight <= 40_000
    last = parse_one(statements[-1], read="duckdb")
    assert federation.split_fragments(last, types, nodes) is plans[-1]  # kept: recent
    first = parse_one(statements[0], read="duckdb")
    again = federation.split_fragments(first, types, nodes)
    assert again is not plans[0] and again.final_sql == plans[0].final_sql  # dropped: oldest
