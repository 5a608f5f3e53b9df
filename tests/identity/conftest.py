"""The identity tests' OpenID provider (a real one: oidc-provider on Node.js) and a gateway
trusting it, on a copy of the demo mesh, shared by a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.oidc import Provider, add_identity, start_provider
from support.servers import Private, copy_mesh, start_private


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """One provider for the session's identity tests that never restart it."""
    running = start_provider(tmp_path_factory.mktemp("oidc"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def identity_gateway(
    demo_mesh: Path, provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Private]:
    """A gateway on a demo mesh copy trusting ``provider`` (password logins still on)."""
    tmp = tmp_path_factory.mktemp("identity-gateway")
    mesh = copy_mesh(demo_mesh, tmp / "mesh")
    add_identity(mesh, provider.issuer)
    running = start_private(mesh, tmp / "gateway.log")
    yield running
    running.stop()
