"""Fixtures shared by the mesh tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.flightsql.service import SqlService
from tests.support.clients import adbc_connections


@pytest.fixture(scope="module")
def service(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> SqlService:
    """An in-process service over a private copy of the demo mesh, to plan and split
    queries and run them on its embedded engine (a module may define its own)."""
    mesh_dir = Path(
        shutil.copytree(
            demo_mesh,
            tmp_path_factory.mktemp("service") / "mesh",
            ignore=shutil.ignore_patterns(".meshgate"),
        )
    )
    return SqlService(MeshState(mesh_dir, load_config(mesh_dir)))


@pytest.fixture(scope="module")
def connections() -> Iterator:
    """ADBC connections, one per (gateway, user), opened lazily and closed at the end (a
    module whose servers must outlive them defines its own, depending on them)."""
    with adbc_connections() as get:
        yield get
