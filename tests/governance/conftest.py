"""Fixtures of the governance tests: the hand-written oracle of the demo rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.oracle import Oracle, hash_key


@pytest.fixture(scope="session")
def demo_key(demo_mesh: Path) -> str:
    """The demo mesh's `[governance] hash_key`."""
    return hash_key(demo_mesh)


@pytest.fixture(scope="session")
def oracle(demo_mesh: Path, demo_key: str) -> Iterator[Oracle]:
    """DuckDB on the demo files with each user's view of each product written by hand."""
    made = Oracle(demo_mesh, demo_key)
    yield made
    made.close()
