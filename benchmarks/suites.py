"""The runners of sections 1-6 (see sections.py). Each returns a JSON-ready dict.

Timings are milliseconds unless a key says otherwise; every figure is the median (with
min and max) of the repetitions, measured interleaved with its baseline after a warm-up.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from benchmarks.data import Mesh, find_executable
from benchmarks.measure import (
    AdbcClient,
    FlightClient,
    duck_drain,
    duck_query,
    geomean,
    interleaved,
    paired_ratio,
    percentile,
    ratio,
    same_result,
    summary,
    timed,
    with_throughput,
)
from benchmarks.procs import REPO, Processes, RssSampler, Server
from benchmarks.settings import ADMIN_USER, ANALYST_USER, BenchConfig
from benchmarks.tpch import QUERY_NUMBERS, TABLE_DOMAIN, qualified, raw_query

#: An existing order (TPC-H order keys use the first 8 of every 32).
POINT_KEY = 35
SELECT_ONE = "SELECT 1"
LARGE_QUERY = "SELECT * FROM orders.lineitem"
#: TPC-H queries of the concurrency mix (between runs of point lookups).
MIX_QUERIES = (6, 14, 12)
MIX_LOOKUPS = 8


def point_lookup(key: int = POINT_KEY, qualified_name: bool = True) -> str:
    table = "orders.orders" if qualified_name else "orders"
    return f"SELECT * FROM {table} WHERE o_orderkey = {int(key)}"


def order_key(index: int, scale: float) -> int:
    """The ``index``-th of a spread of existing order keys at ``scale`` (TPC-H uses the
    first 8 keys of every 32)."""
    groups = max(1, int(1_500_000 * scale) // 8 - 1)  # order-key groups of 32 holding 8 keys
    return 32 * ((index * 7919) % groups) + 1 + index % 7


@dataclass
class Context:
    """What every section needs."""

    config: BenchConfig
    mesh: Mesh
    procs: Processes
    gateway: Server
    sampler: RssSampler
    plain: duckdb.DuckDBPyConnection
    governed: duckdb.DuckDBPyConnection
    batch_rows: int
    log: Callable[[str], None]
    #: The bare pyarrow.flight server streaming DuckDB readers (transport baseline).
    bare: Server | None = None
    #: The bare Flight SQL server over the same DuckDB (what ADBC costs without a gateway).
    bare_sql: Server | None = None
    #: The same with the gateway's DuckDB path (``bare_server --submit``).
    bare_sql_submit: Server | None = None
    advance: Callable[[float], None] = lambda amount: None
    #: names what the section measures now (``q7``), shown beside its progress bar
    working_on: Callable[[str], None] = lambda what: None
    results: dict = field(default_factory=dict)

    def adbc(self, user: str = ADMIN_USER) -> AdbcClient:
        return AdbcClient(self.gateway.uri, user, user)

    def flight(self, user: str = ADMIN_USER) -> FlightClient:
        return FlightClient(self.gateway.uri, user, user)

    def bare_adbc(self) -> AdbcClient | None:
        """An ADBC client of the bare Flight SQL server, if it runs."""
        return AdbcClient(self.bare_sql.uri) if self.bare_sql is not None else None

    def bare_submit_adbc(self) -> AdbcClient | None:
        """An ADBC client of the bare Flight SQL server on the gateway's DuckDB path."""
        server = self.bare_sql_submit
        return AdbcClient(server.uri) if server is not None else None


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


# --------------------------------------------------------------------------- 1. small queries


def small_queries(ctx: Context) -> dict:
    """SELECT 1 and a point lookup: ADBC and pyarrow.flight vs DuckDB in-process."""
    config = ctx.config
    ctx.sampler.phase = "small_queries"
    adbc, fl = ctx.adbc(), ctx.flight()
    bare = FlightClient(ctx.bare.uri) if ctx.bare is not None else None
    bare_adbc = ctx.bare_adbc()
    submit_adbc = ctx.bare_submit_adbc()
    queries = {"select_1": SELECT_ONE, "point_lookup": point_lookup()}
    out: dict = {
        "calls_per_repetition": config.small_query_calls,
        "repetitions": config.small_query_repetitions,
        "queries": {},
    }
    try:
        for name, sql in queries.items():
            ctx.working_on(name)
            variants = {
                "duckdb": lambda sql=sql: duck_query(ctx.plain, sql),
                "adbc": lambda sql=sql: adbc.query(sql),
            }
            if bare_adbc is not None:  # each floor's block beside the gateway's
                variants["bare_sql_adbc"] = lambda sql=sql: bare_adbc.query(sql)
            if submit_adbc is not None:
                variants["bare_submit_adbc"] = lambda sql=sql: submit_adbc.query(sql)
            variants["adbc_new_statement"] = lambda sql=sql: adbc.query_new_statement(sql)
            if bare_adbc is not None:
                variants["bare_sql_adbc_new_statement"] = lambda sql=sql: (
                    bare_adbc.query_new_statement(sql)
                )
            if submit_adbc is not None:
                variants["bare_submit_adbc_new_statement"] = lambda sql=sql: (
                    submit_adbc.query_new_statement(sql)
                )
            variants["flight"] = lambda sql=sql: fl.query(sql)
            variants["flight_one_call"] = lambda sql=sql: fl.query_one_call(sql)
            if bare is not None:
                variants["bare_flight"] = lambda sql=sql: bare.query(sql)
                variants["bare_flight_one_call"] = lambda sql=sql: bare.query_one_call(sql)
            calls: dict[str, list[float]] = {}
            timings = interleaved(
                variants,
                config.small_query_repetitions,
                calls=config.small_query_calls,
                warmup=3,
                raw=calls,
                alternate=True,
            )
            entry = {"sql": sql, **{k: summary(v) for k, v in timings.items()}}
            entry["calls_ms"] = {k: [round(v, 4) for v in values] for k, values in calls.items()}
            entry["p99_ms"] = {k: percentile(values, 99) for k, values in calls.items()}
            base = entry["duckdb"]["median"]
            for client in variants:
                if client != "duckdb":
                    entry[f"{client}_ratio"] = ratio(entry[client]["median"], base)
                    entry[f"{client}_overhead_ms"] = entry[client]["median"] - base
            if bare_adbc is not None:  # the gateway against the bare Flight SQL floor
                entry["adbc_vs_bare_sql"] = paired_ratio(timings["adbc"], timings["bare_sql_adbc"])
                entry["adbc_new_statement_vs_bare_sql"] = paired_ratio(
                    timings["adbc_new_statement"], timings["bare_sql_adbc_new_statement"]
                )
            if submit_adbc is not None:  # ... and against the floor on the gateway's path
                entry["adbc_vs_bare_submit"] = paired_ratio(
                    timings["adbc"], timings["bare_submit_adbc"]
                )
                entry["adbc_new_statement_vs_bare_submit"] = paired_ratio(
                    timings["adbc_new_statement"], timings["bare_submit_adbc_new_statement"]
                )
            out["queries"][name] = entry
            ctx.advance(1)
    finally:
        adbc.close()
        fl.close()
        if bare is not None:
            bare.close()
        for floor in (bare_adbc, submit_adbc):
            if floor is not None:
                floor.close()
    return out


# --------------------------------------------------------------------------- 2. TPC-H


def tpch(ctx: Context) -> dict:
    """The 22 queries: gateway (ADBC) vs DuckDB, without and with the policy set."""
    config = ctx.config
    ctx.sampler.phase = "tpch"
    bench, analyst = ctx.adbc(ADMIN_USER), ctx.adbc(ANALYST_USER)
    bare_adbc = ctx.bare_adbc()
    per_query: dict = {}
    try:
        for number in QUERY_NUMBERS:
            ctx.working_on(f"q{number}")
            sql = qualified(number, config.scale)
            # A one-off statement per execution, as an analyst running a query gets it;
            # "gateway_prepared" re-executes the statement the cursor already prepared.
            variants = {
                "gateway": lambda sql=sql, bench=bench: bench.query_new_statement(sql),
                "duckdb": lambda sql=sql: duck_query(ctx.plain, sql),
                "gateway_policy": lambda sql=sql, analyst=analyst: analyst.query_new_statement(sql),
                "duckdb_policy": lambda sql=sql: duck_query(ctx.governed, sql),
                "gateway_prepared": lambda sql=sql, bench=bench: bench.query(sql),
            }
            if bare_adbc is not None:  # the same one-off statements, no gateway
                variants["bare_sql"] = lambda sql=sql: bare_adbc.query_new_statement(sql)
            entry: dict = {"sql": sql}
            try:
                # Warm-up round, whose results are compared.
                tables = {name: action() for name, action in variants.items()}
                entry["rows"] = {name: t.num_rows for name, t in tables.items()}
                same, why = same_result(tables["gateway"], tables["duckdb"])
                entry["identical"] = {"ok": same, "detail": why}
                same, why = same_result(tables["gateway_policy"], tables["duckdb_policy"])
                entry["identical_policy"] = {"ok": same, "detail": why}
                # gateway beside DuckDB, and policy beside hand-written, in both orders
                timings = interleaved(variants, config.repetitions, warmup=0, alternate=True)
                for name, values in timings.items():
                    entry[name] = summary(values)
                entry["ratio"] = paired_ratio(timings["gateway"], timings["duckdb"])
                entry["ratio_policy"] = paired_ratio(
                    timings["gateway_policy"], timings["duckdb_policy"]
                )
                entry["ratio_of_medians"] = ratio(
                    entry["gateway"]["median"], entry["duckdb"]["median"]
                )
                entry["ratio_prepared"] = ratio(
                    entry["gateway_prepared"]["median"], entry["duckdb"]["median"]
                )
                if "bare_sql" in entry:
                    entry["ratio_bare_sql"] = ratio(
                        entry["bare_sql"]["median"], entry["duckdb"]["median"]
                    )
                    entry["gateway_vs_bare_sql"] = ratio(
                        entry["gateway"]["median"], entry["bare_sql"]["median"]
                    )
            except Exception as exc:  # noqa: BLE001 - one failing query must not sink the run
                entry["error"] = _error_text(exc)
                ctx.log(f"TPC-H q{number}: {entry['error']}")
                bench.close()
                analyst.close()
                bench, analyst = ctx.adbc(ADMIN_USER), ctx.adbc(ANALYST_USER)
            per_query[str(number)] = entry
            ctx.advance(1)
    finally:
        bench.close()
        analyst.close()
        if bare_adbc is not None:
            bare_adbc.close()
    ok = [e for e in per_query.values() if "error" not in e]
    with_bare = [e for e in ok if "ratio_bare_sql" in e]
    sum_gw_policy = sum(e["gateway_policy"]["median"] for e in ok)
    sum_duck_policy = sum(e["duckdb_policy"]["median"] for e in ok)
    worst, worst_query = _worst(per_query, "ratio")
    worst_policy, worst_policy_query = _worst(per_query, "ratio_policy")
    return {
        "queries": per_query,
        "failed": [n for n, e in per_query.items() if "error" in e],
        "geomean_ratio": geomean(e["ratio"] for e in ok),
        "geomean_ratio_of_medians": geomean(e["ratio_of_medians"] for e in ok),
        "max_ratio": worst,
        "max_ratio_query": worst_query,
        "geomean_ratio_prepared": geomean(e["ratio_prepared"] for e in ok),
        "geomean_ratio_bare_sql": geomean(e["ratio_bare_sql"] for e in with_bare)
        if with_bare
        else None,
        "max_ratio_bare_sql": _worst(per_query, "ratio_bare_sql")[0],
        "geomean_gateway_vs_bare_sql": geomean(e["gateway_vs_bare_sql"] for e in with_bare)
        if with_bare
        else None,
        "max_ratio_prepared": _worst(per_query, "ratio_prepared")[0],
        "geomean_ratio_policy": geomean(e["ratio_policy"] for e in ok),
        "sum_ratio_policy": ratio(sum_gw_policy, sum_duck_policy),
        "max_ratio_policy": worst_policy,
        "max_ratio_policy_query": worst_policy_query,
        "all_identical": len(ok) == len(per_query)
        and all(e["identical"]["ok"] and e["identical_policy"]["ok"] for e in ok),
        "not_identical": [
            n
            for n, e in per_query.items()
            if "error" not in e and not (e["identical"]["ok"] and e["identical_policy"]["ok"])
        ],
        "sum_gateway_ms": sum(e["gateway"]["median"] for e in ok),
        "sum_duckdb_ms": sum(e["duckdb"]["median"] for e in ok),
        "sum_gateway_policy_ms": sum_gw_policy,
        "sum_duckdb_policy_ms": sum_duck_policy,
    }


def _worst(per_query: dict, key: str) -> tuple[float | None, str | None]:
    """The largest ``key`` over the queries that ran, and which query it was."""
    candidates = [
        (e[key], n) for n, e in per_query.items() if "error" not in e and e.get(key) is not None
    ]
    value, number = max(candidates, default=(None, None))
    return value, number


# --------------------------------------------------------------------------- 3. large result


def large_result(ctx: Context) -> dict:
    """SELECT * FROM orders.lineitem: gateway vs DuckDB vs bare Flight servers, MB/s."""
    config = ctx.config
    ctx.sampler.phase = "large_result_setup"
    settings = dict(
        mesh_dir=ctx.mesh.mesh_dir,
        batch_rows=ctx.batch_rows,
        threads=config.engine_threads,
        memory_limit=config.engine_memory_limit,
    )
    ctx.log("starting the bare pyarrow.flight server streaming an in-memory table")
    bare = ctx.bare or ctx.procs.start_bare("bare-duckdb", mode="duckdb", **settings)
    memory = ctx.procs.start_bare("bare-memory", mode="memory", preload=LARGE_QUERY, **settings)
    ctx.sampler.phase = "large_result"
    adbc, fl = ctx.adbc(), ctx.flight()
    bare_client, memory_client = FlightClient(bare.uri), FlightClient(memory.uri)
    variants = {
        "duckdb": lambda: duck_drain(ctx.plain, LARGE_QUERY, ctx.batch_rows),
        "adbc": lambda: adbc.drain(LARGE_QUERY),
        "flight": lambda: fl.drain(LARGE_QUERY),
        "bare_duckdb_flight": lambda: bare_client.drain(LARGE_QUERY),
        "memory_flight": lambda: memory_client.drain(LARGE_QUERY),
    }
    out: dict = {"sql": LARGE_QUERY, "batch_rows": ctx.batch_rows}
    try:
        sizes = {name: action() for name, action in variants.items()}  # warm-up
        out["rows"] = {name: s[0] for name, s in sizes.items()}
        out["bytes"] = {name: s[1] for name, s in sizes.items()}
        payload = sizes["duckdb"][1]
        out["payload_mb"] = payload / 1e6
        timings = interleaved(
            variants, config.repetitions, warmup=0, on_repetition=lambda: ctx.advance(1)
        )
        for name, values in timings.items():
            out[name] = with_throughput(summary(values), payload)
        for name in variants:
            out[name]["vs_duckdb"] = ratio(out[name]["mb_per_s"], out["duckdb"]["mb_per_s"])
            out[name]["vs_bare_duckdb"] = ratio(
                out[name]["mb_per_s"], out["bare_duckdb_flight"]["mb_per_s"]
            )
            out[name]["vs_memory"] = ratio(out[name]["mb_per_s"], out["memory_flight"]["mb_per_s"])
        out["gateway_peak_rss_mb"] = ctx.sampler.peak("large_result") / 1e6
    finally:
        for client in (adbc, fl, bare_client, memory_client):
            client.close()
        if bare is not ctx.bare:
            ctx.procs.stop(bare)
        ctx.procs.stop(memory)
    return out


# --------------------------------------------------------------------------- 4. planning


def planning(ctx: Context) -> dict:
    """Pipeline time per query in-process, and Casbin decision time vs policy size."""
    from gateway.catalog.state import MeshState
    from gateway.config import load_config
    from gateway.flightsql.service import SqlService
    from gateway.planning.planner import plan
    from gateway.security.auth import UserDirectory

    config = ctx.config
    ctx.sampler.phase = "planning"
    mesh_config = load_config(ctx.mesh.mesh_dir)
    state = MeshState(ctx.mesh.mesh_dir, mesh_config)
    service = SqlService(state)
    directory = UserDirectory(mesh_config.users)
    exec_times = ctx.results.get("tpch", {}).get("queries", {})
    optimizer_calls = _count_optimizer_calls()
    users = {"no_policy": ADMIN_USER, "policy": ANALYST_USER}
    per_query: dict = {}
    try:
        for number in QUERY_NUMBERS:
            ctx.working_on(f"q{number}")
            sql = qualified(number, config.scale)
            entry: dict = {}
            for label, user in users.items():
                principal = directory.principal(user)
                context = service.planner.context(principal)
                for _ in range(3):
                    plan(sql, context)
                samples = [
                    timed(lambda sql=sql, context=context: plan(sql, context))[0]
                    for _ in range(config.planning_calls)
                ]
                full = [
                    timed(
                        lambda principal=principal, sql=sql: service.planner.plan(principal, sql)
                    )[0]
                    for _ in range(max(3, config.planning_calls // 5))
                ]
                execution = exec_times.get(str(number), {})
                exec_ms = (
                    execution.get("gateway_policy" if label == "policy" else "gateway") or {}
                ).get("median")
                p50 = percentile(samples, 50)
                entry[label] = {
                    "plan_p50_ms": p50,
                    "plan_p99_ms": percentile(samples, 99),
                    "plan_samples_ms": samples,
                    "service_plan_p50_ms": percentile(full, 50),
                    "execution_ms": exec_ms,
                    "pct_of_execution": (100 * p50 / exec_ms) if exec_ms else None,
                    "service_plan_pct_of_execution": (100 * percentile(full, 50) / exec_ms)
                    if exec_ms
                    else None,
                }
            per_query[str(number)] = entry
            ctx.advance(1)
    finally:
        optimizer_calls.restore()
        state.current.catalog.engine.close()
    out: dict = {"queries": per_query}
    for label in users:
        all_samples = [s for e in per_query.values() for s in e[label]["plan_samples_ms"]]
        pcts = [
            e[label]["pct_of_execution"]
            for e in per_query.values()
            if e[label]["pct_of_execution"] is not None
        ]
        service_pcts = [
            e[label]["service_plan_pct_of_execution"]
            for e in per_query.values()
            if e[label]["service_plan_pct_of_execution"] is not None
        ]
        out[label] = {
            "plan_p50_ms": percentile(all_samples, 50),
            "plan_p99_ms": percentile(all_samples, 99),
            "pct_of_execution_median": statistics.median(pcts) if pcts else None,
            "pct_of_execution_max": max(pcts) if pcts else None,
            "service_plan_pct_median": statistics.median(service_pcts) if service_pcts else None,
            "service_plan_pct_max": max(service_pcts) if service_pcts else None,
        }
    out["optimize_calls"] = optimizer_calls.count
    out["optimize_in_source"] = _optimize_in_source()
    out["decisions"] = decisions(ctx)
    return out


class _count_optimizer_calls:
    """Count calls of sqlglot's full ``optimize()`` while planning (R5: never on the hot path)."""

    def __init__(self) -> None:
        import sqlglot.optimizer
        import sqlglot.optimizer.optimizer as module

        self.count = 0
        self._targets = [(sqlglot.optimizer, "optimize"), (module, "optimize")]
        self._saved = [getattr(obj, name) for obj, name in self._targets]
        original = self._saved[0]

        def counting(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        for obj, name in self._targets:
            setattr(obj, name, counting)

    def restore(self) -> None:
        for (obj, name), value in zip(self._targets, self._saved, strict=True):
            setattr(obj, name, value)


def _optimize_in_source() -> list[str]:
    """Calls of a function named ``optimize`` in the gateway, policies and connectors
    packages (found in the syntax tree: comments and docstrings do not count)."""
    import ast

    hits = []
    for package in ("gateway", "policies", "connectors"):
        for path in sorted((REPO / package).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name == "optimize":
                        hits.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return hits


def decisions(ctx: Context) -> dict:
    """``governor.access`` time at each policy size, each in a child process."""
    config = ctx.config
    out: dict = {}
    for lines in config.policy_sizes:
        ctx.log(f"Casbin decisions with {lines:,} policy lines")
        command = [
            sys.executable,
            "-m",
            "benchmarks.decisions",
            "--mesh",
            str(ctx.mesh.mesh_dir),
            "--lines",
            str(lines),
            "--samples",
            str(config.decision_samples),
            "--budget",
            str(config.decision_budget_seconds),
        ]
        limit = config.decision_budget_seconds + (1800 if not config.quick else 60)
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=limit,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                check=False,
            )
        except subprocess.TimeoutExpired:
            out[str(lines)] = {
                "lines": lines,
                "error": f"timed out after {limit:.0f} s (building the Governor "
                "and deciding did not finish)",
            }
            continue
        if done.returncode != 0:
            out[str(lines)] = {
                "lines": lines,
                "error": (done.stderr.strip().splitlines() or ["failed"])[-1],
            }
            continue
        entry = json.loads(done.stdout.strip().splitlines()[-1])
        entry["uncached"] = summary(entry.pop("uncached_ms"))
        entry["wall_s"] = time.perf_counter() - started
        out[str(lines)] = entry
        ctx.advance(1)
    sizes = [str(s) for s in config.policy_sizes]
    smallest, largest = out.get(sizes[0], {}), out.get(sizes[-1], {})
    small_ms = (smallest.get("uncached") or {}).get("median")
    large_ms = (largest.get("uncached") or {}).get("median")
    out["largest_vs_smallest_uncached"] = ratio(large_ms, small_ms)
    out["largest_vs_smallest_cached"] = ratio(largest.get("cached_us"), smallest.get("cached_us"))
    if "error" in largest or "error" in smallest:  # R7 cannot hold: say why (targets.judge)
        size, entry = (sizes[-1], largest) if "error" in largest else (sizes[0], smallest)
        out["error"] = f"{int(size):,} policy lines: {entry['error']}"
    return out


# --------------------------------------------------------------------------- 5. concurrency


def _mix(scale: float, qualified_names: bool = True) -> list[tuple[str, str]]:
    """The mixed workload: runs of point lookups (varying keys) with TPC-H queries between."""
    items: list[tuple[str, str]] = []
    key_index = 0
    for number in MIX_QUERIES:
        for _ in range(MIX_LOOKUPS):
            items.append(("lookup", point_lookup(order_key(key_index, scale), qualified_names)))
            key_index += 1
        sql = qualified(number, scale) if qualified_names else raw_query(number, scale)
        items.append((f"q{number}", sql))
    return items


def _window(
    executors: list[Callable[[str], object]], mix: list[tuple[str, str]], seconds: float
) -> dict:
    """Run ``len(executors)`` threads for ``seconds``; each executes the mix round robin."""
    threads = len(executors)
    barrier = threading.Barrier(threads + 1)
    latencies: list[list[tuple[str, float]]] = [[] for _ in range(threads)]
    errors: list[list[str]] = [[] for _ in range(threads)]
    ends = [0.0] * threads
    state = {"stop_at": 0.0}

    def work(index: int) -> None:
        execute = executors[index]
        position = index * 5
        barrier.wait()
        while time.perf_counter() < state["stop_at"]:
            kind, sql = mix[position % len(mix)]
            position += 1
            t0 = time.perf_counter()
            try:
                execute(sql)
                latencies[index].append((kind, (time.perf_counter() - t0) * 1000))
            except Exception as exc:  # noqa: BLE001 - counted as an error of the load
                errors[index].append(_error_text(exc))
        ends[index] = time.perf_counter()

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    started = time.perf_counter()
    state["stop_at"] = started + seconds
    barrier.wait()
    for worker in workers:
        worker.join()
    elapsed = max(ends) - started
    flat = [ms for per in latencies for _, ms in per]
    return {
        "queries": len(flat),
        "errors": sum(len(e) for e in errors),
        "error_samples": sorted({e for per in errors for e in per})[:5],
        "seconds": elapsed,
        "qps": len(flat) / elapsed if elapsed > 0 else 0.0,
        "latencies_ms": flat,
        "lookup_latencies_ms": [ms for per in latencies for kind, ms in per if kind == "lookup"],
    }


def window_summary(windows: list[dict]) -> dict:
    """Queries/s (median over the windows), errors and latency percentiles of one system."""
    latencies = [ms for w in windows for ms in w["latencies_ms"]]
    lookups = [ms for w in windows for ms in w["lookup_latencies_ms"]]
    return {
        "qps": summary([w["qps"] for w in windows]),
        "queries": sum(w["queries"] for w in windows),
        "errors": sum(w["errors"] for w in windows),
        "error_samples": sorted({e for w in windows for e in w["error_samples"]})[:5],
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "lookup_p50_ms": percentile(lookups, 50),
        "lookup_p99_ms": percentile(lookups, 99),
    }


def concurrency(ctx: Context) -> dict:
    """1..16 concurrent clients, mixed workload, gateway (ADBC) vs DuckDB in-process."""
    config = ctx.config
    mix = _mix(config.scale)
    window = config.concurrency_seconds / config.repetitions
    out: dict = {"levels": {}, "window_seconds": window, "mix": [kind for kind, _ in mix]}
    for level in config.concurrency_levels:
        clients = [ctx.adbc() for _ in range(level)]
        cursors = [ctx.plain.cursor() for _ in range(level)]
        gateway_windows, duck_windows = [], []
        rss_before = ctx.gateway.rss_bytes()
        try:
            # Warm-up: each client runs the mix once.
            for client in clients:
                client.query(mix[0][1])
            for _ in range(config.repetitions):
                ctx.sampler.phase = f"concurrency_{level}"
                gateway_windows.append(_window([c.query for c in clients], mix, window))
                ctx.sampler.phase = f"concurrency_{level}_duckdb"
                duck_windows.append(
                    _window(
                        [lambda sql, cur=cur: duck_query(cur, sql) for cur in cursors], mix, window
                    )
                )
        finally:
            for client in clients:
                client.close()
            for cursor in cursors:
                cursor.close()
        rss_samples = ctx.sampler.phase_samples(f"concurrency_{level}")
        entry = {}
        for name, windows in (("gateway", gateway_windows), ("duckdb", duck_windows)):
            entry[name] = {
                **window_summary(windows),
                "latencies_ms": [round(ms, 3) for w in windows for ms in w["latencies_ms"]],
            }
        third = max(1, len(rss_samples) // 3)
        entry["gateway_rss_mb"] = {
            "before": rss_before / 1e6,
            "peak": max(rss_samples, default=0) / 1e6,
            "first_third_mean": (sum(rss_samples[:third]) / third / 1e6) if rss_samples else None,
            "last_third_mean": (sum(rss_samples[-third:]) / third / 1e6) if rss_samples else None,
            "after": ctx.gateway.rss_bytes() / 1e6,
        }
        out["levels"][str(level)] = entry
        ctx.advance(1)
    levels = out["levels"]
    low, high = (
        str(min(config.concurrency_levels)),
        "8" if "8" in levels else str(max(config.concurrency_levels)),
    )
    gw_scaling = ratio(
        levels[high]["gateway"]["qps"]["median"], levels[low]["gateway"]["qps"]["median"]
    )
    duck_scaling = ratio(
        levels[high]["duckdb"]["qps"]["median"], levels[low]["duckdb"]["qps"]["median"]
    )
    top = levels[str(max(config.concurrency_levels))]
    rss = top["gateway_rss_mb"]
    out.update(
        {
            "scaling_level": int(high),
            "gateway_scaling": gw_scaling,
            "duckdb_scaling": duck_scaling,
            "relative_scaling": ratio(gw_scaling, duck_scaling),
            "errors_at_max": top["gateway"]["errors"],
            "rss_growth_at_max": ratio(rss["last_third_mean"], rss["first_third_mean"]),
            "peak_rss_mb": max(level["gateway_rss_mb"]["peak"] for level in levels.values()),
        }
    )
    return out


# --------------------------------------------------------------------------- 6. peer


def _with_timeout(action: Callable[[], object], seconds: float) -> object:
    """``action()``, or TimeoutError when it takes longer than ``seconds`` (the call is
    abandoned in a daemon thread)."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = action()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def peer(ctx: Context) -> dict:
    """ROAPI's Flight SQL endpoint on the same Parquet files, same ADBC client."""
    config = ctx.config
    executable = find_executable("roapi")
    if executable is None:
        return {"skipped": "roapi not found next to python or on PATH (pip install roapi)"}
    tables = {table: ctx.mesh.parquet_path(table) for table in TABLE_DOMAIN}
    ctx.log(f"starting ROAPI ({executable}) on {len(tables)} Parquet files")
    ctx.sampler.phase = "peer_setup"
    started = time.perf_counter()
    roapi = ctx.procs.start_roapi(executable, tables)
    out: dict = {
        "executable": executable,
        "version": _version([executable, "--version"]),
        "startup_s": time.perf_counter() - started,
        "tables": {k: str(v) for k, v in tables.items()},
        "note": "ROAPI defaults (tables loaded at start-up); queries use bare table names",
    }
    ctx.sampler.phase = "peer"
    gateway = ctx.adbc()
    peer_client = AdbcClient(roapi.uri)
    try:
        small = {}
        for name, (gw_sql, peer_sql) in {
            "select_1": (SELECT_ONE, SELECT_ONE),
            "point_lookup": (point_lookup(), point_lookup(qualified_name=False)),
        }.items():
            timings = interleaved(
                {
                    "gateway": lambda s=gw_sql: gateway.query(s),
                    "roapi": lambda s=peer_sql: peer_client.query(s),
                },
                config.repetitions,
                calls=config.small_query_calls,
                warmup=3,
            )
            small[name] = {k: summary(v) for k, v in timings.items()}
            small[name]["roapi_vs_gateway"] = ratio(
                small[name]["roapi"]["median"], small[name]["gateway"]["median"]
            )
        out["small"] = small
        ctx.advance(1)

        per_query: dict = {}
        for number in QUERY_NUMBERS:
            ctx.working_on(f"q{number}")
            gw_sql, peer_sql = qualified(number, config.scale), raw_query(number, config.scale)
            entry: dict = {"sql": peer_sql}
            try:
                reference = gateway.query(gw_sql)
                answer = _with_timeout(
                    lambda peer_client=peer_client, peer_sql=peer_sql: peer_client.query(peer_sql),
                    config.peer_query_timeout,
                )
                entry["rows"] = {"gateway": reference.num_rows, "roapi": answer.num_rows}
                entry["same_row_count"] = reference.num_rows == answer.num_rows
                timings = interleaved(
                    {
                        "gateway": lambda gw_sql=gw_sql: gateway.query(gw_sql),
                        "roapi": lambda peer_client=peer_client, peer_sql=peer_sql: _with_timeout(
                            lambda: peer_client.query(peer_sql), config.peer_query_timeout
                        ),
                    },
                    config.repetitions,
                    warmup=0,
                )
                entry.update({k: summary(v) for k, v in timings.items()})
                entry["roapi_vs_gateway"] = ratio(
                    entry["roapi"]["median"], entry["gateway"]["median"]
                )
            except Exception as exc:  # noqa: BLE001 - one failing query must not sink the run
                entry["error"] = _error_text(exc)
                if "larger than max" in entry["error"]:
                    entry["error_note"] = (
                        "ROAPI sent one gRPC message above the ADBC client's default 16 MiB "
                        "limit (its Arrow batches are not bounded by size)"
                    )
                peer_client.close()
                peer_client = AdbcClient(roapi.uri)
            per_query[str(number)] = entry
            ctx.advance(1)
        ran = {n: e for n, e in per_query.items() if "error" not in e}
        out["tpch"] = {
            "queries": per_query,
            "failed": {n: e["error"] for n, e in per_query.items() if "error" in e},
            "geomean_roapi_vs_gateway": geomean(e["roapi_vs_gateway"] for e in ran.values()),
            "ran": len(ran),
        }

        peer_scan = "SELECT * FROM lineitem"
        try:
            sizes = {
                "gateway": gateway.drain(LARGE_QUERY),
                "roapi": _with_timeout(
                    lambda: peer_client.drain(peer_scan), config.peer_query_timeout
                ),
            }
            timings = interleaved(
                {
                    "gateway": lambda: gateway.drain(LARGE_QUERY),
                    "roapi": lambda: _with_timeout(
                        lambda: peer_client.drain(peer_scan), config.peer_query_timeout
                    ),
                },
                config.repetitions,
                warmup=0,
            )
            payload = ctx.results.get("large_result", {}).get("payload_mb")
            scan = {
                "rows": {k: v[0] for k, v in sizes.items()},
                "bytes": {k: v[1] for k, v in sizes.items()},
            }
            for name, values in timings.items():
                scan[name] = summary(values)
                if payload:
                    scan[name]["mb_per_s"] = payload / (scan[name]["median"] / 1000)
            scan["roapi_vs_gateway"] = ratio(scan["roapi"]["median"], scan["gateway"]["median"])
            out["full_scan"] = scan
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the run goes on
            out["full_scan"] = {"error": _error_text(exc)}
        ctx.advance(1)
        out["roapi_peak_rss_mb"] = roapi.rss_bytes() / 1e6
    finally:
        gateway.close()
        peer_client.close()
        ctx.procs.stop(roapi)
    return out


def _version(command: list[str]) -> str:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return "unknown"


def safe_section(ctx: Context, name: str, function: Callable[[Context], dict]) -> dict:
    """Run one section; a crash is recorded in its result instead of ending the run."""
    try:
        return function(ctx)
    except Exception as exc:  # noqa: BLE001 - a crash is recorded in its result
        ctx.log(f"section {name} failed: {_error_text(exc)}")
        return {"error": _error_text(exc), "traceback": traceback.format_exc()}
