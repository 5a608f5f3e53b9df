"""Fixtures of the adversarial suite: one ADBC connection per demo user. What the users
must never see comes from the session ``oracle`` (tests/conftest.py, ``support.oracle``).

Every attack runs twice: against the session's gateway, which reads the products' files,
and against a gateway holding every product in memory (accelerated), whose secure
subqueries read the in-memory copies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clients import Clients, health
from support.servers import Private, RunningGateway, private_gateway

DEMO_PRODUCTS = {"crm.customers", "sales.orders", "logistics.shipments"}


@pytest.fixture(scope="session")
def accelerated_gateway(
    demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Private]:
    """A gateway of its own whose every demo product is held in memory."""
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("adversarial-accelerated"),
        engine={"accelerate_below_bytes": 1024**3},
    ) as running:
        assert set(health(running)["accelerated"]["products"]) == DEMO_PRODUCTS
        yield running


@pytest.fixture(scope="session", params=["files", "accelerated"])
def gateway(request: pytest.FixtureRequest, gateway: RunningGateway) -> RunningGateway | Private:
    """The session's gateway (tests/conftest.py), or the accelerated one."""
    if request.param == "accelerated":
        return request.getfixturevalue("accelerated_gateway")
    return gateway


@pytest.fixture(scope="session")
def clients(gateway: RunningGateway | Private) -> Iterator[Clients]:
    pool = Clients(gateway.uri)
    yield pool
    pool.close()
