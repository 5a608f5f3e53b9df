"""Helpers of the hold tests: private gateways on mesh copies with changed settings,
server RSS sampling, server log and audit log readers, one-shot raw-SQL queries.

Every test that changes configuration starts its *own* gateway process on its *own*
copy of the demo mesh (``private_gateway``), so limits, audit counts and faults never
leak into the shared session gateway.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psutil
import pyarrow as pa
from pyarrow import flight
from support import free_port, log_records

from gateway.processes import handshake, spawn_server, wait_until_ready

AUDIT_FILE = Path(".meshgate/audit/audit.jsonl")


# --------------------------------------------------------------------------- mesh.toml


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
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


def copy_mesh(demo_mesh: Path, target: Path) -> Path:
    return Path(shutil.copytree(demo_mesh, target, ignore=shutil.ignore_patterns(".meshgate")))


# --------------------------------------------------------------------------- processes


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
) -> Private:
    """Start a gateway on ``mesh`` and wait until bob can log in."""
    port = port or free_port()
    process = spawn_server("serve", mesh, port, log_path)
    scheme = "grpc+tls" if tls_root_certs else "grpc"
    uri = f"{scheme}://127.0.0.1:{port}"
    wait_until_ready(
        process,
        lambda: handshake(uri, "bob", "bob", tls_root_certs),
        log_path,
        "gateway",
        timeout,
        interval=0.1,
    )
    return Private(uri, mesh, process, log_path, port, tls_root_certs)


@contextmanager
def private_gateway(
    demo_mesh: Path,
    tmp: Path,
    *,
    gateway: dict | None = None,
    engine: dict | None = None,
    name: str = "mesh",
) -> Iterator[Private]:
    """A private gateway on a fresh mesh copy with ``gateway``/``engine`` settings; killed
    on exit (a test may leave it busy with a runaway query)."""
    mesh = copy_mesh(demo_mesh, tmp / name)
    if gateway:
        configure(mesh, "gateway", **gateway)
    if engine:
        configure(mesh, "engine", **engine)
    running = start_private(mesh, tmp / f"{name}.log")
    try:
        yield running
    finally:
        running.kill()


# --------------------------------------------------------------------------- queries


def run_sql(
    private: Private,
    user: str,
    sql: str | bytes,
    timeout: float | None = None,
    client: tuple[flight.FlightClient, flight.FlightCallOptions] | None = None,
) -> pa.Table:
    """GetFlightInfo + DoGet of raw SQL as ``user``; raises the Flight error."""
    own = client is None
    flight_client, options = client or private.client(user)
    if timeout is not None:
        options = flight.FlightCallOptions(headers=options.headers, timeout=timeout)
    try:
        command = sql.encode() if isinstance(sql, str) else sql
        info = flight_client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        return flight_client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        if own:
            flight_client.close()


def timed(fn, *args, **kwargs) -> tuple[float, object, BaseException | None]:
    """(seconds, result or None, exception or None)."""
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        return time.monotonic() - started, None, exc
    return time.monotonic() - started, result, None


def serves(private: Private, user: str = "bob", timeout: float = 10.0) -> bool:
    """True when the gateway answers SELECT 1 correctly within ``timeout``."""
    try:
        table = run_sql(private, user, "SELECT 1 AS one", timeout=timeout)
    except flight.FlightError:
        return False
    return table.column(0).to_pylist() == [1]


# --------------------------------------------------------------------------- memory


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(
                    (time.monotonic() - self._started, self._process.memory_info().rss)
                )
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


MB = 1024 * 1024

#: What a client sees for a gRPC error status: pyarrow raises FlightError subclasses for
#: the Flight codes, and ArrowInvalid / ArrowNotImplementedError / ArrowKeyError for
#: INVALID_ARGUMENT / UNIMPLEMENTED / NOT_FOUND.
STATUS_ERRORS = (flight.FlightError, pa.ArrowException)


# --------------------------------------------------------------------------- logs


def audit_records(mesh: Path) -> list[dict]:
    path = mesh / AUDIT_FILE
    if not path.exists():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def message(exc: BaseException) -> str:
    """A Flight error's message without gRPC's debug context."""
    return str(exc).split(". gRPC client debug context")[0]
