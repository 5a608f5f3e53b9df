"""Fixtures of the adversarial suite: the ground truth of the demo mesh and one ADBC
connection per demo user (see ``adv_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clients import Clients
from support.leaks import Truth, read_truth


@pytest.fixture(scope="session")
def truth(demo_mesh: Path) -> Truth:
    return read_truth(demo_mesh)


@pytest.fixture(scope="session")
def clients(gateway) -> Iterator[Clients]:
    pool = Clients(gateway.uri)
    yield pool
    pool.close()
