"""Shared fixtures: a demo mesh written once, the oracle of its rules, and a real gateway
process on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.oracle import Oracle
from support.servers import (
    RunningGateway,
    configure,
    copy_mesh,
    start_gateway,
    stop_gateway,
)

from gateway.demo.mesh import write_demo_mesh


def pytest_configure(config: pytest.Config) -> None:
    """Every test runs under pytest-timeout (pyproject's ``timeout``): a hung server or
    client fails its own test, not the whole run. Without the plugin pytest would only
    warn about the unknown setting and run every test unbounded: refuse instead."""
    if not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError(
            "pytest-timeout is not installed: pip install -c constraints.txt -e '.[test]'"
        )
    if not float(config.getini("timeout") or 0) > 0:
        raise pytest.UsageError("pyproject.toml [tool.pytest.ini_options] must set a timeout")


@pytest.fixture(scope="session")
def demo_mesh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine demo mesh, shared read-only by the whole session; with
    ``MESHGATE_TEST_ACCELERATE=1`` every product is accelerated (held in memory), to run a
    suite (the adversarial one) against the in-memory copies."""
    mesh = write_demo_mesh(tmp_path_factory.mktemp("mesh") / "demo")
    if os.environ.get("MESHGATE_TEST_ACCELERATE") == "1":
        configure(mesh, "engine", accelerate_below_bytes=1024**3)
    return mesh


@pytest.fixture(scope="session")
def oracle(demo_mesh: Path) -> Iterator[Oracle]:
    """What each demo user should see of the pristine demo mesh, and its raw data
    (``support.oracle``)."""
    made = Oracle(demo_mesh)
    yield made
    made.close()


@pytest.fixture
def mesh_copy(demo_mesh: Path, tmp_path: Path) -> Path:
    """A private copy of the demo mesh that a test may change (without the session
    gateway's runtime state, such as its audit log)."""
    return copy_mesh(demo_mesh, tmp_path / "mesh")


@pytest.fixture(scope="session")
def gateway(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway for the session, serving the pristine demo mesh."""
    running = start_gateway(demo_mesh, tmp_path_factory.mktemp("logs") / "gateway.log")
    yield running
    stop_gateway(running)
