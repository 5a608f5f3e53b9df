"""Node health on the gateway's ``/metrics`` in mesh mode: each replica's reachability, as
the gateway's health checks see it, follows a node that dies and comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.logs import log_records
from support.mesh import running_mesh
from support.metrics import metrics_url, scrape
from support.polling import wait_until
from support.servers import configure, copy_mesh

pytestmark = [pytest.mark.mesh, pytest.mark.slow]


def test_node_up_follows_each_replica(demo_mesh: Path, tmp_path: Path):
    source = copy_mesh(demo_mesh, tmp_path / "source")
    configure(source, "metrics", port=0)
    run = tmp_path / "run"
    run.mkdir()
    with running_mesh(source, run, {"sales": 2, "crm": 1}) as mesh:
        assert mesh.gateway is not None
        url = metrics_url(log_records(mesh.gateway.log(), "gateway_started"))
        first, second = mesh.nodes["sales"]
        (crm,) = mesh.nodes["crm"]

        def up() -> dict[tuple[str, str], float]:
            now = scrape(url)
            return {
                (domain, location): now.value("meshgate_node_up", domain=domain, location=location)
                for domain, location in (
                    ("sales", first.uri),
                    ("sales", second.uri),
                    ("crm", crm.uri),
                )
            }

        assert up() == {("sales", first.uri): 1, ("sales", second.uri): 1, ("crm", crm.uri): 1}
        assert scrape(url).labels("meshgate_node_up", "domain") == {"sales", "crm"}

        second.kill()
        assert wait_until(lambda: up()[("sales", second.uri)] == 0, what="the dead replica down")
        assert up() == {("sales", first.uri): 1, ("sales", second.uri): 0, ("crm", crm.uri): 1}

        mesh.ensure_running("sales")
        assert wait_until(lambda: up()[("sales", second.uri)] == 1, what="the replica back up")
