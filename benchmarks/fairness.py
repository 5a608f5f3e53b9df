"""Fairness section: one user's heavy TPC-H queries beside another user's point lookups.

User ``heavy`` keeps ``fairness_heavy_clients`` (8) ADBC connections busy with TPC-H
queries (:data:`HEAVY_QUERIES`, each client looping over them from its own start, a
one-off statement each time as an analyst runs them); user ``light`` runs
:data:`LOOKUP` with a bound key, a different existing key each call, on one reused ADBC
cursor. The lookups are timed unloaded (before the load starts, and again once it has
stopped and the gateway is idle), then back to back for ``fairness_seconds`` while the
load runs. The figure judged (issue 14) is loaded p95 / unloaded p95, at most 3.

Each configuration is a gateway over the benchmark mesh with extra ``mesh.toml``
settings (:data:`CONFIGURATIONS`): ``default`` adds none. ``python -m benchmarks.fairness
--source DIR`` measures on another checkout's gateway (a worktree of an older commit):
that is how :data:`BEFORE_WORKLOAD` was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import psutil

from benchmarks.data import copy_with_settings, write_mesh
from benchmarks.launch import REPO
from benchmarks.measure import AdbcClient, percentile, ratio
from benchmarks.procs import Processes, Server
from benchmarks.settings import HEAVY_USER, LIGHT_USER, BenchConfig
from benchmarks.suites import Context, order_key
from benchmarks.tpch import qualified

#: The light user's query: one order by its key (a bound parameter).
LOOKUP = "SELECT * FROM orders.orders WHERE o_orderkey = ?"
#: The heavy user's TPC-H queries (seconds each at SF1 on two cores).
HEAVY_QUERIES = (9, 18, 21, 1)
#: The bound judged: loaded p95 / unloaded p95 of the lookups.
MAX_P95_RATIO = 3.0


def _heavy_group(max_running: int) -> dict[str, dict[str, object]]:
    """The heavy user's queries in a group of their own running ``max_running`` at once
    (the others queue, up to 5 minutes); the light user in a group of its own."""
    return {
        f"workload.groups.{HEAVY_USER}": {
            "users": [HEAVY_USER],
            "max_running": max_running,
            "max_queue_wait_seconds": 300,
        },
        f"workload.groups.{LIGHT_USER}": {"users": [LIGHT_USER]},
    }


#: Configuration name -> ``mesh.toml`` settings (section -> keys) added to the mesh.
CONFIGURATIONS: dict[str, dict[str, dict[str, object]]] = {
    "default": {},
    "heavy_group_2": _heavy_group(2),
    "heavy_group_1_threads_1": {**_heavy_group(1), "engine": {"threads": 1}},
}
#: The configurations the section runs, in order.
SECTION_CONFIGURATIONS = tuple(CONFIGURATIONS)

#: The ``default`` configuration on the gateway before workload management (commit
#: 3052eb4: no resource groups, every query ran at once), recorded: measured on
#: 2026-12-07 at SF1 with ``python -m benchmarks.fairness --source <worktree of 3052eb4>
#: --configuration default`` (8 heavy clients, 200 lookups per unloaded window, 30 s
#: loaded), twice, alternating with the current gateway, on this 2-core machine while other
#: test suites kept it busy (load average 12-20). See benchmarks/results/fairness.md.
BEFORE_WORKLOAD: dict[str, Any] = {
    "commit": "3052eb4",
    "scale": 1.0,
    "runs": [
        {
            "unloaded_p50_ms": 13.1,
            "unloaded_p95_ms": 37.0,
            "loaded_p50_ms": 308.8,
            "loaded_p95_ms": 685.4,
            "p95_ratio": 18.54,
            "heavy_per_minute": 40.4,
            "errors": "0 / 0",
        },
        {
            "unloaded_p50_ms": 10.5,
            "unloaded_p95_ms": 33.9,
            "loaded_p50_ms": 280.8,
            "loaded_p95_ms": 673.7,
            "p95_ratio": 19.85,
            "heavy_per_minute": 59.8,
            "errors": "0 / 0",
        },
    ],
}

_QUIET_CORES = 0.2  # a gateway using less CPU than this is idle
_CLIENT_ERROR_PAUSE = 0.1  # seconds a heavy client waits after a refused query


def _error_text(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


class HeavyLoad:
    """``clients`` threads as ``user``, one ADBC connection each, running ``queries``
    one after the other until :meth:`stop`."""

    def __init__(self, uri: str, user: str, queries: list[tuple[int, str]], clients: int) -> None:
        self._queries = queries
        self._connections = [
            flightsql.connect(uri, db_kwargs={"username": user, "password": user}, autocommit=True)
            for _ in range(clients)
        ]
        self._cursors: list[Any] = [None] * clients
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]
        #: (query number, seconds) of every query finished before ``stop``
        self.finished: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self.started_at = self.stopped_at = 0.0

    def start(self) -> None:
        self.started_at = time.perf_counter()
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        connection = self._connections[index]
        position = index
        while not self._stopping.is_set():
            number, sql = self._queries[position % len(self._queries)]
            position += 1
            cursor = connection.cursor()
            with self._lock:
                self._cursors[index] = cursor
            started = time.perf_counter()
            try:
                cursor.execute(sql)
                cursor.fetch_arrow_table()
                if not self._stopping.is_set():
                    self.finished.append((number, time.perf_counter() - started))
            except Exception as exc:  # noqa: BLE001 - counted; a cancel at the stop is not
                if not self._stopping.is_set():
                    self.errors.append(f"q{number}: {_error_text(exc)}")
                    self._stopping.wait(_CLIENT_ERROR_PAUSE)
            finally:
                with self._lock:
                    self._cursors[index] = None
                with contextlib.suppress(Exception):
                    cursor.close()

    def stop(self, timeout: float = 120.0) -> None:
        """Cancel the queries in flight, wait for the clients, close their connections."""
        self._stopping.set()
        self.stopped_at = time.perf_counter()
        with self._lock:
            running = [cursor for cursor in self._cursors if cursor is not None]
        for cursor in running:
            with contextlib.suppress(Exception):  # it may have just finished
                cursor.adbc_cancel()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for connection in self._connections:
            with contextlib.suppress(Exception):
                connection.close()

    def summary(self) -> dict:
        seconds = self.stopped_at - self.started_at
        by_query: dict[str, list[float]] = {}
        for number, elapsed in self.finished:
            by_query.setdefault(f"q{number}", []).append(elapsed)
        return {
            "clients": len(self._connections),
            "queries": [number for number, _ in self._queries],
            "seconds": seconds,
            "finished": len(self.finished),
            "per_minute": 60 * len(self.finished) / seconds if seconds > 0 else None,
            "median_s": {q: statistics.median(v) for q, v in sorted(by_query.items())},
            "errors": len(self.errors),
            "error_samples": sorted(set(self.errors))[:5],
        }


class Lookups:
    """The light user's point lookups on one reused ADBC cursor, a new key each call."""

    def __init__(self, uri: str, scale: float) -> None:
        self._client = AdbcClient(uri, LIGHT_USER, LIGHT_USER)
        self._scale = scale
        self._index = 0
        self.errors: list[str] = []

    def one(self) -> float | None:
        """Milliseconds of one lookup (None: it failed, and the error is kept)."""
        key = order_key(self._index, self._scale)
        self._index += 1
        started = time.perf_counter()
        try:
            self._client.cursor.execute(LOOKUP, (key,))
            rows = self._client.cursor.fetch_arrow_table().num_rows
        except Exception as exc:  # noqa: BLE001 - counted as an error of the light user
            self.errors.append(_error_text(exc))
            return None
        elapsed = (time.perf_counter() - started) * 1000
        if rows != 1:
            raise RuntimeError(f"the lookup of order {key} returned {rows} rows, not 1")
        return elapsed

    def count(self, calls: int) -> list[float]:
        return [ms for ms in (self.one() for _ in range(calls)) if ms is not None]

    def during(self, seconds: float) -> list[float]:
        stop_at = time.perf_counter() + seconds
        times = []
        while time.perf_counter() < stop_at:
            ms = self.one()
            if ms is not None:
                times.append(ms)
        return times

    def close(self) -> None:
        self._client.close()


def _cpu_seconds(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        total = 0.0
        for proc in (process, *process.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def wait_until_idle(server: Server, timeout: float = 120.0, window: float = 0.5) -> float:
    """Seconds until ``server`` used under 0.2 cores over ``window`` (its cancelled
    queries have stopped), at most ``timeout``."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        before = _cpu_seconds(server.process.pid)
        time.sleep(window)
        if (_cpu_seconds(server.process.pid) - before) / window < _QUIET_CORES:
            break
    return time.perf_counter() - started


def _latencies(times: list[float]) -> dict:
    return {
        "n": len(times),
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "max_ms": max(times, default=None),
    }


def measure(
    server: Server,
    scale: float,
    heavy_clients: int,
    lookups: int,
    seconds: float,
    log: Callable[[str], None] = print,
) -> dict:
    """The light user's lookups on ``server`` unloaded and under the heavy user's load."""
    light = Lookups(server.uri, scale)
    heavy_sql = [(number, qualified(number, scale)) for number in HEAVY_QUERIES]
    try:
        light.count(10)  # warm-up: the statement prepared, the connection's first calls
        before = light.count(lookups)
        load = HeavyLoad(server.uri, HEAVY_USER, heavy_sql, heavy_clients)
        load.start()
        try:
            # every client has sent its first query before the lookups are timed
            time.sleep(min(2.0, seconds / 4))
            loaded = light.during(seconds)
        finally:
            load.stop()
        drained = wait_until_idle(server)
        after = light.count(lookups)
    finally:
        light.close()
    unloaded = _latencies(before + after)
    under_load = _latencies(loaded)
    heavy = load.summary()
    p95_ratio = ratio(under_load["p95_ms"], unloaded["p95_ms"])
    result: dict[str, Any] = {
        "unloaded": {**unloaded, "before": _latencies(before), "after": _latencies(after)},
        "loaded": under_load,
        "p50_ratio": ratio(under_load["p50_ms"], unloaded["p50_ms"]),
        "p95_ratio": p95_ratio,
        "heavy": heavy,
        "idle_after_stop_s": drained,
        "lookup_errors": len(light.errors),
        "lookup_error_samples": sorted(set(light.errors))[:5],
    }
    log(
        f"lookups p95 {unloaded['p95_ms']:.1f} ms unloaded, {under_load['p95_ms']:.1f} ms "
        f"loaded ({p95_ratio or float('nan'):.2f}x); heavy user: {heavy['finished']} "
        f"queries, {heavy['errors']} errors"
    )
    return result


def measure_configurations(
    procs: Processes,
    mesh_dir: Path,
    out_dir: Path,
    config: BenchConfig,
    names: tuple[str, ...],
    source: Path = REPO,
    default_gateway: Server | None = None,
    log: Callable[[str], None] = print,
    advance: Callable[[float], None] = lambda amount: None,
) -> dict:
    """``measure`` on one gateway per configuration (``default_gateway``, when given,
    serves ``default``); configuration name -> its results, with its settings."""
    results: dict[str, dict] = {}
    for name in names:
        settings = CONFIGURATIONS[name]
        log(f"fairness: configuration {name}")
        server = default_gateway if name == "default" else None
        started = server is None
        if server is None:
            mesh = copy_with_settings(mesh_dir, out_dir / f"mesh-fairness-{name}", settings)
            server = procs.start_gateway(
                mesh, LIGHT_USER, LIGHT_USER, name=f"gateway-fairness-{name}", source=source
            )
        try:
            entry = measure(
                server,
                config.scale,
                config.fairness_heavy_clients,
                config.fairness_lookups,
                config.fairness_seconds,
                log,
            )
        finally:
            if started:
                procs.stop(server)
        results[name] = {"settings": settings, **entry}
        advance(1)
    return results


def section(ctx: Context) -> dict:
    """The section's runner: the configurations of :data:`SECTION_CONFIGURATIONS`."""
    ctx.sampler.phase = "fairness"
    configurations = measure_configurations(
        ctx.procs,
        ctx.mesh.mesh_dir,
        ctx.config.out_dir,
        ctx.config,
        SECTION_CONFIGURATIONS,
        default_gateway=ctx.gateway,
        log=ctx.log,
        advance=ctx.advance,
    )
    return _result(ctx.config, configurations)


def steps(config: BenchConfig) -> int:
    return len(SECTION_CONFIGURATIONS)


def _result(config: BenchConfig, configurations: Mapping[str, dict]) -> dict:
    met = [
        name
        for name, e in configurations.items()
        if e["p95_ratio"] is not None and e["p95_ratio"] <= MAX_P95_RATIO
    ]
    return {
        "lookup_sql": LOOKUP,
        "heavy_queries": list(HEAVY_QUERIES),
        "heavy_clients": config.fairness_heavy_clients,
        "lookups_per_window": config.fairness_lookups,
        "loaded_seconds": config.fairness_seconds,
        "configurations": dict(configurations),
        "meeting_target": met,
        "before_workload": BEFORE_WORKLOAD,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("bench-out/fairness"))
    parser.add_argument(
        "--source", type=Path, default=REPO, help="checkout whose gateway runs (default: this one)"
    )
    parser.add_argument(
        "--configuration",
        action="append",
        choices=sorted(CONFIGURATIONS),
        help="repeatable (default: the section's)",
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    config = BenchConfig.make(
        scale=args.scale,
        out=args.out,
        fairness_heavy_clients=args.clients,
        fairness_lookups=args.lookups,
        fairness_seconds=args.seconds,
    )
    mesh = write_mesh(config)
    procs = Processes(config.logs_dir)
    try:
        configurations = measure_configurations(
            procs,
            mesh.mesh_dir,
            config.out_dir,
            config,
            tuple(args.configuration or SECTION_CONFIGURATIONS),
            source=args.source.resolve(),
        )
    finally:
        procs.stop_all()
    result = {**_result(config, configurations), "source": str(args.source.resolve())}
    (config.out_dir / "fairness.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps({n: _brief(e) for n, e in configurations.items()}, indent=1))


def _brief(entry: dict) -> dict:
    return {
        "unloaded_p50_ms": entry["unloaded"]["p50_ms"],
        "unloaded_p95_ms": entry["unloaded"]["p95_ms"],
        "loaded_p50_ms": entry["loaded"]["p50_ms"],
        "loaded_p95_ms": entry["loaded"]["p95_ms"],
        "p95_ratio": entry["p95_ratio"],
        "heavy_per_minute": entry["heavy"]["per_minute"],
        "heavy_errors": entry["heavy"]["errors"],
        "lookup_errors": entry["lookup_errors"],
    }


if __name__ == "__main__":
    main()
