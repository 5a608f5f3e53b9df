"""Mesh-mode security (issue 11, points 3-5), through real processes on 127.0.0.1.

- the gateway's ``Health`` action names only what the caller may read;
- nodes answer ``health`` and ``stats`` to the gateway only (a control ticket sealed with
  the shared key); anyone else gets UNAUTHENTICATED, no data, and an audit record;
- a ticket sealed before a revocation is refused by the node (and by the gateway's relay)
  once the revocation is in force.

One module-scoped mesh of its own (sales, crm and logistics nodes, one gateway), since the
revocation tests edit its policy files; every process is stopped at teardown.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mesh_support import Mesh, running_mesh
from pyarrow import flight
from support import flight_client

from gateway.tickets import MAGIC, TicketSealer

pytestmark = pytest.mark.mesh

PRODUCTS = ("sales.orders", "crm.customers", "logistics.shipments")
# What must never reach a caller who may not know it: product, table and domain names.
SECRET_NAMES = ("orders", "customers", "shipments", "sales", "crm", "logistics")


@pytest.fixture(scope="module")
def mesh(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mesh-security")
    with running_mesh(demo_mesh, root, {"sales": 1, "crm": 1, "logistics": 1}) as running:
        yield running


def gateway_health(mesh: Mesh, user: str) -> tuple[bytes, dict]:
    """The raw bytes and the JSON of ``user``'s Health action on the mesh gateway."""
    client, options = flight_client(mesh.gateway.uri, user)
    try:
        raw = next(iter(client.do_action(flight.Action("Health", b""), options))).body.to_pybytes()
    finally:
        client.close()
    return raw, json.loads(raw)


def json_lines_since(path: Path, offset: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


# ------------------------------------------------------------------ 3. gateway Health


def test_health_of_a_user_who_may_read_nothing_names_nothing(mesh: Mesh):
    raw, health = gateway_health(mesh, "dave")
    assert health["products"] == {} and health.get("nodes", {}) == {}
    text = raw.decode()
    leaked = [name for name in SECRET_NAMES if name in text]
    assert not leaked, f"dave's Health names {leaked}: {text}"
    for replicas in mesh.nodes.values():
        for node in replicas:
            assert str(node.port) not in text and "grpc://" not in text, f"address leaked: {text}"


def test_health_names_only_what_the_user_may_read(mesh: Mesh):
    raw, health = gateway_health(mesh, "alice")  # reads sales.orders and crm.customers only
    assert set(health["products"]) == {"sales.orders", "crm.customers"}
    assert set(health["nodes"]) == {"sales", "crm"}
    for domain, replicas in health["nodes"].items():
        assert [r["location"] for r in replicas] == [n.uri for n in mesh.nodes[domain]]
        for replica in replicas:
            assert replica["reachable"] is True
            assert set(replica) <= {"location", "reachable", "status", "products"}, replica
            assert replica["products"] == [p for p in PRODUCTS if p.startswith(domain + ".")]
    text = raw.decode()
    assert "logistics" not in text and "shipments" not in text, text
    assert mesh.node("logistics").uri not in text

    _, carol = gateway_health(mesh, "carol")  # crm.customers only
    assert set(carol["products"]) == {"crm.customers"} and set(carol["nodes"]) == {"crm"}

    _, bob = gateway_health(mesh, "bob")  # reads everything: every node, every product
    assert set(bob["nodes"]) == {"sales", "crm", "logistics"}
    assert all(r["reachable"] for replicas in bob["nodes"].values() for r in replicas)


# ------------------------------------------------------------------ 4. node health and stats


@pytest.mark.parametrize("action", ["health", "stats"])
def test_node_health_and_stats_refuse_callers_other_than_the_gateway(mesh: Mesh, action: str):
    bob_client, bob_options = flight_client(mesh.gateway.uri, "bob")
    bob_client.close()
    for domain in ("sales", "crm", "logistics"):
        node = mesh.node(domain)
        audit = mesh.node_audit_path(domain)
        product = next(p for p in PRODUCTS if p.startswith(domain + "."))
        rows_ticket = _node_ticket(mesh, "bob", f"SELECT * FROM {product}")
        foreign_key = TicketSealer(bytes(32).hex(), 10).seal_control(domain, action)
        attempts = (
            ("no credentials", b"", None),
            ("a gateway bearer token", b"", bob_options),
            ("a rows ticket", rows_ticket, None),
            ("a control ticket sealed with another key", foreign_key, None),
        )
        for what, body, options in attempts:
            before, offset = node.action("stats"), audit.stat().st_size if audit.exists() else 0
            client = flight.FlightClient(node.uri)
            try:
                with pytest.raises(flight.FlightUnauthenticatedError) as caught:
                    list(client.do_action(flight.Action(action, body), options))
            finally:
                client.close()
            message, case = str(caught.value), f"{domain} {action} with {what}"
            leaked = [w for w in (*SECRET_NAMES, '"rows"', '"bytes"', '"tickets"') if w in message]
            assert not leaked, f"{case}: the refusal names {leaked}: {message}"
            after = node.action("stats")
            assert after["refused"] - before["refused"] == 1, f"{case}: not counted"
            events = json_lines_since(audit, offset)
            refused = [r for r in events if r.get("event") == "ticket_refused"]
            assert len(refused) == 1, f"{case}: not audited: {refused}"


def test_a_control_ticket_opens_one_call_on_its_own_domain_only(mesh: Mesh):
    sealer = TicketSealer(mesh.key, 60)
    ticket = sealer.seal_control("sales", "stats")
    client = flight.FlightClient(mesh.node("sales").uri)
    try:
        result = next(iter(client.do_action(flight.Action("stats", ticket))))
        answer = json.loads(result.body.to_pybytes())
        assert set(answer) == {"tickets", "rows", "bytes", "refused"}
        with pytest.raises(flight.FlightUnauthenticatedError, match="replay"):
            list(client.do_action(flight.Action("stats", ticket)))
        with pytest.raises(flight.FlightUnauthenticatedError, match="'stats', not 'health'"):
            list(client.do_action(flight.Action("health", sealer.seal_control("sales", "stats"))))
        with pytest.raises(flight.FlightUnauthenticatedError, match="domain 'crm'"):
            list(client.do_action(flight.Action("health", sealer.seal_control("crm", "health"))))
        with pytest.raises(flight.FlightUnauthenticatedError, match="'health', not 'rows'"):
            client.do_get(flight.Ticket(sealer.seal_control("sales", "health"))).read_all()
    finally:
        client.close()


def test_the_gateway_still_sees_node_reachability(mesh: Mesh):
    """The gateway's own health checks carry a control ticket: nodes answer them."""
    _, health = gateway_health(mesh, "bob")
    for domain in ("sales", "crm", "logistics"):
        assert [r["reachable"] for r in health["nodes"][domain]] == [True], health["nodes"][domain]
    client, options = flight_client(mesh.gateway.uri, "bob")
    try:
        descriptor = flight.FlightDescriptor.for_command(b"SELECT count(*) FROM crm.customers")
        info = client.get_flight_info(descriptor, options)
        assert [loc.uri.decode() for loc in info.endpoints[0].locations] == [mesh.node("crm").uri]
    finally:
        client.close()


# ------------------------------------------------------------------ helpers


def _node_ticket(mesh: Mesh, user: str, sql: str) -> bytes:
    client, options = flight_client(mesh.gateway.uri, user)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    finally:
        client.close()
    ticket = info.endpoints[0].ticket.ticket
    assert ticket.startswith(MAGIC), f"expected a sealed node ticket for {sql!r}"
    return ticket

