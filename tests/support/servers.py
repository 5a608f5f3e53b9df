"""Gateway processes on 127.0.0.1 for the tests.

- ``start_gateway`` / ``stop_gateway``: a gateway serving a mesh as it is (the session
  ``gateway`` fixture of tests/conftest.py is one, on the pristine demo mesh).
- ``private_gateway`` / ``start_private``: a gateway of *one* test, on its own copy of the
  demo mesh with changed settings (``configure``), so that limits, audit counts and faults
  never leak into the shared session gateway.

Processes are started and awaited by ``benchmarks.launch``, the launcher the benchmarks use too.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from pyarrow import flight

from benchmarks.launch import free_port, handshake, spawn_server, stop_process, wait_until_ready
from support.logs import audit_records, log_records

# --------------------------------------------------------------------------- as it is


@dataclass
class RunningGateway:
    """A gateway process serving a mesh on 127.0.0.1."""

    uri: str
    mesh_dir: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(mesh_dir: Path, log_path: Path, timeout: float = 60.0) -> RunningGateway:
    """Start ``meshgate serve`` in a subprocess and wait until it accepts a handshake."""
    port = free_port()
    log_path.write_bytes(b"")
    process = spawn_server("serve", mesh_dir, port, log_path)
    uri = f"grpc://127.0.0.1:{port}"
    wait_until_ready(
        process, lambda: handshake(uri, "bob", "bob"), log_path, "gateway", timeout, interval=0.1
    )
    return RunningGateway(uri, mesh_dir, process, log_path)


def stop_gateway(gateway: RunningGateway) -> None:
    stop_process(gateway.process)


# --------------------------------------------------------------------------- private, changed settings


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def configure(mesh: Path, section: str, **settings: object) -> None:
    """Set ``settings`` in ``[section]`` of ``mesh/mesh.toml``: an existing key's line is
    replaced, a new key is inserted right after the section header."""
    path = mesh / "mesh.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    header = f"[{section}]"
    if header not in (line.strip() for line in lines):
        lines += ["", header]
    start = next(i for i, line in enumerate(lines) if line.strip() == header)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines)
    )
    for key, value in settings.items():
        rendered = f"{key} = {_toml_value(value)}"
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start + 1, end):
            if pattern.match(lines[i]):
                lines[i] = rendered
                break
        else:
            lines.insert(start + 1, rendered)
            end += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def configure_groups(mesh: Path, **settings: object) -> None:
    """Set ``settings`` in every resource group of ``mesh/mesh.toml``, ``default`` included
    (the demo's ``interactive`` too)."""
    text = (mesh / "mesh.toml").read_text(encoding="utf-8")
    groups = set(re.findall(r"^\[(workload\.groups\.[A-Za-z0-9_-]+)\]", text, re.MULTILINE))
    for section in sorted(groups | {"workload.groups.default"}):
        configure(mesh, section, **settings)


def copy_mesh(mesh: Path, target: Path) -> Path:
    """A copy of ``mesh`` at ``target`` that a test may change, without its runtime state
    (``.meshgate/``: the audit log of the gateway that served it, ...)."""
    return Path(shutil.copytree(mesh, target, ignore=shutil.ignore_patterns(".meshgate")))


@dataclass
class Private:
    """A gateway process of one test, on its own mesh copy."""

    uri: str
    mesh: Path
    process: subprocess.Popen
    log_path: Path
    port: int
    root_certs: bytes | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict]:
        return log_records(self.log(), name)

    def audit(self) -> list[dict]:
        return audit_records(self.mesh)

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def alive(self) -> bool:
        return self.process.poll() is None

    def client(
        self, user: str, password: str | None = None
    ) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
        kwargs = {"tls_root_certs": self.root_certs} if self.root_certs else {}
        client = flight.FlightClient(self.uri, **kwargs)
        header = client.authenticate_basic_token(user, user if password is None else password)
        return client, flight.FlightCallOptions(headers=[header])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL when it does not exit within ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self.kill()


def start_private(
    mesh: Path,
    log_path: Path,
    *,
    tls_root_certs: bytes | None = None,
    port: int | None = None,
    timeout: float = 60.0,
    ready: Callable[[str], object] | None = None,
) -> Private:
    """Start a gateway on ``mesh`` and wait until bob can log in (or ``ready(uri)`` stops
    raising: a gateway without password logins)."""
    port = port or free_port()
    process = spawn_server("serve", mesh, port, log_path)
    scheme = "grpc+tls" if tls_root_certs else "grpc"
    uri = f"{scheme}://127.0.0.1:{port}"
    wait_until_ready(
        process,
        (lambda: ready(uri)) if ready else (lambda: handshake(uri, "bob", "bob", tls_root_certs)),
        log_path,
        "gateway",
        timeout,
        interval=0.1,
    )
    return Private(uri, mesh, process, log_path, port, tls_root_certs)


#: for tests whose subject is a query that runs long: admit it whatever its estimated cost
NO_COST_LIMIT = {"max_estimated_rows": 1e30}


def all_heavy_at_once(mesh: Path) -> None:
    """``prepare`` for tests whose subject is not the heavy lane: heavy queries all run."""
    configure(mesh, "workload", max_heavy_running=64)


@contextmanager
def private_gateway(
    demo_mesh: Path,
    tmp: Path,
    *,
    gateway: dict | None = None,
    engine: dict | None = None,
    workload: dict | None = None,
    prepare: Callable[[Path], None] | None = None,
    name: str = "mesh",
) -> Iterator[Private]:
    """A private gateway on a fresh mesh copy with ``gateway``/``engine`` settings and
    ``workload`` settings of every resource group, then ``prepare(mesh)``; killed on exit (a test may leave it busy
    with a runaway query)."""
    mesh = copy_mesh(demo_mesh, tmp / name)
    if gateway:
        configure(mesh, "gateway", **gateway)
    if engine:
        configure(mesh, "engine", **engine)
    if workload:
        configure_groups(mesh, **workload)
    if prepare is not None:
        prepare(mesh)
    running = start_private(mesh, tmp / f"{name}.log")
    try:
        yield running
    finally:
        running.kill()
