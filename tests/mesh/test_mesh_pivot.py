"""PIVOT and UNPIVOT in mesh mode give what the embedded gateway gives (issue 14).

A dynamic PIVOT reads its source twice (DuckDB computes its values, then pivots): a
fragment it reads must be materialised, never streamed (a stream is read once).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.clients import adbc_connections
from support.mesh import Mesh, outcome, running_mesh
from support.servers import RunningGateway

pytestmark = pytest.mark.mesh

STATEMENTS = [
    ("alice", "PIVOT sales.orders ON region USING sum(amount) GROUP BY customer_id"),
    ("bob", "PIVOT sales.orders ON region USING count(*) GROUP BY customer_id"),
    (
        "alice",
        (
            "PIVOT (SELECT o.region, c.email FROM sales.orders o JOIN crm.customers c "
            "USING (customer_id) WHERE o.order_id < 500) ON region USING count(*) GROUP BY email"
        ),
    ),
    (
        "alice",
        (
            "SELECT * FROM sales.orders PIVOT (count(*) FOR region IN ('EU', 'US') "
            "GROUP BY customer_id)"
        ),
    ),
    ("alice", "UNPIVOT sales.orders ON order_id, customer_id INTO NAME k VALUE v"),
]


@pytest.fixture(scope="module")
def mesh(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_mesh(
        demo_mesh, tmp_path_factory.mktemp("mesh-pivot"), {"sales": 1, "crm": 1}
    ) as m:
        yield m


@pytest.mark.parametrize(("user", "sql"), STATEMENTS)
def test_a_pivot_in_mesh_mode_equals_embedded(
    user: str, sql: str, mesh: Mesh, gateway: RunningGateway
) -> None:
    with adbc_connections() as connect:
        got = outcome(connect(mesh.gateway.uri, user), sql)
        expected = outcome(connect(gateway.uri, user), sql)
    assert got[0] == "ok", got
    assert got == expected
