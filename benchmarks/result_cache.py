"""Result-cache section: the 22 TPC-H queries repeated, answered from the gateway's governed
result cache (``[cache]``), against DuckDB in-process re-executing them.

A gateway of its own serves a copy of the benchmark mesh with the cache on (the other
sections' gateway keeps it off: their figures are computed results). Per query: one
first run through ADBC (a miss, which fills the cache; its result compared with DuckDB's),
then the repetitions, interleaved: the gateway through ADBC (one-off statements and a
reused cursor) and through pyarrow.flight (GetFlightInfo of the SQL as a raw command, then
DoGet: two calls, without ADBC's own), and DuckDB re-executing the query on the
baseline connection. The audit of that gateway confirms the repetitions were hits. Ratios
only: DuckDB time / gateway time (the speed-up), judged on the worst query per client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks.data import copy_with_settings
from benchmarks.markdown import NA, millis, times
from benchmarks.measure import (
    AdbcClient,
    FlightClient,
    duck_query,
    geomean,
    interleaved,
    ratio,
    same_result,
)
from benchmarks.measure import summary as summarise
from benchmarks.settings import ADMIN_USER, BenchConfig
from benchmarks.suites import Context
from benchmarks.tpch import QUERY_NUMBERS, qualified

#: The bound judged: DuckDB in-process re-executing a query / the gateway answering it
#: from its cache, for the worst of the 22 queries.
MIN_SPEEDUP = 10.0
SETTINGS = {"cache": {"enabled": True, "max_bytes": 512 * 1024**2}}


def section(ctx: Context) -> dict:
    """The section's runner (see the module docstring)."""
    config = ctx.config
    ctx.sampler.phase = "result_cache"
    mesh = copy_with_settings(ctx.mesh.mesh_dir, config.out_dir / "mesh-result-cache", SETTINGS)
    server = ctx.procs.start_gateway(mesh, ADMIN_USER, ADMIN_USER, name="gateway-result-cache")
    client = AdbcClient(server.uri, ADMIN_USER, ADMIN_USER)
    flight_client = FlightClient(server.uri, ADMIN_USER, ADMIN_USER)
    per_query: dict = {}
    try:
        for number in QUERY_NUMBERS:
            ctx.working_on(f"q{number}")
            sql = qualified(number, config.scale)
            entry: dict = {"sql": sql}
            try:
                first = client.query_new_statement(sql)  # the miss that fills the cache
                same, why = same_result(first, duck_query(ctx.plain, sql))
                entry["identical"] = {"ok": same, "detail": why}
                variants: dict[str, Callable[[], object]] = {
                    "cached": partial(client.query_new_statement, sql),
                    "cached_reused": partial(client.query, sql),
                    "cached_flight": partial(flight_client.query, sql),
                    "duckdb": partial(duck_query, ctx.plain, sql),
                }
                timings = interleaved(variants, config.repetitions, warmup=1)
                for name, values in timings.items():
                    entry[name] = summarise(values)
                entry["speedup"] = ratio(entry["duckdb"]["median"], entry["cached"]["median"])
                entry["speedup_reused"] = ratio(
                    entry["duckdb"]["median"], entry["cached_reused"]["median"]
                )
                entry["speedup_flight"] = ratio(
                    entry["duckdb"]["median"], entry["cached_flight"]["median"]
                )
            except Exception as exc:  # noqa: BLE001 - one failing query must not sink the run
                entry["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                ctx.log(f"result cache q{number}: {entry['error']}")
                client.close()
                client = AdbcClient(server.uri, ADMIN_USER, ADMIN_USER)
            per_query[str(number)] = entry
            ctx.advance(1)
    finally:
        client.close()
        flight_client.close()
        ctx.procs.stop(server)
    return _result(per_query, _audited_cache(mesh), config)


def _audited_cache(mesh: Path) -> dict[str, int]:
    """How the cached gateway's audit marks its queries' ends: hit, miss, none."""
    counts = {"hit": 0, "miss": 0, "none": 0}
    for path in sorted((mesh / ".meshgate" / "audit").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            if record.get("event") == "query_end":
                counts[record.get("cache") or "none"] += 1
    return counts


def _result(per_query: dict, audit: dict[str, int], config: BenchConfig) -> dict:
    ok = {n: e for n, e in per_query.items() if "error" not in e}
    speedups = {n: e["speedup"] for n, e in ok.items() if e.get("speedup") is not None}
    worst = min(speedups, key=lambda n: speedups[n]) if speedups else None
    flight = {n: e["speedup_flight"] for n, e in ok.items() if e.get("speedup_flight") is not None}
    worst_flight = min(flight, key=lambda n: flight[n]) if flight else None
    # every timed gateway call after the first of each query: warm-up and repetitions,
    # one-off, reused cursor and pyarrow.flight
    expected_hits = len(ok) * 3 * (config.repetitions + 1)
    return {
        "queries": per_query,
        "failed": [n for n, e in per_query.items() if "error" in e],
        "all_identical": bool(ok) and all(e["identical"]["ok"] for e in ok.values()),
        "geomean_speedup": geomean(speedups.values()),
        "min_speedup": speedups[worst] if worst else None,
        "min_speedup_query": worst,
        "geomean_speedup_reused": geomean(e.get("speedup_reused") for e in ok.values()),
        "min_speedup_flight": flight[worst_flight] if worst_flight else None,
        "min_speedup_flight_query": worst_flight,
        "geomean_speedup_flight": geomean(flight.values()),
        "audit": audit,
        "hits_expected": expected_hits,
        "all_hits": audit["hit"] >= expected_hits,
    }


def steps(config: BenchConfig) -> int:
    return len(QUERY_NUMBERS)


def markdown(result: dict, config: dict) -> list[str]:
    """The section's body: the speed-up per query, and what the audit saw."""
    audit = result.get("audit", {})
    lines = [
        (
            f"Each TPC-H query run once through ADBC (a miss: computed, its result compared "
            f"with DuckDB's), then repeated: the gateway answers from its result cache "
            f"(`[cache] enabled = true`, a gateway of its own) while DuckDB in-process "
            f"re-executes the query. Speed-up = DuckDB time / gateway time (one-off ADBC "
            f"statements): geomean {times(result.get('geomean_speedup'), 1)}, worst "
            f"{times(result.get('min_speedup'), 1)} (q{result.get('min_speedup_query')}); on a "
            f"reused cursor: geomean {times(result.get('geomean_speedup_reused'), 1)}; through "
            f"pyarrow.flight (GetFlightInfo + DoGet): geomean "
            f"{times(result.get('geomean_speedup_flight'), 1)}, worst "
            f"{times(result.get('min_speedup_flight'), 1)} "
            f"(q{result.get('min_speedup_flight_query')}). Results "
            f"identical: {result.get('all_identical')}. The gateway's audit: "
            f"{audit.get('hit', 0)} hits, {audit.get('miss', 0)} misses (at least "
            f"{result.get('hits_expected')} hits expected: {result.get('all_hits')})."
        ),
        "",
        "| q | DuckDB re-executing | gateway, cached (one-off) | speed-up | gateway, cached (reused cursor) | speed-up | gateway, cached (pyarrow.flight) | speed-up | identical |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, e in result.get("queries", {}).items():
        if "error" in e:
            lines.append(f"| q{number} | error: {e['error']} | | | | | | | |")
            continue
        lines.append(
            f"| q{number} | {millis(e['duckdb']['median'])} | {millis(e['cached']['median'])} | "
            f"{times(e.get('speedup'), 1)} | {millis(e['cached_reused']['median'])} | "
            f"{times(e.get('speedup_reused'), 1)} | {millis(e['cached_flight']['median'])} | "
            f"{times(e.get('speedup_flight'), 1)} | "
            f"{'yes' if e['identical']['ok'] else 'no: ' + e['identical']['detail']} |"
        )
    if not result.get("queries"):
        lines.append(f"| {NA} | | | | | | | | |")
    return lines
