"""Spark section: governed cross-domain TPC-H finished by the gateway's DuckDB vs run on a
Spark standalone cluster (a master and two workers on 127.0.0.1), and one join past the
gateway's memory limit.

``python -m benchmarks.spark [--scale 1] [--repetitions 2] [--out bench-out/spark]``
writes ``spark.json`` and ``spark.md``. One machine cannot show what Spark gains on a
cluster; this measures what it costs here (time, and the gateway's peak memory), and
that a join DuckDB cannot finish within its memory limit completes on Spark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.data import Mesh, copy_with_settings, write_mesh
from benchmarks.launch import free_port
from benchmarks.measure import AdbcClient, geomean, same_result, timed
from benchmarks.mesh import domains_of
from benchmarks.procs import Processes, RssSampler, Server
from benchmarks.settings import ADMIN_USER, BenchConfig
from benchmarks.spark_server import SparkServer
from benchmarks.spark_server import start as start_connect
from benchmarks.spark_server import stop as stop_connect
from benchmarks.tpch import DOMAINS, DUCKDB_DOMAIN, qualified

#: a join whose hash table outgrows a small memory limit: every line item with its order
#: and customer, grouped by a high-cardinality key and sorted
BIG_JOIN = (
    "SELECT l.l_orderkey, c.c_name, sum(l.l_extendedprice) AS value, count(*) AS lines "
    "FROM orders.lineitem l JOIN orders.orders o ON l.l_orderkey = o.o_orderkey "
    "JOIN customers.customer c ON o.o_custkey = c.c_custkey "
    "GROUP BY l.l_orderkey, c.c_name ORDER BY value DESC, l.l_orderkey LIMIT 20"
)


@dataclass
class Cluster:
    """A standalone Spark master, its workers and a Spark Connect server using them."""

    master: subprocess.Popen
    workers: list[subprocess.Popen]
    connect: SparkServer
    work_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        stop_connect(self.connect)
        for process in [*self.workers, self.master]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.master]:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


def _spark_class(main: str, *args: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    return subprocess.Popen(
        [str(spark_home / "bin" / "spark-class"), main, *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**env, "SPARK_HOME": str(spark_home)},
        start_new_session=True,
    )


def _wait_for_line(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: no {text!r} within {timeout:g} s")
        time.sleep(0.5)


def start_cluster(out: Path, workers: int = 2, cores: int = 1, memory: str = "3g") -> Cluster:
    """A master and ``workers`` workers on 127.0.0.1, then Spark Connect on the master."""
    work_dir = out / "spark-work"
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(work_dir)}
    port = free_port()
    master_log = out / "spark-master.log"
    master = _spark_class(
        "org.apache.spark.deploy.master.Master",
        *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())),
        log=master_log,
        env=env,
    )
    _wait_for_line(master_log, "New state: ALIVE", 120)
    started = []
    for index in range(workers):
        log = out / f"spark-worker-{index}.log"
        started.append(
            _spark_class(
                "org.apache.spark.deploy.worker.Worker",
                *("--host", "127.0.0.1", "--cores", str(cores), "--memory", memory),
                *("--webui-port", str(free_port()), f"spark://127.0.0.1:{port}"),
                log=log,
                env=env,
            )
        )
        _wait_for_line(log, "Successfully registered with master", 120)
    connect = start_connect(
        free_port(), secrets.token_hex(16), out / "spark-connect.log", f"spark://127.0.0.1:{port}"
    )
    return Cluster(master, started, connect, work_dir)


def publish_as_parquet(mesh: Mesh) -> None:
    """The DuckDB-file domain's products published as Parquet instead (Spark reads Parquet
    in place; a DuckDB file reaches it only as a bounded governed fragment)."""
    for table in DOMAINS[DUCKDB_DOMAIN]:
        target = mesh.mesh_dir / DUCKDB_DOMAIN / "data" / f"{table}.parquet"
        if not target.exists():
            with contextlib.suppress(OSError):
                os.link(mesh.data_dir / f"{table}.parquet", target)
            if not target.exists():
                shutil.copyfile(mesh.data_dir / f"{table}.parquet", target)
        path = mesh.mesh_dir / DUCKDB_DOMAIN / f"{table}.odcs.yaml"
        contract = yaml.safe_load(path.read_text(encoding="utf-8"))
        contract["servers"] = [
            {
                "server": "local",
                "type": "local",
                "format": "parquet",
                "path": f"data/{table}.parquet",
            }
        ]
        contract["schema"][0].pop("physicalName", None)
        path.write_text(yaml.safe_dump(contract, sort_keys=False), encoding="utf-8")


def _with_section(mesh_dir: Path, target: Path, section: str, **settings: object) -> Path:
    """A copy of ``mesh_dir`` with ``settings`` in ``[section]`` of its ``mesh.toml``."""
    return copy_with_settings(mesh_dir, target, {section: settings})


def _timed_runs(client: AdbcClient, sql: str, repetitions: int) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(repetitions):
        elapsed, result = timed(lambda: client.query(sql))
        seconds.append(elapsed)
    return seconds, result


@contextlib.contextmanager
def _sampled(server: Server) -> Iterator[RssSampler]:
    with RssSampler(server, interval=0.05) as sampler:
        yield sampler


def run(
    scale: float = 1.0,
    repetitions: int = 2,
    out: Path = Path("bench-out/spark"),
    low_memory: str = "256MB",
    log: Callable[[str], None] = print,
) -> dict:
    """Measure both routes on cross-domain TPC-H, and the big join on a low memory limit."""
    out.mkdir(parents=True, exist_ok=True)
    config = BenchConfig(scale=scale, out=out)
    mesh = write_mesh(config)
    publish_as_parquet(mesh)
    cluster = start_cluster(out)
    processes = Processes(out / "logs")
    try:
        spark_mesh = _with_section(
            mesh.mesh_dir,
            out / "mesh-spark",
            "engines.spark",
            remote=cluster.connect.remote,
            route="always",
        )
        low_mesh = _with_section(
            mesh.mesh_dir,
            out / "mesh-low-memory",
            "engine",
            memory_limit=low_memory,
            max_spill_size=low_memory,
        )
        low_spark_mesh = _with_section(
            low_mesh,
            out / "mesh-low-memory-spark",
            "engines.spark",
            remote=cluster.connect.remote,
            route="always",
        )
        gateways = {
            "duckdb": processes.start_gateway(
                mesh.mesh_dir, ADMIN_USER, ADMIN_USER, name="gateway-duckdb"
            ),
            "spark": processes.start_gateway(
                spark_mesh, ADMIN_USER, ADMIN_USER, name="gateway-spark"
            ),
        }
        clients = {
            name: AdbcClient(server.uri, ADMIN_USER, ADMIN_USER)
            for name, server in gateways.items()
        }
        queries = []
        for number in range(1, 23):
            sql = qualified(number, scale)
            if len(domains_of(sql)) < 2:
                continue
            entry: dict[str, Any] = {"query": number}
            results: dict[str, Any] = {}
            for name in ("duckdb", "spark"):
                with _sampled(gateways[name]) as sampler:
                    clients[name].query(sql)  # warm-up (Spark compiles and caches metadata)
                    seconds, results[name] = _timed_runs(clients[name], sql, repetitions)
                entry[f"{name}_seconds"] = statistics.median(seconds) / 1000  # timed: ms
                entry[f"{name}_gateway_peak_mb"] = round(sampler.peak() / 2**20, 1)
            same, why = same_result(results["duckdb"], results["spark"])
            entry["same_result"] = same if same else why
            entry["spark_vs_duckdb"] = round(
                float(entry["spark_seconds"]) / float(entry["duckdb_seconds"]), 2
            )
            queries.append(entry)
            log(
                f"q{number}: duckdb {entry['duckdb_seconds']:.2f} s, spark {entry['spark_seconds']:.2f} s"
            )
        for client in clients.values():
            client.close()
        big = {}
        for name, mesh_dir in (("duckdb", low_mesh), ("spark", low_spark_mesh)):
            server = processes.start_gateway(
                mesh_dir, ADMIN_USER, ADMIN_USER, name=f"gateway-low-{name}"
            )
            client = AdbcClient(server.uri, ADMIN_USER, ADMIN_USER)
            with _sampled(server) as sampler:
                started = time.perf_counter()
                try:
                    rows = client.query(BIG_JOIN).num_rows
                    outcome = f"ok, {rows} rows"
                except Exception as exc:  # noqa: BLE001 - the outcome is what is measured
                    outcome = "failed: " + str(exc).split(". gRPC")[0][:300]
                elapsed = time.perf_counter() - started
            big[name] = {
                "outcome": outcome,
                "seconds": round(elapsed, 2),
                "gateway_peak_mb": round(sampler.peak() / 2**20, 1),
            }
            client.close()
            processes.stop(server)
        summary = {
            "scale": scale,
            "repetitions": repetitions,
            "cluster": "standalone: 1 master, 2 workers x 1 core x 3 GB, Spark Connect on the master, 127.0.0.1",
            "machine_cores": os.cpu_count(),
            "cross_domain_queries": queries,
            "geomean_spark_vs_duckdb": geomean(q["spark_vs_duckdb"] for q in queries),
            "all_identical": all(q["same_result"] is True for q in queries),
            "big_join": {"sql": BIG_JOIN, "memory_limit": low_memory, **big},
        }
    finally:
        processes.stop_all()
        cluster.stop()
    (out / "spark.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "spark.md").write_text(markdown(summary), encoding="utf-8")
    return summary


def markdown(summary: dict) -> str:
    """The section as Markdown: per query times and ratio, then the big join."""
    lines = [
        (
            f"Cross-domain TPC-H SF{summary['scale']:g}, governed as `bench` (median of "
            f"{summary['repetitions']} after a warm-up), {summary['cluster']}; "
            f"{summary['machine_cores']} cores in all."
        ),
        "",
        "| query | DuckDB s | Spark s | Spark / DuckDB | gateway peak MB (DuckDB / Spark) | same rows |",
        "|---|---|---|---|---|---|",
    ]
    for q in summary["cross_domain_queries"]:
        lines.append(
            f"| q{q['query']} | {q['duckdb_seconds']:.2f} | {q['spark_seconds']:.2f} | "
            f"{q['spark_vs_duckdb']:.2f}x | {q['duckdb_gateway_peak_mb']} / {q['spark_gateway_peak_mb']} | "
            f"{'yes' if q['same_result'] is True else q['same_result']} |"
        )
    lines.append(f"\nGeomean Spark / DuckDB: {summary['geomean_spark_vs_duckdb']:.2f}x.\n")
    big = summary["big_join"]
    lines += [
        f"Join past the gateway's memory (`memory_limit` = `max_spill_size` = {big['memory_limit']}):",
        "",
        "| engine | outcome | seconds | gateway peak MB |",
        "|---|---|---|---|",
        *(
            f"| {name} | {big[name]['outcome']} | {big[name]['seconds']} | {big[name]['gateway_peak_mb']} |"
            for name in ("duckdb", "spark")
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/spark"))
    parser.add_argument("--low-memory", default="256MB")
    args = parser.parse_args()
    summary = run(args.scale, args.repetitions, args.out, args.low_memory)
    print(markdown(summary))


if __name__ == "__main__":
    main()
