"""Fixtures of the governance tests. The oracle of the demo rules they compare with is the
session ``oracle`` (tests/conftest.py, ``support.oracle``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.oracle import hash_key


@pytest.fixture(scope="session")
def demo_key(demo_mesh: Path) -> str:
    """The demo mesh's `[governance] hash_key`."""
    return hash_key(demo_mesh)
