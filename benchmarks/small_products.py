"""Small products as users query them: the gateway cold (views over Parquet) and
accelerated (the product held in memory), against ROAPI's Flight SQL endpoint on the
same Parquet file, all through the same ADBC client, measured interleaved in one run.

The product is the demo's ``crm.customers`` (20,000 rows, one Parquet file), queried as
``bob`` (who reads it whole). DuckDB in-process on the file and on an in-memory copy are
measured beside, for scale. Ratios only: the machine's load moves the absolute times.

Run: ``python -m benchmarks.small_products --out DIR [--repetitions 7 --calls 30]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import duckdb
import pyarrow as pa
from pyarrow import flight

from benchmarks.data import copy_with_settings, find_executable
from benchmarks.markdown import millis, times
from benchmarks.measure import AdbcClient, duck_query, interleaved, ratio, summary
from benchmarks.procs import Processes, Server
from benchmarks.settings import BenchConfig
from benchmarks.suites import Context

USER = "bob"
POINT_KEY = 4242
#: name -> (gateway SQL, ROAPI SQL); ``{t}`` is the DuckDB source in-process
WORKLOADS = {
    "select_1": ("SELECT 1", "SELECT 1"),
    "point_lookup": (
        f"SELECT * FROM crm.customers WHERE customer_id = {POINT_KEY}",
        f"SELECT * FROM customers WHERE customer_id = {POINT_KEY}",
    ),
    "group_by_region": (
        "SELECT region, count(*) AS n FROM crm.customers GROUP BY region",
        "SELECT region, count(*) AS n FROM customers GROUP BY region",
    ),
    "full_scan": ("SELECT * FROM crm.customers", "SELECT * FROM customers"),
}


#: the measured variants, in the report's column order
VARIANTS = (
    "gateway_cold",
    "gateway_accelerated",
    "bare_sql_file",
    "bare_sql_memory",
    "roapi",
    "duckdb_parquet",
    "duckdb_memory",
)
RATIOS = (
    "accelerated_vs_cold",
    "cold_vs_bare_file",
    "accelerated_vs_bare_memory",
    "accelerated_vs_roapi",
    "bare_memory_vs_roapi",
)


def _meshes(out: Path) -> tuple[Path, Path]:
    """The demo mesh as written, and a copy of it with every product accelerated."""
    from gateway.demo.mesh import write_demo_mesh

    cold = out / "cold"
    if cold.exists():
        shutil.rmtree(cold)
    write_demo_mesh(cold)
    accelerated = copy_with_settings(
        cold, out / "accelerated", {"engine": {"accelerate_below_bytes": 1024**3}}
    )
    return cold, accelerated


def _health(uri: str) -> dict:
    """The gateway's ``Health`` action as ``USER``."""
    client = flight.FlightClient(uri)
    try:
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(USER, USER)])
        results = list(client.do_action(flight.Action("Health", b""), options))
        return json.loads(results[0].body.to_pybytes())
    finally:
        client.close()


def section(ctx: Context) -> dict:
    """The section's runner (see the module docstring)."""
    ctx.sampler.phase = "small_products"
    config = ctx.config
    return run(
        config.out_dir / "small_products",
        config.repetitions,
        config.small_query_calls,
        ctx.procs,
        ctx.log,
        ctx.advance,
        stop_all=False,
    )


def steps(config: BenchConfig) -> int:
    return len(WORKLOADS)


def markdown(result: dict, config: dict) -> list[str]:
    """The section's body: per workload, the medians and the ratios."""
    lines = [
        (
            f"{result.get('product')}, as `{result.get('user')}`, every client through ADBC "
            "(reused cursor), measured interleaved; gateway cold = views over the Parquet "
            "file, accelerated = `[engine] accelerate_below_bytes` (the product held in the "
            "gateway's DuckDB memory). DuckDB in-process beside, for scale. Ratios < 1: the "
            f"first is faster. ROAPI: {result.get('roapi', 'Flight SQL endpoint, same file')}."
        ),
        "",
        (
            "| workload | cold | accelerated | bare Flight SQL on file | bare Flight SQL in memory "
            "| ROAPI | DuckDB on file | DuckDB in memory | accelerated / cold | cold / bare on file "
            "| accelerated / bare in memory | accelerated / ROAPI | bare in memory / ROAPI |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in result.get("workloads", {}).items():
        cells = [millis(e.get(k, {}).get("median")) for k in VARIANTS]
        ratios = [times(e.get(k)) for k in RATIOS]
        lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    return lines


def run(
    out: Path,
    repetitions: int,
    calls: int,
    procs: Processes | None = None,
    log: Callable[[str], None] = print,
    advance: Callable[[float], None] = lambda amount: None,
    stop_all: bool = True,
) -> dict:
    """Measure every workload; return the JSON-ready results."""
    out.mkdir(parents=True, exist_ok=True)
    cold_mesh, fast_mesh = _meshes(out)
    parquet = cold_mesh / "crm" / "data" / "customers.parquet"
    procs = procs or Processes(out / "logs")
    started_here: list[Server] = []
    roapi_exe = find_executable("roapi")
    results: dict = {
        "product": "crm.customers (demo, 20,000 rows, Parquet)",
        "user": USER,
        "repetitions": repetitions,
        "calls_per_repetition": calls,
        "workloads": {},
    }
    clients: list[AdbcClient] = []
    try:
        cold_gw = procs.start_gateway(cold_mesh, USER, USER, name="gateway_cold")
        started_here.append(cold_gw)
        fast_gw = procs.start_gateway(fast_mesh, USER, USER, name="gateway_accelerated")
        started_here.append(fast_gw)
        cold = AdbcClient(cold_gw.uri, USER, USER)
        fast = AdbcClient(fast_gw.uri, USER, USER)
        clients += [cold, fast]
        floors: dict[str, AdbcClient] = {}
        for name, create in (("bare_sql_file", "VIEW"), ("bare_sql_memory", "TABLE")):
            server = procs.start_bare(
                name,
                cold_mesh,
                "flightsql",
                65536,
                2,
                "2GB",
                setup=(
                    "CREATE SCHEMA crm",
                    f"CREATE {create} crm.customers AS SELECT * FROM read_parquet('{parquet}')",
                ),
            )
            started_here.append(server)
            floors[name] = AdbcClient(server.uri)
            clients.append(floors[name])
        roapi = None
        if roapi_exe is not None:
            server = procs.start_roapi(roapi_exe, {"customers": parquet})
            started_here.append(server)
            roapi = AdbcClient(server.uri)
            clients.append(roapi)
        else:
            results["roapi"] = "skipped: roapi not found next to python or on PATH"
        on_file = duckdb.connect()
        on_file.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{parquet}')")
        in_memory = duckdb.connect()
        in_memory.execute(f"CREATE TABLE customers AS SELECT * FROM read_parquet('{parquet}')")
        for index, (name, (gateway_sql, peer_sql)) in enumerate(WORKLOADS.items(), start=1):
            started = time.perf_counter()
            variants: dict[str, Callable[[], pa.Table]] = {
                "gateway_cold": partial(cold.query, gateway_sql),
                "gateway_accelerated": partial(fast.query, gateway_sql),
                "duckdb_parquet": partial(duck_query, on_file, peer_sql),
                "duckdb_memory": partial(duck_query, in_memory, peer_sql),
            }
            for floor, client in floors.items():
                variants[floor] = partial(client.query, gateway_sql)
            if roapi is not None:
                variants["roapi"] = partial(roapi.query, peer_sql)
            rows = {k: v().num_rows for k, v in variants.items() if k != "duckdb_parquet"}
            timings = interleaved(dict(variants), repetitions, calls=calls, warmup=3)
            entry: dict = {"sql": gateway_sql, "rows": rows}
            entry.update({k: summary(v) for k, v in timings.items()})
            median = {k: entry[k]["median"] for k in timings}
            entry["accelerated_vs_cold"] = ratio(
                median["gateway_accelerated"], median["gateway_cold"]
            )
            entry["cold_vs_bare_file"] = ratio(median["gateway_cold"], median["bare_sql_file"])
            entry["accelerated_vs_bare_memory"] = ratio(
                median["gateway_accelerated"], median["bare_sql_memory"]
            )
            if roapi is not None:
                entry["cold_vs_roapi"] = ratio(median["gateway_cold"], median["roapi"])
                entry["accelerated_vs_roapi"] = ratio(
                    median["gateway_accelerated"], median["roapi"]
                )
                entry["bare_memory_vs_roapi"] = ratio(median["bare_sql_memory"], median["roapi"])
            results["workloads"][name] = entry
            log(
                f"[{index}/{len(WORKLOADS)}] {name}: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in median.items())
                + f"  ({time.perf_counter() - started:.0f} s)"
            )
            advance(1)
        results["gateway_accelerated_health"] = _health(fast_gw.uri).get("accelerated")
    finally:
        for client in clients:
            client.close()
        for server in started_here:
            procs.stop(server)
        if stop_all:
            procs.stop_all()
    (out / "small_products.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/small_products"))
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    results = run(args.out, args.repetitions, args.calls)
    for name, entry in results["workloads"].items():
        print(f"{name:16s} " + "  ".join(f"{k} {times(entry.get(k))}" for k in RATIOS))


if __name__ == "__main__":
    main()
