"""The gateway's ``/metrics`` in mesh mode: each replica's reachability, as the gateway's
health checks see it, follows a node that dies and comes back; the bytes federated queries
move from the nodes match their audit and log."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from support.clients import adbc_connect
from support.logs import log_records, statement_records
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


def test_bytes_moved_by_a_federated_query_reach_its_audit_and_the_metrics(
    demo_mesh: Path, tmp_path: Path
):
    """A cross-domain query through ADBC: what its fragments moved from the nodes is in its
    ``federated_query`` log line, its audit ``query_end`` and ``/metrics``, the same figure;
    a query whose rows come straight from one node moved nothing through the gateway."""
    source = copy_mesh(demo_mesh, tmp_path / "source")
    configure(source, "metrics", port=0)
    run = tmp_path / "run"
    run.mkdir()
    joined = (
        "SELECT c.region, count(*) AS n FROM sales.orders o "
        "JOIN crm.customers c USING (customer_id) GROUP BY c.region"
    )
    single = "SELECT count(*) AS n FROM sales.orders"
    with running_mesh(source, run, {"sales": 1, "crm": 1}) as mesh:
        assert mesh.gateway is not None
        url = metrics_url(log_records(mesh.gateway.log(), "gateway_started"))
        assert scrape(url).value("meshgate_federated_bytes_moved_total") == 0
        with contextlib.closing(adbc_connect(mesh.gateway.uri, "bob")) as conn:
            for sql in (joined, single):
                with conn.cursor() as cursor:
                    cursor.execute(sql)
                    assert cursor.fetch_arrow_table().num_rows > 0
        ends = wait_until(
            lambda: _ends_of(mesh.mesh_dir, (joined, single)),
            timeout=60,
            what="both queries' end records",
        )
        (logged,) = log_records(mesh.gateway.log(), "federated_query")
        moved = scrape(url).value("meshgate_federated_bytes_moved_total")
    assert logged["bytes_moved"] > 0
    assert ends[joined]["bytes_moved"] == logged["bytes_moved"] == moved
    assert ends[single]["outcome"] == "ok" and ends[single]["bytes_moved"] is None


def _ends_of(mesh: Path, statements: tuple[str, ...]) -> dict[str, dict] | None:
    """The end record of each statement, once all are written."""
    found = {
        sql: record
        for sql in statements
        for record in statement_records(mesh, sql)
        if record["event"] == "query_end"
    }
    return found if len(found) == len(statements) else None
