"""Fixtures of the adversarial suite: one ADBC connection per demo user. What the users
must never see comes from the session ``oracle`` (tests/conftest.py, ``support.oracle``).

Every attack runs twice: against a gateway holding every product in memory (accelerated),
whose secure subqueries read the in-memory copies, then against the session's gateway,
which reads the products' files. With ``MESHGATE_TEST_ACCELERATE=1`` the session's gateway
is accelerated already: the attacks then run once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clients import Clients, health
from support.servers import Private, RunningGateway, private_gateway

DEMO_PRODUCTS = {"crm.customers", "sales.orders", "logistics.shipments"}
SERVED_FROM = (
    ["files"] if os.environ.get("MESHGATE_TEST_ACCELERATE") == "1" else ["accelerated", "files"]
)


@pytest.fixture(scope="session", params=SERVED_FROM)
def gateway(
    request: pytest.FixtureRequest,
    gateway: RunningGateway,
    demo_mesh: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway | Private]:
    """The session's gateway (tests/conftest.py), or a gateway of the suite's own whose
    every product is held in memory: stopped when the suite moves on to the files."""
    if request.param == "files":
        yield gateway
        return
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("adversarial-accelerated"),
        engine={"accelerate_below_bytes": 1024**3},
    ) as running:
        assert set(health(running)["accelerated"]["products"]) == DEMO_PRODUCTS
        yield running


@pytest.fixture(scope="session")
def clients(gateway: RunningGateway | Private) -> Iterator[Clients]:
    pool = Clients(gateway.uri)
    yield pool
    pool.close()
