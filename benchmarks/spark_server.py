"""A Spark Connect server on 127.0.0.1 from the pyspark wheel, for the tests and benchmarks.

``python -m benchmarks.spark_server PORT [MASTER]`` with the token in the environment
(``MESHGATE_SPARK_TOKEN``) runs Spark (``local[2]`` by default, or a standalone master's
``spark://`` URL) with the Spark Connect plugin until it is terminated. ``start`` runs
that in a child process and waits until the server answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TOKEN_VARIABLE = "MESHGATE_SPARK_TOKEN"


@dataclass
class SparkServer:
    """A running Spark Connect server."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    log_path: Path

    @property
    def remote(self) -> str:
        """The address a client (Meshgate's ``[engines.spark] remote``) connects to."""
        return f"sc://localhost:{self.port}/;token={self.token}"


def start(
    port: int, token: str, log_path: Path, master: str = "local[2]", timeout: float = 180.0
) -> SparkServer:
    """Start the server in a child process and wait (polling) until it answers."""
    env = {**os.environ, TOKEN_VARIABLE: token, "SPARK_LOCAL_IP": "127.0.0.1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.spark_server", str(port), master],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,  # its JVM too is stopped with the process group
        )
    server = SparkServer(process, port, token, log_path)
    from gateway.spark.connect import SparkConnect

    client = SparkConnect(server.remote, connect_timeout_seconds=5.0)
    deadline = time.monotonic() + timeout
    try:
        while not client.reachable():
            if process.poll() is not None or time.monotonic() > deadline:
                stop(server)
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the Spark Connect server did not start:\n{tail}")
            time.sleep(0.5)
    finally:
        client.close()
    return server


def stop(server: SparkServer, timeout: float = 30.0) -> None:
    """Terminate the server and its JVM (the whole process group) and wait for them."""
    group = server.process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # a JVM still busy with a job
    server.process.wait(timeout)


def _serve(port: int, master: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(master)
        .config("spark.api.mode", "classic")
        .config("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
        .config("spark.connect.grpc.binding.address", "127.0.0.1")
        .config("spark.connect.grpc.binding.port", str(port))
        .config("spark.connect.authenticate.token", os.environ[TOKEN_VARIABLE])
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    print(f"spark connect serving on 127.0.0.1:{port} ({master})", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        session.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "local[2]")
