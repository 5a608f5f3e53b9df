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


def wait_until(
    predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> object:
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
    wait_until_ready(
        process, lambda: handshake(uri, "bob", "bob"), log_path, "gateway", timeout, interval=0.1
    )
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


def hidden_only_customers(uri: str, count: int = 40) -> list[int]:
    """Customers whose orders are all outside alice's row filter (region = 'EU'), asked
    of bob, who sees every order."""
    connection = adbc_connect(uri, "bob")
    try:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT customer_id FROM sales.orders GROUP BY customer_id "
            f"HAVING bool_and(region <> 'EU') ORDER BY customer_id LIMIT {count}"
        )
        return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def hidden_probe(customers: list[int]) -> str:
    """Issue 11's timing probe, its comparison bounded as the function allow-list wants:
    about 0.5 ms of work per order of ``customers`` that reaches the predicate."""
    constant = "ba" * 50
    return (
        f"SELECT count(*) FROM sales.orders WHERE CASE WHEN customer_id IN "
        f"({', '.join(map(str, customers))}) THEN "
        f"damerau_levenshtein(repeat('ab', 1000) || customer_id::VARCHAR, '{constant}') "
        f"ELSE 0 END > 5"
    )


def hidden_probe_timing_ratio(uri: str, alice, pairs: int = 12) -> float:
    """The median time of alice's probe on customers whose orders are all hidden from her
    over that on as many absent customers, alternating the order of each pair, after a
    warm-up. Each probe answers 0 rows."""
    import statistics
    import time

    hidden = hidden_only_customers(uri)
    assert len(hidden) >= 20, "the demo data should have customers alice sees no order of"
    absent = [10_000_000 + c for c in hidden]
    times: dict[str, list[float]] = {"hidden": [], "absent": []}
    cursor = alice.cursor()
    try:
        for round_ in range(pairs + 1):
            order = (("hidden", hidden), ("absent", absent))
            for name, customers in order if round_ % 2 else order[::-1]:
                started = time.perf_counter()
                cursor.execute(hidden_probe(customers))
                assert cursor.fetchall() == [(0,)]  # alice sees none of these orders
                if round_:
                    times[name].append(time.perf_counter() - started)
    finally:
        cursor.close()
    return statistics.median(times["hidden"]) / statistics.median(times["absent"])
