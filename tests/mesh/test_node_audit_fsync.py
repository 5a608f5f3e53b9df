"""A domain node's audit log is as durable as the gateway's: it follows ``[audit] fsync``.

With ``"batch"`` (the default) a ticket's begin record is written to the OS before its
first batch leaves, and fsynced later by the flusher; with ``"always"`` the first batch
waits for the fsync. The node runs in this process (its ``os.fsync`` replaced by a
``FakeDisk`` that remembers every call) behind a real gateway process; the client fetches
the rows from the node as ADBC would, with the ticket of the gateway's FlightInfo.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from pyarrow import flight
from support.clients import raw_info
from support.disks import FakeDisk
from support.servers import configure, copy_mesh, start_gateway, stop_gateway

from benchmarks.launch import free_port
from gateway.audit.log import read_audit
from gateway.config import load_config
from gateway.mesh.node import DomainNode

pytestmark = pytest.mark.mesh


@pytest.mark.parametrize("mode", ["batch", "always"])
def test_node_audit_follows_the_fsync_setting(
    demo_mesh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    disk = FakeDisk().install(monkeypatch)
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    location = f"grpc://127.0.0.1:{free_port()}"
    # the flusher waits a minute: within the test, only "always" fsyncs
    configure(mesh, "audit", fsync=mode, fsync_interval_ms=60_000)
    with (mesh / "mesh.toml").open("a", encoding="utf-8") as config:
        key = os.urandom(32).hex()
        config.write(
            f'\n[nodes]\nticket_key = "{key}"\n\n[nodes.domains]\nsales = ["{location}"]\n'
        )
    node = DomainNode(location, mesh, load_config(mesh), "sales")
    threading.Thread(target=node.serve, name="test-node", daemon=True).start()
    gateway = start_gateway(mesh, tmp_path / "gateway.log")
    try:
        info = raw_info(gateway.uri, "bob", "SELECT order_id FROM sales.orders")
        (endpoint,) = info.endpoints
        assert [str(loc.uri.decode()) for loc in endpoint.locations] == [location]
        client = flight.FlightClient(location)
        try:
            reader = client.do_get(endpoint.ticket)
            assert reader.read_chunk().data.num_rows > 0
        finally:
            client.close()
        begins = [
            r
            for r in read_audit(mesh / ".meshgate" / "audit" / "node-sales")
            if r["event"] == "ticket_begin"
        ]
        assert [b["user"] for b in begins] == ["bob"]  # written before the first batch left
        if mode == "always":
            assert disk.covered, "the node streamed before its begin record was fsynced"
        else:
            assert disk.covered == [], "the node fsynced each record despite fsync = batch"
    finally:
        stop_gateway(gateway)
        node.shutdown()
