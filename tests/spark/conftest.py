"""Fixtures of the Spark tests: one real Spark Connect server for the session (from the
pyspark wheel, on 127.0.0.1, with a token), and a gateway that sends queries to it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.servers import Private, configure, configure_groups, copy_mesh, start_private

from benchmarks.launch import free_port
from benchmarks.spark_server import SparkServer, start, stop
from gateway.spark.connect import SparkConnect


@pytest.fixture(scope="session")
def spark_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkServer]:
    """Spark (local[2]) with the Spark Connect plugin; its JVM starts once per session."""
    log = tmp_path_factory.mktemp("spark") / "spark-connect.log"
    server = start(free_port(), secrets.token_hex(16), log)
    yield server
    stop(server)


@pytest.fixture(scope="session")
def spark(spark_server: SparkServer) -> Iterator[SparkConnect]:
    """The gateway's own Spark Connect client, on the session's server."""
    client = SparkConnect(spark_server.remote)
    yield client
    client.close()


def spark_mesh(demo_mesh: Path, target: Path, **settings: object) -> Path:
    """A copy of the demo mesh with ``[engines.spark]`` ``settings`` (``remote`` at least)."""
    mesh = copy_mesh(demo_mesh, target)
    configure(mesh, "engines.spark", **settings)
    return mesh


@pytest.fixture(scope="session")
def spark_gateway(
    demo_mesh: Path, spark_server: SparkServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Private]:
    """A gateway on the demo mesh that runs every query on Spark (``route = "always"``)."""
    root = tmp_path_factory.mktemp("spark-mesh")
    mesh = spark_mesh(demo_mesh, root / "mesh", remote=spark_server.remote, route="always")
    running = start_private(mesh, root / "gateway.log")
    yield running
    running.stop()


@pytest.fixture
def spark_private(
    demo_mesh: Path, spark_server: SparkServer, tmp_path: Path
) -> Iterator[Callable[..., Private]]:
    """``start(engine={...}, crm_policy=(...), workload={...}, prepare=f, **spark_settings)``:
    a gateway of one test on its own demo mesh copy with ``[engines.spark]`` settings
    (``remote`` defaults to the session's server), ``[engine]`` settings, extra crm policy
    lines, default resource group settings and ``prepare(mesh)`` applied; killed at the end."""
    started: list[Private] = []

    def start_one(
        engine: dict | None = None,
        crm_policy: tuple[str, ...] = (),
        workload: dict | None = None,
        prepare: Callable[[Path], None] | None = None,
        **spark: object,
    ) -> Private:
        index = len(started)
        spark.setdefault("remote", spark_server.remote)
        mesh = spark_mesh(demo_mesh, tmp_path / f"mesh{index}", **spark)
        if engine:
            configure(mesh, "engine", **engine)
        if workload:
            configure_groups(mesh, **workload)
        if crm_policy:
            with (mesh / "crm" / "policy.csv").open("a", encoding="utf-8") as policy:
                policy.write("".join(f"{line}\n" for line in crm_policy))
        if prepare is not None:
            prepare(mesh)
        running = start_private(mesh, tmp_path / f"gateway{index}.log")
        started.append(running)
        return running

    yield start_one
    for running in started:
        running.kill()
