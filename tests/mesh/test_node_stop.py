"""A domain node stops gracefully: a stream running when it is told to stop finishes
whole, while new tickets are refused, ``health`` answers "draining" (so the gateway sends
it nothing new and does not take it for gone), and only then does it shut down.

The node runs in this process behind a real gateway process; the client fetches a placed
endpoint from the node as ADBC would, reading one batch before the stop and the rest after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from pyarrow import flight
from support.clients import flight_client, raw_info
from support.logs import audit_records
from support.mesh import running_mesh
from support.polling import wait_until
from support.servers import configure, copy_mesh, start_gateway, stop_gateway

from benchmarks.launch import free_port, node_action
from gateway.audit.log import read_audit
from gateway.config import load_config
from gateway.mesh.node import DomainNode

pytestmark = pytest.mark.mesh

ALL_ORDERS = "SELECT * FROM sales.orders"
#: 2,000,000 rows, about 100 MB: more than gRPC buffers, so the node's stream waits for
#: the client while it does not read
TEN_TIMES = (
    "SELECT o.*, t.order_id AS twin FROM sales.orders o "
    "CROSS JOIN (SELECT order_id FROM sales.orders ORDER BY order_id LIMIT 10) t"
)


def test_a_stopping_node_finishes_its_streams_and_takes_nothing_new(
    demo_mesh: Path, tmp_path: Path
) -> None:
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    location = f"grpc://127.0.0.1:{free_port()}"
    key = os.urandom(32).hex()
    with (mesh / "mesh.toml").open("a", encoding="utf-8") as config:
        config.write(
            f'\n[nodes]\nticket_key = "{key}"\n\n[nodes.domains]\nsales = ["{location}"]\n'
        )
    node = DomainNode(location, mesh, load_config(mesh), "sales")
    threading.Thread(target=node.serve, name="test-node", daemon=True).start()
    gateway = start_gateway(mesh, tmp_path / "gateway.log")
    client = flight.FlightClient(location)
    stopper = threading.Thread(target=node.stop_gracefully, args=(60.0,), name="test-stop")
    reader = None
    try:
        (running,) = raw_info(gateway.uri, "bob", TEN_TIMES).endpoints
        (refused,) = raw_info(gateway.uri, "bob", ALL_ORDERS).endpoints
        reader = client.do_get(running.ticket)
        rows = reader.read_chunk().data.num_rows
        wait_until(lambda: node.counters.as_dict()["tickets"] == 1, what="the stream to start")
        stopper.start()
        wait_until(lambda: node.draining, what="the node to drain")
        assert node_action(location, "health", key, "sales")["status"] == "draining"
        with pytest.raises(flight.FlightUnavailableError, match="stopping"):
            client.do_get(refused.ticket).read_all()
        wait_until(  # once its health check (cached a second) sees the node draining
            lambda: _refused(gateway.uri), what="the gateway to send the node nothing new"
        )
        assert stopper.is_alive()  # waiting for the running stream
        for chunk in reader:
            rows += chunk.data.num_rows
        assert rows == 2_000_000
        stopper.join(timeout=60)
        assert not stopper.is_alive()
        with pytest.raises(flight.FlightUnavailableError):
            node_action(location, "health", key, "sales")
    finally:
        if reader is not None:  # read whole, or the test failed: never leave the call held
            reader.cancel()
        client.close()
        stop_gateway(gateway)
        if not stopper.is_alive() and not stopper.ident:
            node.shutdown()


def test_a_node_process_stops_despite_a_client_that_stopped_reading(
    demo_mesh: Path, tmp_path: Path
) -> None:
    """``meshgate node`` on SIGTERM with a client that read one batch of a placed stream and
    then neither reads nor goes away (its gRPC call is held for ever): after the grace the
    node abandons the call and exits, its audit log closed (whole records)."""
    source = copy_mesh(demo_mesh, tmp_path / "source")
    configure(source, "gateway", shutdown_grace_seconds=1)
    with running_mesh(source, tmp_path, {"sales": 1}) as mesh:
        node = mesh.node("sales")
        assert node.process is not None
        (endpoint,) = raw_info(mesh.gateway.uri, "bob", TEN_TIMES).endpoints
        client = flight.FlightClient(endpoint.locations[0])
        try:
            _sigterm_while_stalled(node.process, client.do_get(endpoint.ticket), "node")
        finally:
            client.close()
        log = node.log_path.read_text(encoding="utf-8")
        audit = mesh.node_audit_path("sales").read_text(encoding="utf-8").splitlines()
    assert node.process.returncode == 0
    assert "shutdown_abandons_calls" in log
    records = [json.loads(line) for line in audit]  # whole records only: closed, not torn
    assert any(r["event"] == "ticket_begin" for r in records)
    # the stream the client left suspended was closed at the stop, its query freed
    assert [r["outcome"] for r in records if r["event"] == "ticket_end"] == ["shutdown"]


def _sigterm_while_stalled(
    process: subprocess.Popen, reader: flight.FlightStreamReader, name: str
) -> None:
    """Read one batch of ``reader``, then no more; SIGTERM ``process`` and wait for it to
    exit. The reader is cancelled afterwards, whatever happened."""
    try:
        assert reader.read_chunk().data.num_rows > 0  # then it reads no more
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the {name} never exited: SIGTERM waited for the stalled client")
    finally:
        reader.cancel()


def _ticket_ends(mesh, domain: str) -> list[dict]:
    records = read_audit(mesh.node_audit_path(domain).parent)
    return [r for r in records if r["event"] == "ticket_end"]


def test_a_node_frees_the_stream_of_a_client_that_stopped_reading(
    demo_mesh: Path, tmp_path: Path
) -> None:
    """A client that reads one batch of a placed stream and then neither reads nor goes away
    holds its call, but not the node's query past the time limit: the node closes the
    stream, its ticket_end and the gateway's query_end say "timeout"."""
    source = copy_mesh(demo_mesh, tmp_path / "source")
    configure(source, "engine", query_timeout_seconds=2)
    with running_mesh(source, tmp_path, {"sales": 1}) as mesh:
        (endpoint,) = raw_info(mesh.gateway.uri, "bob", TEN_TIMES).endpoints
        client = flight.FlightClient(endpoint.locations[0])
        try:
            reader = client.do_get(endpoint.ticket)
            try:
                assert reader.read_chunk().data.num_rows > 0  # then it reads no more
                ends = wait_until(
                    lambda: _ticket_ends(mesh, "sales"),
                    timeout=60,
                    what="the node to close the stream nobody reads",
                )
                assert [e["outcome"] for e in ends] == ["timeout"]
                query_ends = wait_until(
                    lambda: [r for r in audit_records(mesh.mesh_dir) if r["event"] == "query_end"],
                    timeout=30,
                    what="the gateway to collect the node's report",
                )
            finally:
                reader.cancel()
        finally:
            client.close()
    assert [e["outcome"] for e in query_ends] == ["timeout"]
    assert "time limit" in query_ends[0]["error"]


def test_a_relayed_stream_a_client_stopped_reading_ends_as_shutdown(
    demo_mesh: Path, tmp_path: Path
) -> None:
    """Rows the gateway relays from a node (raw SQL as the DoGet ticket) to a client that
    stopped reading: SIGTERM closes the stream after the grace, and the gateway's audit
    says "shutdown", not that the client went away."""
    source = copy_mesh(demo_mesh, tmp_path / "source")
    configure(source, "gateway", shutdown_grace_seconds=1)
    with running_mesh(source, tmp_path, {"sales": 1}) as mesh:
        gateway = mesh.gateway
        client, options = flight_client(gateway.uri, "bob")
        try:
            reader = client.do_get(flight.Ticket(TEN_TIMES.encode()), options)
            _sigterm_while_stalled(gateway.process, reader, "gateway")
        finally:
            client.close()
        ends = [r for r in audit_records(mesh.mesh_dir) if r["event"] == "query_end"]
    assert gateway.process.returncode == 0
    assert [(e["outcome"], e["error"]) for e in ends] == [
        ("shutdown", "the query was cancelled: the gateway is shutting down; run it again")
    ]


def _refused(uri: str) -> bool:
    """Whether the gateway refuses a query of the sales domain as unavailable."""
    try:
        raw_info(uri, "bob", ALL_ORDERS)
    except flight.FlightError as exc:
        assert "domain sales is unavailable" in str(exc)
        return True
    return False
