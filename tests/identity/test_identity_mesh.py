"""Mesh mode with identity tokens: a domain node trusts only the sealed ticket, which
carries the principal as the gateway resolved it from the token (user, roles,
attributes). alice with region=EU then region=US reads each token's rows from the sales
node, placed and in a federated join; the node never looks the user up itself."""

from __future__ import annotations

import pytest
from support.mesh import running_mesh
from support.oidc import adbc_rows, add_identity
from support.servers import copy_mesh

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

PLACED = "SELECT order_id, region FROM sales.orders ORDER BY order_id"
FEDERATED = (
    "SELECT o.order_id, o.region, c.name FROM sales.orders o "
    "JOIN crm.customers c ON o.customer_id = c.customer_id ORDER BY o.order_id"
)


def test_node_tickets_carry_the_tokens_principal(demo_mesh, provider, oracle, tmp_path):
    source = copy_mesh(demo_mesh, tmp_path / "source")
    add_identity(source, provider.issuer)
    expected = {
        region: oracle.raw_rows(
            "SELECT order_id, region FROM sales.orders WHERE region = ? ORDER BY order_id",
            [region],
        )
        for region in ("EU", "US")
    }
    with running_mesh(source, tmp_path, {"sales": 1}) as mesh:
        assert mesh.gateway is not None
        uri = mesh.gateway.uri
        for client, region in (("alice-eu", "EU"), ("alice-us", "US"), ("alice-eu", "EU")):
            token = provider.token(client)
            rows = [tuple(r) for r in adbc_rows(uri, token, PLACED)]
            assert rows == [tuple(r) for r in expected[region]], (client, "placed")
            joined = adbc_rows(uri, token, FEDERATED)
            assert joined and {r[1] for r in joined} == {region}, (client, "federated")
        assert mesh.stats("sales")["refused"] == 0
