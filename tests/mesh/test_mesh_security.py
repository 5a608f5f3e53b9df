"""Mesh-mode security (issue 11, points 3-5), through real processes on 127.0.0.1.

- the gateway's ``Health`` action names only what the caller may read;
- nodes answer ``health`` and ``stats`` to the gateway only (a control ticket sealed with
  the shared key); anyone else gets UNAUTHENTICATED, no data, and an audit record;
- a ticket sealed before a revocation is refused by the node (and by the gateway's relay)
  once the revocation is in force; a policy change that leaves the ticket's user's decision
  as it was does not end the ticket.

One module-scoped mesh of its own (sales, crm and logistics nodes, one gateway), since the
revocation tests edit its policy files; every process is stopped at teardown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import flight
from support.clients import flight_client
from support.mesh import Mesh, RunningNode, running_mesh
from support.polling import wait_until

from gateway.mesh.tickets import MAGIC, TicketSealer

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


@pytest.mark.parametrize("action", ["health", "stats", "ends"])
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
        assert set(answer) == {"tickets", "rows", "bytes", "refused", "collected"}
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


# ------------------------------------------------------------------ 5. revocation

ALICE_GRANT = "p, analyst_eu, sales.orders, read, allow\n"
ALICE_AMOUNT_MASK = "p, analyst_eu, sales.orders.amount, mask, allow, round:1000\n"
EU_ORDERS = "SELECT * FROM sales.orders WHERE order_id < 200"


@pytest.fixture
def sales_policy(mesh: Mesh) -> Iterator[Path]:
    """The sales policy file; restored after the test, which waits until the gateway and the
    sales node both run on the restored policy again."""
    path = mesh.mesh_dir / "sales" / "policy.csv"
    original = path.read_text(encoding="utf-8")
    yield path
    if path.read_text(encoding="utf-8") != original:
        version = policy_version(mesh.node("sales"))
        path.write_text(original, encoding="utf-8")
        wait_until(lambda: policy_version(mesh.node("sales")) > version, what="the node's reload")
        wait_until(lambda: amounts_masked(mesh, "alice") is False, what="the gateway's reload")


def policy_version(node: RunningNode) -> int:
    return node.action("health")["policy_version"]


def sealed(mesh: Mesh, user: str, sql: str) -> bytes:
    """A fresh node ticket for ``sql`` from the gateway (GetFlightInfo as ``user``)."""
    return _node_ticket(mesh, user, sql)


def gateway_refuses(mesh: Mesh, user: str, sql: str) -> bool:
    client, options = flight_client(mesh.gateway.uri, user)
    try:
        client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    except (flight.FlightError, pa.ArrowException):
        return True
    finally:
        client.close()
    return False


def amounts_masked(mesh: Mesh, user: str) -> bool | None:
    """Whether ``user``'s sales amounts come rounded to thousands (None: refused)."""
    client, options = flight_client(mesh.gateway.uri, user)
    try:
        sql = b"SELECT count(*) AS odd FROM sales.orders WHERE amount % 1000 <> 0"
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)
        return client.do_get(info.endpoints[0].ticket, options).read_all().column(0)[0].as_py() == 0
    except (flight.FlightError, pa.ArrowException):
        return None
    finally:
        client.close()


def node_rows(node: RunningNode, ticket: bytes) -> pa.Table:
    client = flight.FlightClient(node.uri)
    try:
        return client.do_get(flight.Ticket(ticket), flight.FlightCallOptions(timeout=30)).read_all()
    finally:
        client.close()


def relayed_rows(mesh: Mesh, user: str, ticket: bytes) -> pa.Table:
    client, options = flight_client(mesh.gateway.uri, user)
    try:
        return client.do_get(flight.Ticket(ticket), options).read_all()
    finally:
        client.close()


def test_a_ticket_sealed_before_a_revocation_is_refused_by_the_node_and_the_relay(
    mesh: Mesh, sales_policy: Path
):
    """The node decides again with its own copy of the policy, reloaded on its own clock
    (up to about a second apart from the gateway's): the test waits for the gateway to
    refuse alice and for the node to report a reload, then presents the old tickets."""
    node = mesh.node("sales")
    honoured = node_rows(node, sealed(mesh, "alice", EU_ORDERS))
    assert honoured.num_rows > 0, "alice's ticket is honoured before the revocation"
    direct, relay = sealed(mesh, "alice", EU_ORDERS), sealed(mesh, "alice", EU_ORDERS)
    version = policy_version(node)
    revoked_at = time.monotonic()
    text = sales_policy.read_text(encoding="utf-8")
    assert ALICE_GRANT in text
    sales_policy.write_text(text.replace(ALICE_GRANT, ""), encoding="utf-8")
    wait_until(lambda: gateway_refuses(mesh, "alice", EU_ORDERS), what="the gateway refusing alice")
    wait_until(lambda: policy_version(node) > version, what="the sales node reloading its policy")
    reloaded_after = time.monotonic() - revoked_at

    before, offset = node.action("stats"), mesh.node_audit_path("sales").stat().st_size
    with pytest.raises(flight.FlightUnauthenticatedError) as caught:
        leaked = node_rows(node, direct)
        pytest.fail(f"the node honoured a revoked ticket: {leaked.num_rows} rows")
    assert "access changed since this ticket was sealed" in str(caught.value)
    assert "orders" not in str(caught.value)
    after = node.action("stats")
    assert after["rows"] == before["rows"] and after["refused"] == before["refused"] + 1
    refused = [
        r
        for r in json_lines_since(mesh.node_audit_path("sales"), offset)
        if r.get("event") == "ticket_refused"
    ]
    assert [(r["user"], r["products"]) for r in refused] == [("alice", ["sales.orders"])], refused

    with pytest.raises((flight.FlightError, pa.ArrowException)) as caught:
        leaked = relayed_rows(mesh, "alice", relay)
        pytest.fail(f"the gateway relayed a revoked ticket: {leaked.num_rows} rows")
    assert "policy changed" in str(caught.value)
    assert node.action("stats")["rows"] == before["rows"], "the relay streamed rows from the node"
    assert reloaded_after < 30


def test_a_new_mask_ends_the_old_tickets_of_the_users_it_masks_only(mesh: Mesh, sales_policy: Path):
    """A decision that changes (a mask added for alice) ends her old tickets; erin's decision
    is the same under the new policy version, so hers stay good: the check compares
    decisions, not version numbers."""
    node = mesh.node("sales")
    alice_direct, alice_relay = sealed(mesh, "alice", EU_ORDERS), sealed(mesh, "alice", EU_ORDERS)
    erin_direct, erin_relay = sealed(mesh, "erin", EU_ORDERS), sealed(mesh, "erin", EU_ORDERS)
    assert amounts_masked(mesh, "alice") is False
    version = policy_version(node)
    text = sales_policy.read_text(encoding="utf-8")
    sales_policy.write_text(text + ALICE_AMOUNT_MASK, encoding="utf-8")
    wait_until(lambda: amounts_masked(mesh, "alice") is True, what="the gateway masking alice")
    wait_until(lambda: policy_version(node) > version, what="the sales node reloading its policy")

    with pytest.raises(flight.FlightUnauthenticatedError, match="access changed"):
        leaked = node_rows(node, alice_direct)
        pytest.fail(f"the node honoured a ticket sealed before the mask: {leaked.num_rows} rows")
    with pytest.raises((flight.FlightError, pa.ArrowException), match="policy changed"):
        leaked = relayed_rows(mesh, "alice", alice_relay)
        pytest.fail(f"the gateway relayed a ticket sealed before the mask: {leaked.num_rows} rows")
    erin_rows = node_rows(node, erin_direct).num_rows
    assert erin_rows == relayed_rows(mesh, "erin", erin_relay).num_rows > 0


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
