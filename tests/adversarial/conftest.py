"""Fixtures of the adversarial suite: one ADBC connection per demo user. What the users
must never see comes from the session ``oracle`` (tests/conftest.py, ``support.oracle``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.clients import Clients


@pytest.fixture(scope="session")
def clients(gateway) -> Iterator[Clients]:
    pool = Clients(gateway.uri)
    yield pool
    pool.close()
