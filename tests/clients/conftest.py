"""Fixtures of the client tests: one Superset (in its own environment, tests/support/superset.py)
for the session, with one database connection per Meshgate user it stands for."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.servers import RunningGateway
from support.superset import Superset, running_superset


@pytest.fixture(scope="session")
def superset(
    gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Superset]:
    """Superset on 127.0.0.1, logged in as its test admin (built on first use: minutes)."""
    with running_superset(tmp_path_factory.mktemp("superset")) as running:
        yield running


@pytest.fixture(scope="session")
def databases(superset: Superset, gateway: RunningGateway) -> dict[str, int]:
    """user -> the id of the Superset database connection that logs in to the session
    gateway as that Meshgate user (Superset keeps one set of credentials per connection)."""
    port = gateway.uri.rsplit(":", 1)[1]
    return {
        user: superset.add_database(
            f"meshgate-{user}", f"meshgate://{user}:{user}@127.0.0.1:{port}"
        )
        for user in ("alice", "carol")
    }


@pytest.fixture(scope="session")
def orders_dataset(superset: Superset, databases: dict[str, int]) -> int:
    """The id of the Superset dataset sales.orders on alice's connection."""
    return superset.add_dataset(databases["alice"], "sales", "orders")
