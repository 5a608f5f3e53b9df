"""Server processes of a run: gateways, domain nodes, the bare Flight servers, ROAPI; RSS sampling.

Every process is started by :class:`Processes` and killed (by its own pid) when the run
ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil

from benchmarks.launch import REPO as REPO  # re-exported: the suites and the report use it
from benchmarks.launch import (
    free_port,
    handshake,
    node_action,
    node_is_healthy,
    spawn,
    spawn_server,
    stop_process,
    wait_until_ready,
)
from gateway.config import load_config


@dataclass
class Server:
    """A server subprocess listening on ``uri``."""

    name: str
    uri: str
    process: subprocess.Popen
    log_path: Path
    #: A domain node's (domain, ticket key): what its ``health`` and ``stats`` actions need.
    node: tuple[str, str] | None = None

    def action(self, name: str) -> dict:
        """A domain node's answer to ``health`` or ``stats`` (``benchmarks.launch.node_action``)."""
        assert self.node is not None, f"{self.name} is not a domain node"
        return node_action(self.uri, name, self.node[1], self.node[0])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children."""
        try:
            proc = psutil.Process(self.process.pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0


@dataclass
class Processes:
    """Owns every server subprocess of a run."""

    logs_dir: Path
    servers: list[Server] = field(default_factory=list)
    #: Every server ever started by this object (running or not).
    started: list[Server] = field(default_factory=list)

    def _log_path(self, name: str) -> Path:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{name}.log"
        log_path.write_bytes(b"")
        return log_path

    def _started(self, name: str, process: subprocess.Popen, port: int, log_path: Path) -> Server:
        server = Server(name, f"grpc://127.0.0.1:{port}", process, log_path)
        self.servers.append(server)
        self.started.append(server)
        return server

    def _spawn(self, name: str, command: list[str], port: int) -> Server:
        """Start ``command`` (a server that is not Meshgate's), output to ``name``'s log."""
        log_path = self._log_path(name)
        return self._started(name, spawn(command, log_path), port, log_path)

    def _wait(self, server: Server, ready: Callable[[str], object], timeout: float) -> Server:
        try:
            wait_until_ready(
                server.process,
                lambda: ready(server.uri),
                server.log_path,
                server.name,
                timeout,
                0.1,
            )
        finally:
            if server.process.poll() is not None and server in self.servers:
                self.servers.remove(server)
        return server

    def start_gateway(
        self,
        mesh_dir: Path,
        user: str,
        password: str,
        timeout: float = 120.0,
        name: str = "gateway",
        source: Path = REPO,
    ) -> Server:
        """``python -m gateway.cli serve MESH --port P`` as the tests start it
        (tests/support/servers.py), ready once a Basic handshake as ``user`` succeeds.
        ``source``: the checkout whose gateway runs (default: this repository)."""
        server = self.spawn_gateway(mesh_dir, name, source)
        return self.wait_gateway(server, user, password, timeout)

    def spawn_gateway(self, mesh_dir: Path, name: str = "gateway", source: Path = REPO) -> Server:
        """Start a gateway without waiting for it (see :meth:`wait_gateway`)."""
        port = free_port()
        log_path = self._log_path(name)
        process = spawn_server("serve", mesh_dir, port, log_path, source=source)
        return self._started(name, process, port, log_path)

    def wait_gateway(
        self, server: Server, user: str, password: str, timeout: float = 120.0
    ) -> Server:
        """``server`` once a Basic handshake as ``user`` succeeds."""
        return self._wait(server, lambda uri: handshake(uri, user, password), timeout)

    def spawn_node(self, mesh_dir: Path, domain: str, port: int, name: str) -> Server:
        """``python -m gateway.cli node MESH --domain D --port P`` (mesh mode), not waited
        for: ``port`` is chosen by the caller, who lists it in the mesh's ``[nodes]``."""
        log_path = self._log_path(name)
        process = spawn_server("node", mesh_dir, port, log_path, "--domain", domain)
        server = self._started(name, process, port, log_path)
        server.node = (domain, load_config(mesh_dir).nodes.ticket_key or "")
        return server

    def wait_node(self, server: Server, timeout: float = 120.0) -> Server:
        """``server`` once its ``health`` action reports status ok."""
        domain, key = server.node or ("", "")
        return self._wait(server, lambda uri: node_is_healthy(uri, key, domain), timeout)

    def start_bare(
        self,
        name: str,
        mesh_dir: Path,
        mode: str,
        batch_rows: int,
        threads: int,
        memory_limit: str,
        preload: str | None = None,
        timeout: float = 600.0,
        setup: tuple[str, ...] = (),
        submit: bool = False,
    ) -> Server:
        """A minimal pyarrow.flight server (``benchmarks.bare_server``) in a subprocess;
        ``setup``: statements building its own in-memory DuckDB instead of the mesh's;
        ``submit``: its DoGet runs statements as the gateway does (``--submit``)."""
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "benchmarks.bare_server",
            "--mesh",
            str(mesh_dir),
            "--port",
            str(port),
            "--mode",
            mode,
            "--batch-rows",
            str(batch_rows),
            "--threads",
            str(threads),
            "--memory-limit",
            memory_limit,
        ]
        if preload:
            command += ["--preload", preload]
        for statement in setup:
            command += ["--setup", statement]
        if submit:
            command.append("--submit")
        server = self._spawn(name, command, port)
        return self._wait(server, _flight_ping, timeout)

    def start_roapi(
        self, executable: str, tables: dict[str, Path], timeout: float = 600.0
    ) -> Server:
        """ROAPI with its Flight SQL endpoint (HTTP and Postgres on private ports)."""
        port = free_port()
        command = [
            executable,
            "--addr-flight-sql",
            f"127.0.0.1:{port}",
            "--addr-http",
            f"127.0.0.1:{free_port()}",
            "--addr-postgres",
            f"127.0.0.1:{free_port()}",
        ]
        for name, path in tables.items():
            command += ["-t", f"{name}={path}"]
        server = self._spawn("roapi", command, port)

        def ready(uri: str) -> None:
            import adbc_driver_flightsql.dbapi as flightsql

            with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetch_arrow_table()

        return self._wait(server, ready, timeout)

    def stop(self, server: Server) -> None:
        stop_process(server.process)
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in list(self.servers):
            self.stop(server)

    def report(self) -> list[dict]:
        """Name, pid and exit code of every process started (None: still running)."""
        return [
            {"name": s.name, "pid": s.process.pid, "returncode": s.process.poll()}
            for s in self.started
        ]


def _flight_ping(uri: str) -> None:
    from pyarrow import flight

    client = flight.FlightClient(uri)
    try:
        list(client.list_actions())
    finally:
        client.close()


class _Sampler:
    """A background thread that samples every ``interval`` seconds while the ``with`` block
    runs, labelling each sample with the current ``phase`` (subclasses write ``_loop``)."""

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self.phase = "start"
        self.samples: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        raise NotImplementedError


class RssSampler(_Sampler):
    """Samples a server's RSS every ``interval`` seconds, labelled by the current phase."""

    def __init__(self, server: Server, interval: float = 0.1) -> None:
        super().__init__("rss-sampler", interval)
        self.server = server
        self._started = time.perf_counter()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(
                (time.perf_counter() - self._started, self.phase, self.server.rss_bytes())
            )
            self._stop.wait(self.interval)

    def peak(self, phase: str | None = None) -> int:
        values = [rss for _, p, rss in self.samples if phase is None or p == phase]
        return max(values, default=0)

    def phase_samples(self, phase: str) -> list[int]:
        return [rss for _, p, rss in self.samples if p == phase]


class LoadSampler(_Sampler):
    """Machine CPU use by processes outside this run, per phase (a noise indicator).

    Every ``interval`` seconds: the machine's busy CPU (in cores) minus the CPU used by
    this process and its children (the gateway, bare servers, ROAPI, decision workers).
    """

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__("load-sampler", interval)  # samples: (phase, machine cores, foreign cores)

    @staticmethod
    def _own_cpu_seconds() -> float:
        me = psutil.Process()
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def _loop(self) -> None:
        cores = psutil.cpu_count() or 1
        psutil.cpu_percent(interval=None)
        own_before, at_before = self._own_cpu_seconds(), time.perf_counter()
        while not self._stop.wait(self.interval):
            machine = psutil.cpu_percent(interval=None) / 100 * cores
            own_now, at_now = self._own_cpu_seconds(), time.perf_counter()
            own = max(0.0, (own_now - own_before) / max(at_now - at_before, 1e-6))
            own_before, at_before = own_now, at_now
            self.samples.append((self.phase, machine, max(0.0, machine - own)))

    def summary(self) -> dict:
        phases: dict[str, list[float]] = {}
        for phase, _, foreign in self.samples:
            phases.setdefault(phase, []).append(foreign)
        return {
            "foreign_cores_mean": {p: sum(v) / len(v) for p, v in phases.items()},
            "foreign_cores_max": {p: max(v) for p, v in phases.items()},
            "overall_foreign_cores_mean": (sum(f for _, _, f in self.samples) / len(self.samples))
            if self.samples
            else None,
            "cores": psutil.cpu_count(),
        }
