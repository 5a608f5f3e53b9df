"""Test helpers: start a real gateway process, connect with ADBC or pyarrow.flight."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from gateway.processes import (
    free_port,
    handshake,
    spawn_server,
    stop_process,
    wait_until_ready,
)


def log_records(text: str, event: str | None = None) -> list[dict]:
    """The JSON log records in a server's output (only those of ``event`` when given)."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if event is None or record.get("event") == event:
            records.append(record)
    return records


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05,
               what: str = "") -> object:
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds (generous: a loaded machine is slow, a passing poll is not)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def error_text(exc: BaseException) -> str:
    """Everything a client sees of an error: message plus ADBC/Flight details."""
    parts = [str(exc)]
    for attr in ("extra_info", "details", "sqlstate"):
        value = getattr(exc, attr, None)
        if value:
            parts.append(repr(value))
    return "\n".join(parts)


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
    wait_until_ready(process, lambda: handshake(uri, "bob", "bob"), log_path, "gateway", timeout, interval=0.1)
    return RunningGateway(uri, mesh_dir, process, log_path)


def stop_gateway(gateway: RunningGateway) -> None:
    stop_process(gateway.process)


@contextmanager
def adbc_connections() -> Iterator[Callable[[str, str], object]]:
    """``get(uri, user)``: one ADBC connection per (server, user), opened on first use and
    closed on exit (quietly: a connection to a killed process may not close cleanly)."""
    opened: dict[tuple[str, str], object] = {}

    def get(uri: str, user: str):
        if (uri, user) not in opened:
            opened[(uri, user)] = adbc_connect(uri, user)
        return opened[(uri, user)]

    try:
        yield get
    finally:
        for conn in opened.values():
            with suppress(Exception):
                conn.close()


def adbc_connect(uri: str, user: str, password: str | None = None):
    """An ADBC DB-API connection as ``user`` (demo password = user name)."""
    import adbc_driver_flightsql.dbapi as flightsql

    return flightsql.connect(
        uri,
        db_kwargs={"username": user, "password": user if password is None else password},
        autocommit=True,
    )


def flight_client(uri: str, user: str):
    """A plain pyarrow.flight client and call options carrying ``user``'s bearer token."""
    import pyarrow.flight as flight

    client = flight.FlightClient(uri)
    header = client.authenticate_basic_token(user, user)
    return client, flight.FlightCallOptions(headers=[header])
