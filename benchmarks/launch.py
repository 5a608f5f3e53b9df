"""Gateway and node processes on 127.0.0.1, for the benchmarks and the tests: start
``meshgate serve`` / ``meshgate node`` in a subprocess, wait until it answers, stop it.

One place for what both need: a free port, the command line, the log file, the wait that
fails with the server's own log when it exits early or never becomes ready. The gateway
itself never starts its own processes this way: this is a harness, not the runtime
(``benchmarks.procs`` builds a benchmark run's processes on it; tests/support/ the tests').
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gateway.mesh.actions import ACTION_HEALTH

#: The repository root: the working directory and import path of every server started here.
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def repo_env(source: Path = REPO) -> dict[str, str]:
    """This environment with the repository (or another checkout of it, ``source``)
    importable (``python -m gateway.cli``)."""
    return {**os.environ, "PYTHONPATH": str(source)}


def spawn(argv: list[str], log_path: Path, source: Path = REPO) -> subprocess.Popen:
    """``argv`` in a subprocess run from the repository (``repo_env``), not waited for; its
    output is appended to ``log_path``. ``source``: another checkout to run instead (a
    worktree of an older commit, for a before/after measurement)."""
    with log_path.open("ab") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=repo_env(source), cwd=source
        )


def spawn_server(
    command: str, mesh_dir: Path, port: int, log_path: Path, *options: str, source: Path = REPO
) -> subprocess.Popen:
    """``python -m gateway.cli COMMAND MESH --port P --json-logs OPTIONS``, not waited for;
    its output is appended to ``log_path`` (``source``: see ``spawn``)."""
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        command,
        str(mesh_dir),
        "--port",
        str(port),
        "--json-logs",
        *options,
    ]
    return spawn(argv, log_path, source)


def wait_until_ready(
    process: subprocess.Popen,
    ready: Callable[[], object],
    log_path: Path,
    name: str,
    timeout: float = 60.0,
    interval: float = 0.05,
) -> None:
    """Call ``ready()`` until it stops raising. RuntimeError (with the end of the server's
    log) if the process exits first or ``timeout`` passes; the process is then stopped."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{_log_tail(log_path)}")
        try:
            ready()
            return
        except Exception as exc:  # noqa: BLE001 - not answering yet
            last_error = exc
        if time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(
                f"{name} not ready after {timeout:.0f} s: {last_error}\n{_log_tail(log_path)}"
            )
        time.sleep(interval)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; always reaped."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def handshake(uri: str, user: str, password: str, tls_root_certs: bytes | None = None) -> None:
    """Log in to a gateway with Basic credentials (raises the Flight error if refused)."""
    from pyarrow import flight

    client = flight.FlightClient(
        uri, **({"tls_root_certs": tls_root_certs} if tls_root_certs else {})
    )
    try:
        client.authenticate_basic_token(user, password)
    finally:
        client.close()


def node_action(uri: str, name: str, key: str, domain: str, timeout: float = 5.0) -> dict:
    """The JSON answer of ``domain``'s node at ``uri`` to ``health`` or ``stats``, asked as
    the gateway asks: with a control ticket sealed with the mesh's ticket ``key``."""
    from pyarrow import flight

    from gateway.mesh.tickets import TicketSealer

    body = TicketSealer(key, 1).seal_control(domain, name)
    client = flight.FlightClient(uri)
    try:
        results = list(
            client.do_action(flight.Action(name, body), flight.FlightCallOptions(timeout=timeout))
        )
        return json.loads(results[0].body.to_pybytes())
    finally:
        client.close()


def node_is_healthy(uri: str, key: str, domain: str, timeout: float = 1.0) -> None:
    """Raise unless ``domain``'s node at ``uri`` reports status ok (see ``node_action``)."""
    status = node_action(uri, ACTION_HEALTH, key, domain, timeout=timeout).get("status")
    if status != "ok":
        raise RuntimeError(f"node status {status!r}")


def _log_tail(log_path: Path, size: int = 4000) -> str:
    try:
        return log_path.read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return ""
