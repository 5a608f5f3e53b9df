"""Load: N concurrent ADBC clients for a fixed duration over a mixed workload.

Every answer is checked against DuckDB run directly on the same files with the demo rules
written out by hand (filters and masks: ``support.oracle``), precomputed once; every
attempt must be in the audit log exactly once (``query_begin`` for an allowed query,
``query_refused`` for a denied or invalid one) and every began query must have ended
``ok``; the server log must hold no ``internal_error``; the server's RSS is sampled every
second, printed as a curve, and must not grow more than ``RSS_GROWTH_LIMIT`` after the
warm-up.

The workload, per client (each client is one ADBC connection as one demo user):
point lookups (literal and bound parameters, i.e. prepared statements), aggregates and a
join, window functions, larger scans (20k-90k rows), denied queries (dave, carol, alice
outside her view) and bad SQL.

Duration and concurrency come from the environment:

    MESHGATE_LOAD_SECONDS   default 30  (CI)
    MESHGATE_LOAD_CLIENTS   default 32

The 5-minute soak of issue 6:

    MESHGATE_LOAD_SECONDS=300 .venv/bin/python -m pytest tests/load -s

Loopback only; the gateway is private to this test (its own mesh copy, so the audit
counts are exact) and is killed at the end.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pytest
from support.logs import audit_records, log_records
from support.memory import MB
from support.oracle import Oracle
from support.servers import private_gateway

pytestmark = pytest.mark.slow

DURATION = float(os.environ.get("MESHGATE_LOAD_SECONDS", "30"))
CLIENTS = int(os.environ.get("MESHGATE_LOAD_CLIENTS", "32"))
RSS_GROWTH_LIMIT = 300 * MB
USERS = ("alice", "bob", "carol", "dave", "erin")


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Query:
    kind: str
    user: str
    sql: str
    params: tuple = ()
    error: str | None = None  # expected refusal (substring); None: an answer is expected
    weight: int = 1

    @property
    def allowed(self) -> bool:
        return self.error is None


def workload() -> list[Query]:
    rng = random.Random(6)
    queries: list[Query] = []
    order_ids = rng.sample(range(1, 200_001), 24)
    customer_ids = rng.sample(range(1, 20_001), 12)
    shipment_ids = rng.sample(range(1, 150_001), 12)
    for user in ("alice", "bob", "erin"):
        for i, oid in enumerate(order_ids):
            if i % 2:
                queries.append(
                    Query("point", user, "SELECT * FROM sales.orders WHERE order_id = ?", (oid,))
                )
            else:
                queries.append(
                    Query("point", user, f"SELECT * FROM sales.orders WHERE order_id = {oid}")
                )
    for user in ("alice", "bob", "carol"):
        for cid in customer_ids:
            queries.append(
                Query("point", user, "SELECT * FROM crm.customers WHERE customer_id = ?", (cid,))
            )
    for user in ("bob", "erin"):
        for sid in shipment_ids:
            queries.append(
                Query(
                    "point", user, "SELECT * FROM logistics.shipments WHERE shipment_id = ?", (sid,)
                )
            )

    aggregate = "SELECT region, count(*) AS n, sum(amount) AS total FROM sales.orders GROUP BY region ORDER BY region"
    for user in ("alice", "bob", "erin"):
        queries.append(Query("aggregate", user, aggregate, weight=4))
    queries += [
        Query(
            "aggregate",
            "alice",
            "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM sales.orders o "
            "JOIN crm.customers c USING (customer_id) GROUP BY c.region ORDER BY c.region",
            weight=4,
        ),
        Query(
            "aggregate",
            "bob",
            "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM sales.orders o "
            "JOIN crm.customers c USING (customer_id) GROUP BY c.region ORDER BY c.region",
            weight=4,
        ),
        Query(
            "aggregate",
            "carol",
            "SELECT region, count(*) AS n, count(DISTINCT email) AS emails, min(email) AS first "
            "FROM crm.customers GROUP BY region ORDER BY region",
            weight=6,
        ),
        Query(
            "aggregate",
            "erin",
            "SELECT carrier, region, count(*) AS n, min(shipped_at) AS first FROM logistics.shipments "
            "GROUP BY ALL ORDER BY ALL",
            weight=4,
        ),
        Query(
            "aggregate",
            "erin",
            "SELECT s.carrier, count(*) AS n, sum(o.amount) AS total FROM logistics.shipments s "
            "JOIN sales.orders o USING (order_id) GROUP BY ALL ORDER BY ALL",
            weight=3,
        ),
        Query(
            "aggregate",
            "alice",
            "SELECT email, ssn FROM crm.customers WHERE customer_id BETWEEN ? AND ? ORDER BY customer_id",
            (100, 130),
            weight=4,
        ),
        Query(
            "aggregate",
            "alice",
            "SELECT order_id, amount, rank() OVER (ORDER BY amount DESC, order_id) AS r "
            "FROM sales.orders ORDER BY r LIMIT 20",
            weight=3,
        ),
        Query(
            "aggregate",
            "carol",
            "SELECT email, count(*) OVER (PARTITION BY region) AS peers FROM crm.customers "
            "ORDER BY customer_id LIMIT 50",
            weight=3,
        ),
        Query("scan", "alice", "SELECT * FROM sales.orders ORDER BY order_id", weight=2),
        Query(
            "scan",
            "erin",
            "SELECT * FROM logistics.shipments WHERE region = 'EU' ORDER BY shipment_id",
            weight=2,
        ),
        Query("scan", "bob", "SELECT * FROM crm.customers ORDER BY customer_id", weight=2),
        Query("scan", "carol", "SELECT * FROM crm.customers ORDER BY customer_id", weight=2),
        Query(
            "scan",
            "erin",
            "SELECT * FROM sales.orders WHERE region = 'US' ORDER BY order_id",
            weight=2,
        ),
    ]
    unknown = "unknown product"
    queries += [
        Query("denied", "dave", "SELECT * FROM sales.orders LIMIT 1", error=unknown, weight=10),
        Query("denied", "dave", "SELECT count(*) FROM crm.customers", error=unknown, weight=10),
        Query("denied", "carol", "SELECT count(*) FROM sales.orders", error=unknown, weight=8),
        Query("denied", "carol", "SELECT ssn FROM crm.customers LIMIT 1", error="ssn", weight=8),
        Query(
            "denied", "alice", "SELECT * FROM logistics.shipments LIMIT 1", error=unknown, weight=8
        ),
        Query("denied", "erin", "SELECT email FROM crm.customers", error=unknown, weight=8),
        Query("bad_sql", "dave", "SELEC 1", error="syntax", weight=8),
        Query("bad_sql", "bob", "SELECT * FROM", error="syntax", weight=8),
        Query("bad_sql", "carol", "SELECT 1; SELECT 2", error="statements", weight=8),
        Query("bad_sql", "erin", "DROP TABLE sales.orders", error="read-only", weight=8),
        Query("bad_sql", "alice", "SELECT nosuchfunction(1)", error="nosuchfunction", weight=8),
    ]
    return queries


# --------------------------------------------------------------------------- clients


@dataclass
class Tally:
    attempts: Counter = field(default_factory=Counter)  # kind -> attempts
    allowed: int = 0
    refused: int = 0
    wrong: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    latency: dict = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)


def _same(actual: pa.Table, expected: pa.Table) -> str | None:
    """Why ``actual`` differs from ``expected`` (names, types, values), or None."""
    if actual.column_names != expected.column_names:
        return f"columns {actual.column_names} != {expected.column_names}"
    if actual.num_rows != expected.num_rows:
        return f"{actual.num_rows} rows != {expected.num_rows}"
    for name, left, right in zip(
        actual.column_names, actual.columns, expected.columns, strict=True
    ):
        if left.type != right.type:
            return f"column {name}: type {left.type} != {right.type}"
        if not left.equals(right):
            lv, rv = left.to_pylist(), right.to_pylist()
            i = next(i for i, (a, b) in enumerate(zip(lv, rv, strict=True)) if a != b)
            return f"column {name} row {i}: {lv[i]!r} != {rv[i]!r}"
    return None


def connect(uri: str, user: str):
    return flightsql.connect(
        uri,
        db_kwargs={
            "username": user,
            "password": user,
            adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: "120",
            adbc_driver_flightsql.DatabaseOptions.TIMEOUT_FETCH.value: "120",
        },
        autocommit=True,
    )


def client_loop(
    uri: str,
    user: str,
    queries: list[Query],
    expected: dict,
    tally: Tally,
    deadline: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    weights = [q.weight for q in queries]
    conn = connect(uri, user)
    try:
        while time.monotonic() < deadline:
            query = rng.choices(queries, weights)[0]
            cur = conn.cursor()
            started = time.perf_counter()
            try:
                cur.execute(query.sql, query.params or None)
                table = cur.fetch_arrow_table()
                error = None
            except Exception as exc:  # noqa: BLE001 - classified below
                table, error = None, exc
            finally:
                cur.close()
            elapsed = time.perf_counter() - started
            with tally.lock:
                tally.attempts[query.kind] += 1
                tally.latency[query.kind].append(elapsed)
                if query.allowed:
                    tally.allowed += 1
                    if error is not None:
                        tally.unexpected.append((query, repr(error)[:300]))
                    else:
                        why = _same(table, expected[query])
                        if why:
                            tally.wrong.append((query, why))
                else:
                    tally.refused += 1
                    if error is None:
                        tally.wrong.append(
                            (query, f"answered {table.num_rows} rows instead of refusing")
                        )
                    elif query.error.lower() not in str(error).lower():
                        tally.unexpected.append((query, str(error)[:300]))
    finally:
        conn.close()


# --------------------------------------------------------------------------- the test


class _Probe:
    """RSS and CPU (percent of one core since the last sample) of the server and this process."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.server = psutil.Process(pid)
        self.me = psutil.Process()
        self.server.cpu_percent()
        self.me.cpu_percent()

    def sample(self) -> tuple[int, float, float]:
        return self.server.memory_info().rss, self.server.cpu_percent(), self.me.cpu_percent()


def test_mixed_workload_under_load(
    demo_mesh: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    queries = workload()
    with private_gateway(
        demo_mesh,
        tmp_path,
        gateway={
            "max_concurrent_queries_per_user": 256,
            "max_queries_per_minute_per_user": 10_000_000,
        },
    ) as gateway:
        oracle = Oracle(gateway.mesh)
        expected = {q: oracle.run(q.user, q.sql, q.params) for q in queries if q.allowed}
        oracle.close()
        audit_before = len(audit_records(gateway.mesh))

        by_user = {user: [q for q in queries if q.user == user] for user in USERS}
        tally = Tally()
        deadline = time.monotonic() + DURATION
        threads = [
            threading.Thread(
                target=client_loop,
                args=(
                    gateway.uri,
                    USERS[i % len(USERS)],
                    by_user[USERS[i % len(USERS)]],
                    expected,
                    tally,
                    deadline,
                    i,
                ),
                name=f"load-{i}",
            )
            for i in range(CLIENTS)
        ]
        curve: list[
            tuple[float, int, int, float, float]
        ] = []  # (s, rss, attempts, server cpu, client cpu)
        probe = _Probe(gateway.pid)
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            with tally.lock:
                done = sum(tally.attempts.values())
            rss, server_cpu, client_cpu = probe.sample()
            curve.append((time.monotonic() - started, rss, done, server_cpu, client_cpu))
            time.sleep(1.0)
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert gateway.alive(), "the gateway died under load"

        records = audit_records(gateway.mesh)[audit_before:]
        log = gateway.log()
        internal = [
            e
            for e in log_records(log)
            if e.get("event") == "internal_error" or e.get("level") == "error"
        ]

    # ------------------------------------------------------------------ report
    total = sum(tally.attempts.values())
    warmup = min(10.0, DURATION / 3)
    after = [rss for t, rss, *_ in curve if t >= warmup]
    lines = [
        (
            f"load: {CLIENTS} ADBC clients, {DURATION:g} s, {total} queries ({total / elapsed:.0f}/s), "
            f"{len(tally.wrong)} wrong, {len(tally.unexpected)} unexpected errors"
        ),
    ]
    for kind in sorted(tally.attempts):
        lat = sorted(tally.latency[kind])
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
        lines.append(
            f"  {kind:10s} {tally.attempts[kind]:6d} queries  p50 {statistics.median(lat) * 1000:7.1f} ms  "
            f"p95 {p95 * 1000:7.1f} ms  max {lat[-1] * 1000:7.1f} ms"
        )
    lines.append(f"server RSS (MB) every second; warm-up {warmup:g} s:")
    lines += [
        f"  t={t:5.1f}s  rss={rss / MB:7.1f} MB  queries={n:6d}  cpu server {scpu:4.0f}% clients {ccpu:4.0f}%"
        for t, rss, n, scpu, ccpu in curve
    ]
    if after:
        measured = [(t, rss, n) for t, rss, n, *_ in curve if t >= warmup]
        queries_after = max(1, measured[-1][2] - measured[0][2])
        slope = (measured[-1][1] - measured[0][1]) / queries_after
        lines.append(
            f"  after warm-up: min {min(after) / MB:.1f} MB, max {max(after) / MB:.1f} MB, "
            f"growth {(max(after) - after[0]) / MB:+.1f} MB "
            f"({slope / 1024:+.1f} KB per query over {queries_after} queries)"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))

    # ------------------------------------------------------------------ assertions
    assert total > CLIENTS, "the clients barely ran"
    assert not tally.wrong, f"{len(tally.wrong)} wrong results, first: {tally.wrong[:3]}"
    assert not tally.unexpected, (
        f"{len(tally.unexpected)} unexpected errors, first: {tally.unexpected[:3]}"
    )

    begins = [r for r in records if r["event"] == "query_begin"]
    refusals = [r for r in records if r["event"] == "query_refused"]
    ends = [r for r in records if r["event"] == "query_end"]
    assert len(begins) == tally.allowed, (
        f"{len(begins)} query_begin records for {tally.allowed} allowed queries"
    )
    assert len(refusals) == tally.refused, (
        f"{len(refusals)} query_refused records for {tally.refused} refused queries"
    )
    assert {r["query_id"] for r in ends} == {r["query_id"] for r in begins}, (
        "a began query has no end record"
    )
    outcomes = Counter(r["outcome"] for r in ends)
    assert outcomes == Counter({"ok": len(ends)}), f"query_end outcomes: {outcomes}"
    assert not internal, f"server errors in the log: {internal[:3]}"
    if after:
        assert max(after) - after[0] < RSS_GROWTH_LIMIT, (
            f"server RSS grew by {(max(after) - after[0]) / MB:.0f} MB after the warm-up"
        )
