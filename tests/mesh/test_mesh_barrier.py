"""The security barrier on a domain node (issue 11, point 1): the node runs the governed
SQL the gateway sealed, so a costly predicate on hidden rows costs nothing there either."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.clients import adbc_connect
from support.mesh import running_mesh
from support.probes import hidden_probe_timing_ratio

pytestmark = [pytest.mark.mesh, pytest.mark.slow]


def test_probe_time_does_not_depend_on_hidden_rows_on_a_node(demo_mesh: Path, tmp_path: Path):
    """Before the barrier: 12 ms vs 140-213 ms in the review."""
    with running_mesh(demo_mesh, tmp_path, {"sales": 1}) as mesh:
        connection = adbc_connect(mesh.gateway.uri, "alice")
        try:
            assert hidden_probe_timing_ratio(mesh.gateway.uri, connection) < 2.0
        finally:
            connection.close()
