"""Mesh mode (issue 4) end to end: real domain nodes, a governing gateway, sealed tickets.

One module-scoped mesh: a copy of the pristine demo mesh with a ``[nodes]`` section, four
node processes (sales x2 replicas, crm, logistics) and one gateway, all on 127.0.0.1 with
free ports. The session ``gateway`` fixture serves the pristine demo in embedded mode (no
``[nodes]``; same data, same hash key) and is the oracle: every answer of the mesh gateway
must equal the embedded answer (sorted rows, Arrow types), for every demo user.

Order matters a little: the tests that kill processes come last, and every test that needs
a node alive calls ``mesh.ensure_running`` first, so each test also runs on its own.
Every process started here is killed at module teardown (try/finally), even on failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import flight
from support.clients import adbc_connect, adbc_connections, flight_client, raw_info
from support.logs import json_lines_since, log_offset
from support.mesh import Mesh, RunningNode, outcome, running_mesh, sorted_rows
from support.polling import wait_until
from support.servers import NO_COST_LIMIT, RunningGateway

from benchmarks.launch import REPO
from gateway.mesh.tickets import MAGIC, TicketSealer

pytestmark = pytest.mark.mesh

TICKET_TTL_SECONDS = 30
#: Deadline for noticing a dead node or a cancel: without it the query streams forever or
#: waits for the 300 s query timeout. Generous for a loaded 2-core machine; not a speed figure.
FAIL_FAST_SECONDS = 60.0
USERS = ("alice", "bob", "carol", "erin", "dave")
# A result far bigger than anything a client buffers: streams until the node dies.
ENDLESS_LOGISTICS = (
    "SELECT a.shipment_id, a.carrier, b.carrier AS other_carrier "
    "FROM logistics.shipments a, logistics.shipments b"
)
# Cross-domain: the logistics fragment (a cross join, cut out whole) never ends; its rows
# stream node -> gateway DuckDB (joined with the sales orders) -> client.
ENDLESS_CROSS_DOMAIN = (
    "SELECT x.shipment_id, x.carrier, x.other_carrier, o.region FROM "
    "(SELECT a.shipment_id, a.order_id, a.carrier, b.carrier AS other_carrier "
    "FROM logistics.shipments a, logistics.shipments b) x JOIN sales.orders o ON o.order_id = x.order_id"
)
# Cross-domain: the sales node computes a long aggregate (the scalar subquery, cut out
# whole; 4e10 rows, within the default cost budget) that the gateway waits on before it
# reads a single logistics row.
WAITING_ON_SALES = (
    "SELECT s.shipment_id FROM logistics.shipments s "
    "WHERE s.order_id > (SELECT max(a.amount * b.amount + a.order_id) "
    "FROM sales.orders a, sales.orders b)"
)


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def mesh(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory):
    """Demo copy + [nodes], sales (2 replicas), crm, logistics nodes and one gateway."""
    root = tmp_path_factory.mktemp("mesh-mode")
    with running_mesh(
        demo_mesh,
        root,
        {"sales": 2, "crm": 1, "logistics": 1},
        TICKET_TTL_SECONDS,
        workload=NO_COST_LIMIT,  # its endless queries are the subject: admit them
    ) as running:
        yield running


@pytest.fixture(scope="module")
def connections(mesh: Mesh, gateway: RunningGateway):
    """ADBC connections, one per (gateway, user), opened lazily and closed at the end."""
    with adbc_connections() as get:
        yield get


# --------------------------------------------------------------------------- helpers


def assert_same_as_embedded(
    connections, mesh: Mesh, embedded: RunningGateway, user: str, sql: str, parameters=None
):
    got = outcome(connections(mesh.gateway.uri, user), sql, parameters)
    expected = outcome(connections(embedded.uri, user), sql, parameters)
    if expected[0] == "ok" and got[0] == "ok":
        assert got[1] == expected[1], (
            f"schema differs:\nmesh:     {got[1]}\nembedded: {expected[1]}"
        )
        assert len(got[2]) == len(expected[2]), (
            f"mesh {len(got[2])} rows, embedded {len(expected[2])}"
        )
        diff = [(g, e) for g, e in zip(got[2], expected[2], strict=True) if g != e][:3]
        assert not diff, f"values differ (mesh, embedded): {diff}"
    else:
        assert got == expected, f"mesh: {got[:3]}\nembedded: {expected[:3]}"
    return got


def node_ticket(mesh: Mesh, user: str, sql: str) -> bytes:
    """A sealed node ticket handed out by the mesh gateway for ``sql``."""
    info = raw_info(mesh.gateway.uri, user, sql)
    ticket = info.endpoints[0].ticket.ticket
    assert ticket.startswith(MAGIC), f"expected a sealed node ticket for {sql!r}"
    return ticket


def node_do_get(
    uri: str, ticket: bytes, options: flight.FlightCallOptions | None = None
) -> pa.Table:
    client = flight.FlightClient(uri)
    try:
        return client.do_get(
            flight.Ticket(ticket), options or flight.FlightCallOptions(timeout=30)
        ).read_all()
    finally:
        client.close()


# --------------------------------------------------------------------------- 1. results equal embedded

SINGLE_DOMAIN = [
    (
        "alice",
        "SELECT region, count(*) AS n, sum(amount) AS revenue, avg(amount) AS mean FROM sales.orders GROUP BY region",
    ),
    ("alice", "SELECT * FROM sales.orders WHERE order_id <= 3000"),
    ("alice", "SELECT * FROM crm.customers WHERE customer_id <= 300"),
    ("alice", "SELECT * FROM logistics.shipments LIMIT 5"),
    ("bob", "SELECT * FROM sales.orders WHERE order_date >= DATE '2025-12-01'"),
    ("bob", "SELECT customer_id, email, ssn, region FROM crm.customers WHERE customer_id <= 300"),
    ("bob", "SELECT * FROM logistics.shipments WHERE shipped_at < TIMESTAMP '2023-01-10'"),
    (
        "bob",
        "SELECT o1.order_id, o2.amount FROM sales.orders o1 JOIN sales.orders o2 ON o2.order_id = o1.order_id + 1 WHERE o1.order_id < 50",
    ),
    ("carol", "SELECT * FROM crm.customers WHERE customer_id <= 300"),
    ("carol", "SELECT ssn FROM crm.customers LIMIT 1"),
    ("carol", "SELECT count(*) FROM sales.orders"),
    ("erin", "SELECT order_id, amount FROM sales.orders WHERE order_id <= 500"),
    ("erin", "SELECT carrier, region, count(*) AS n FROM logistics.shipments GROUP BY ALL"),
    ("erin", "SELECT * FROM crm.customers LIMIT 1"),
    ("dave", "SELECT count(*) FROM crm.customers"),
    ("dave", "SELECT * FROM sales.orders LIMIT 1"),
]

CROSS_DOMAIN = [
    (
        "alice",
        (
            "SELECT c.region, count(*) AS n, sum(o.amount) AS revenue, min(c.email) AS email, min(c.ssn) AS ssn "
            "FROM sales.orders o JOIN crm.customers c USING (customer_id) WHERE o.amount > 4000 GROUP BY c.region"
        ),
    ),
    (
        "alice",
        "SELECT * FROM sales.orders o JOIN crm.customers c USING (customer_id) WHERE o.order_id <= 300",
    ),
    (
        "alice",
        (
            "SELECT c.email, count(*) AS n FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "WHERE c.email LIKE 'a%' GROUP BY c.email"
        ),
    ),
    (
        "alice",
        (
            "SELECT o.region, count(*) AS n FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "WHERE o.region = 'US' OR c.region = 'US' GROUP BY 1"
        ),
    ),
    (
        "bob",
        (
            "SELECT c.region, count(*) AS n, sum(o.amount) AS revenue, max(c.ssn) AS ssn "
            "FROM sales.orders o JOIN crm.customers c USING (customer_id) WHERE o.amount > 4000 GROUP BY c.region"
        ),
    ),
    (
        "bob",
        (
            "SELECT o.order_id, c.name, c.ssn FROM sales.orders o JOIN crm.customers c ON o.customer_id = c.customer_id "
            "WHERE c.region = 'APAC' AND o.amount BETWEEN 1000 AND 1100"
        ),
    ),
    (
        "bob",
        (
            "SELECT o.region, s.carrier, count(*) AS n FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "JOIN logistics.shipments s USING (order_id) WHERE c.name LIKE 'Ada%' GROUP BY ALL"
        ),
    ),
    (
        "bob",
        (
            "SELECT o.order_id, c.region FROM sales.orders o LEFT JOIN crm.customers c "
            "ON o.customer_id = c.customer_id AND c.region = 'US' WHERE o.order_id < 60 AND c.region IS NULL"
        ),
    ),
    (
        "bob",
        (
            "WITH t AS (SELECT customer_id, sum(amount) AS s FROM sales.orders GROUP BY customer_id) "
            "SELECT c.region, max(t.s) AS top FROM t JOIN crm.customers c USING (customer_id) WHERE t.s > 10000 GROUP BY 1"
        ),
    ),
    (
        "bob",
        "SELECT #1, #3 FROM sales.orders o JOIN crm.customers c USING (customer_id) WHERE o.order_id < 10",
    ),
    ("carol", "SELECT * FROM sales.orders o JOIN crm.customers c USING (customer_id) LIMIT 5"),
    (
        "erin",
        (
            "SELECT o.region, count(*) AS n, sum(o.amount) AS revenue FROM sales.orders o "
            "JOIN logistics.shipments s ON s.order_id = o.order_id WHERE s.carrier = 'DHL' GROUP BY ALL"
        ),
    ),
    (
        "erin",
        (
            "SELECT o.order_id, o.amount, s.carrier FROM sales.orders o JOIN logistics.shipments s USING (order_id) "
            "WHERE o.amount BETWEEN 1000 AND 1100"
        ),
    ),
    ("erin", "SELECT count(*) FROM sales.orders o JOIN crm.customers c USING (customer_id)"),
    ("dave", "SELECT * FROM sales.orders o JOIN crm.customers c USING (customer_id) LIMIT 5"),
    # Fragments read more than once by the final query are materialised, the others stream:
    # a CTE read twice, a self-join, a top-N, a correlated EXISTS, a recursive CTE.
    (
        "bob",
        (
            "WITH t AS (SELECT customer_id, sum(amount) AS s FROM sales.orders GROUP BY customer_id) "
            "SELECT c.region, count(*) AS n FROM t JOIN crm.customers c USING (customer_id) "
            "WHERE t.s > (SELECT avg(s) FROM t) GROUP BY 1"
        ),
    ),
    (
        "bob",
        (
            "SELECT a.order_id, b.amount, c.region FROM sales.orders a "
            "JOIN sales.orders b ON b.order_id = a.order_id + 1 "
            "JOIN crm.customers c ON c.customer_id = a.customer_id WHERE a.order_id < 500"
        ),
    ),
    (
        "bob",
        (
            "SELECT o.order_id, o.amount, c.region FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "ORDER BY o.amount DESC, o.order_id LIMIT 10"
        ),
    ),
    (
        "bob",
        (
            "SELECT c.region, count(*) AS n FROM crm.customers c WHERE EXISTS "
            "(SELECT 1 FROM sales.orders o WHERE o.customer_id = c.customer_id AND o.amount > 4900) GROUP BY 1"
        ),
    ),
    (
        "bob",
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT r.n + 1 FROM r "
            "WHERE r.n < (SELECT count(*) FROM logistics.shipments WHERE shipment_id < 4)) "
            "SELECT r.n, count(*) AS k FROM r JOIN sales.orders o ON o.order_id = r.n "
            "JOIN crm.customers c USING (customer_id) GROUP BY 1"
        ),
    ),
]

PREPARED = [
    (
        "alice",
        "SELECT * FROM sales.orders WHERE order_id <= ? AND amount > ?",
        (3000, Decimal(100)),
    ),
    (
        "bob",
        "SELECT customer_id, email, ssn FROM crm.customers WHERE region = ? ORDER BY customer_id LIMIT ?",
        ("APAC", 7),
    ),
    ("carol", "SELECT * FROM crm.customers WHERE customer_id < ?", (100,)),
    ("erin", "SELECT * FROM logistics.shipments WHERE shipped_at < ?", (dt.datetime(2023, 1, 10),)),
    ("erin", "SELECT * FROM sales.orders WHERE amount > ? AND order_id < ?", (Decimal(1000), 500)),
    ("dave", "SELECT * FROM sales.orders WHERE order_id < ?", (5,)),
    (
        "alice",
        (
            "SELECT c.region, count(*) AS n FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "WHERE o.amount > ? AND c.region = ? GROUP BY 1"
        ),
        (Decimal("4000.5"), "EU"),
    ),
    (
        "erin",
        (
            "SELECT s.region, count(DISTINCT o.order_id) AS n FROM logistics.shipments s JOIN sales.orders o "
            "ON o.order_id = s.order_id AND o.order_date = ? GROUP BY 1"
        ),
        (dt.date(2024, 1, 1),),
    ),
    (
        "bob",
        (
            "SELECT o.order_id, ? AS tag FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "WHERE o.order_id < ?"
        ),
        ("t", 40),
    ),
    (
        "bob",
        (
            "SELECT o.order_id FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "WHERE o.order_id BETWEEN ? AND ? ORDER BY o.order_id LIMIT ?"
        ),
        (10, 20, 3),
    ),
    (
        "bob",
        (
            "SELECT o.order_id, o.amount * ? AS x FROM sales.orders o JOIN crm.customers c USING (customer_id) "
            "WHERE o.order_id < ?"
        ),
        (1.1, 20),
    ),
    (
        "carol",
        "SELECT * FROM sales.orders o JOIN crm.customers c USING (customer_id) WHERE o.order_id < ?",
        (5,),
    ),
]


def _ids(cases):
    named = {
        "SELECT #1, #3": "positional-refs",
        "LIMIT ?": "limit-parameter",
        "o.amount * ?": "float-parameter",
    }
    ids = []
    for i, case in enumerate(cases):
        name = next((n for marker, n in named.items() if marker in case[1]), None)
        ids.append(f"{case[0]}-{i}" + (f"-{name}" if name else ""))
    return ids


@pytest.mark.parametrize(("user", "sql"), SINGLE_DOMAIN, ids=_ids(SINGLE_DOMAIN))
def test_single_domain_results_equal_embedded(mesh, gateway, connections, user, sql):
    mesh.ensure_running("sales", "crm", "logistics")
    assert_same_as_embedded(connections, mesh, gateway, user, sql)


@pytest.mark.parametrize(("user", "sql"), CROSS_DOMAIN, ids=_ids(CROSS_DOMAIN))
def test_cross_domain_results_equal_embedded(mesh, gateway, connections, user, sql):
    mesh.ensure_running("sales", "crm", "logistics")
    assert_same_as_embedded(connections, mesh, gateway, user, sql)


@pytest.mark.parametrize(("user", "sql", "parameters"), PREPARED, ids=_ids(PREPARED))
def test_prepared_statement_results_equal_embedded(
    mesh, gateway, connections, user, sql, parameters
):
    mesh.ensure_running("sales", "crm", "logistics")
    assert_same_as_embedded(connections, mesh, gateway, user, sql, parameters)


def test_every_user_sees_the_demo_rules_in_mesh_mode(mesh, connections):
    """Sanity on the mesh alone (not only 'same as embedded'): the demo table of rules."""
    mesh.ensure_running("sales", "crm")
    kinds = {
        user: outcome(
            connections(mesh.gateway.uri, user), "SELECT DISTINCT region FROM sales.orders"
        )
        for user in USERS
    }
    assert kinds["alice"][0] == "ok" and kinds["alice"][2] == [("'EU'",)]
    assert kinds["bob"][0] == "ok" and len(kinds["bob"][2]) == 3
    assert kinds["erin"][0] == "ok" and len(kinds["erin"][2]) == 3
    assert kinds["carol"][0] == "error" and "unknown product sales.orders" in kinds["carol"][2]
    assert kinds["dave"][0] == "error" and "unknown product sales.orders" in kinds["dave"][2]
    carol = outcome(connections(mesh.gateway.uri, "carol"), "SELECT * FROM crm.customers LIMIT 3")
    assert [f.name for f in carol[1]] == ["customer_id", "name", "email", "region"]
    assert all(len(row[2].strip("'")) == 64 for row in carol[2]), "carol's emails are hashed"


def test_one_prepared_statement_executed_with_several_parameter_sets(mesh, gateway, connections):
    mesh.ensure_running("sales", "crm")
    sql = (
        "SELECT c.region, count(*) AS n, sum(o.amount) AS revenue FROM sales.orders o "
        "JOIN crm.customers c USING (customer_id) WHERE o.amount > ? GROUP BY 1"
    )
    single = "SELECT count(*) AS n, sum(amount) AS revenue FROM sales.orders WHERE amount > ?"
    answers = {}
    for uri in (mesh.gateway.uri, gateway.uri):
        cur = connections(uri, "alice").cursor()
        try:
            got = []
            for text in (sql, single):
                cur.adbc_prepare(text)
                for threshold in (Decimal(10), Decimal(2500), Decimal(4999)):
                    cur.execute(text, parameters=(threshold,))
                    got.append(sorted_rows(cur.fetch_arrow_table()))
            answers[uri] = got
        finally:
            cur.close()
    assert answers[mesh.gateway.uri] == answers[gateway.uri]


# --------------------------------------------------------------------------- 2. rows bypass the gateway


def test_single_domain_rows_flow_from_the_node_not_through_the_gateway(mesh, connections):
    mesh.ensure_running("sales")
    log = mesh.gateway.log_path
    before, offset = mesh.stats("sales"), log_offset(log)
    cur = connections(mesh.gateway.uri, "bob").cursor()
    try:
        cur.execute("SELECT * FROM sales.orders WHERE order_id <= 4321")
        table = cur.fetch_arrow_table()
        cur.execute(
            "SELECT order_id, amount FROM sales.orders WHERE order_id > ? AND order_id <= ?",
            parameters=(100, 350),
        )
        prepared = cur.fetch_arrow_table()
    finally:
        cur.close()
    after = mesh.stats("sales")
    assert table.num_rows == 4321 and prepared.num_rows == 250
    assert after["rows"] - before["rows"] == table.num_rows + prepared.num_rows
    assert after["tickets"] - before["tickets"] == 2
    assert after["bytes"] - before["bytes"] >= table.nbytes // 2
    # A barrier instead of a sleep: a query without products runs in the gateway and logs
    # `query` once its stream ends; any line the two queries above made the gateway log
    # was written before their streams ended, so before the barrier's.
    cur = connections(mesh.gateway.uri, "bob").cursor()
    try:
        cur.execute("SELECT 1 AS barrier")
        assert cur.fetchall() == [(1,)]
    finally:
        cur.close()

    def before_barrier() -> tuple[list[dict]] | None:
        kinds = ("query", "federated_query")
        events = [r for r in json_lines_since(log, offset) if r.get("event") in kinds]
        ends = [i for i, r in enumerate(events) if r["event"] == "query" and not r.get("products")]
        return (events[: ends[0]],) if ends else None

    (events,) = wait_until(before_barrier, what="the barrier's log line")
    assert events == [], f"the gateway executed or relayed the rows itself: {events}"


def test_flight_info_endpoints_point_at_the_domain_nodes(mesh):
    now = time.time()
    for domain, sql in (
        ("sales", "SELECT * FROM sales.orders WHERE order_id < 10"),
        ("crm", "SELECT * FROM crm.customers WHERE customer_id < 10"),
        ("logistics", "SELECT * FROM logistics.shipments WHERE shipment_id < 10"),
    ):
        info = raw_info(mesh.gateway.uri, "bob", sql)
        assert info.endpoints, domain
        for endpoint in info.endpoints:
            # every replica, starting at the next one per query (round-robin load spreading)
            assert sorted(loc.uri.decode() for loc in endpoint.locations) == sorted(
                n.uri for n in mesh.nodes[domain]
            )
            assert endpoint.ticket.ticket.startswith(MAGIC)
            assert endpoint.expiration_time is not None
            expires = endpoint.expiration_time.as_py().timestamp()
            assert now < expires <= now + TICKET_TTL_SECONDS + 5
            opened = TicketSealer(mesh.key, TICKET_TTL_SECONDS).open(endpoint.ticket.ticket)
            assert (opened.domain, opened.user, opened.purpose) == (domain, "bob", "rows")
            assert opened.products == (
                f"{domain}.{sql.split('FROM ')[1].split()[0].split('.')[1]}",
            )
            assert abs(opened.expires_at - expires) < 2


def test_cross_domain_flight_info_is_served_by_the_gateway(mesh):
    info = raw_info(
        mesh.gateway.uri,
        "bob",
        "SELECT count(*) FROM sales.orders o JOIN crm.customers c USING (customer_id)",
    )
    assert all(not e.locations for e in info.endpoints)
    assert all(not e.ticket.ticket.startswith(MAGIC) for e in info.endpoints)


# --------------------------------------------------------------------------- 3. ticket refusals


def _assert_refused(
    mesh: Mesh, domain: str, raw: bytes, reason: str, options=None, action: str | None = None
):
    node = mesh.node(domain, 0)
    audit = mesh.node_audit_path(domain)
    before, offset = node.action("stats"), log_offset(audit)
    client = flight.FlightClient(node.uri)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError) as caught:
            if action is None:
                client.do_get(flight.Ticket(raw), options).read_all()
            else:
                list(client.do_action(flight.Action(action, raw), options))
    finally:
        client.close()
    assert reason in str(caught.value)
    after = node.action("stats")
    assert after["refused"] - before["refused"] == 1
    assert after["rows"] == before["rows"], "a refused ticket streamed rows"
    refused = [r for r in json_lines_since(audit, offset) if r.get("event") == "ticket_refused"]
    assert len(refused) == 1 and reason in refused[0]["error"], refused


def test_tampered_ticket_is_refused_and_audited(mesh):
    mesh.ensure_running("sales")
    for position in (len(MAGIC) + 3, -40, -1):  # in the nonce, the ciphertext, the tag
        ticket = bytearray(
            node_ticket(mesh, "bob", "SELECT * FROM sales.orders WHERE order_id < 10")
        )
        ticket[position] ^= 0x01
        _assert_refused(mesh, "sales", bytes(ticket), "signature check failed")


def test_expired_ticket_is_refused_and_audited(mesh):
    mesh.ensure_running("sales")
    genuine = TicketSealer(mesh.key, 60).open(
        node_ticket(mesh, "bob", "SELECT * FROM sales.orders WHERE order_id < 10")
    )
    expired = TicketSealer(mesh.key, -1).seal(
        "sales", genuine.sql, genuine.parameters, "bob", genuine.products
    )
    _assert_refused(mesh, "sales", expired, "expired")


def test_replayed_ticket_is_refused_and_audited(mesh):
    mesh.ensure_running("sales")
    ticket = node_ticket(mesh, "bob", "SELECT * FROM sales.orders WHERE order_id < 10")
    assert node_do_get(mesh.node("sales").uri, ticket).num_rows == 9
    _assert_refused(mesh, "sales", ticket, "replay")


def test_foreign_domain_ticket_is_refused_and_audited(mesh):
    mesh.ensure_running("sales", "crm")
    crm_ticket = node_ticket(mesh, "bob", "SELECT * FROM crm.customers WHERE customer_id <= 3")
    _assert_refused(mesh, "sales", crm_ticket, "domain 'crm'")
    # The refusal did not burn it: the crm node still honours it.
    assert node_do_get(mesh.node("crm").uri, crm_ticket).num_rows == 3


def test_ticket_sealed_with_another_key_is_refused_and_audited(mesh):
    mesh.ensure_running("sales")
    genuine = TicketSealer(mesh.key, 60).open(
        node_ticket(mesh, "bob", "SELECT * FROM sales.orders WHERE order_id < 10")
    )
    forged = TicketSealer(os.urandom(32).hex(), 60).seal(
        "sales", genuine.sql, (), "bob", genuine.products
    )
    _assert_refused(mesh, "sales", forged, "another key")


def test_raw_sql_sent_to_a_node_is_refused_and_audited(mesh):
    mesh.ensure_running("sales")
    sql = b"SELECT * FROM sales.orders"
    _assert_refused(mesh, "sales", sql, "not a Meshgate node ticket")
    _assert_refused(
        mesh, "sales", b"SELECT * FROM memory.sales.orders", "not a Meshgate node ticket"
    )
    # The node ignores bearer tokens: a valid gateway token does not make raw SQL acceptable.
    client, options = flight_client(mesh.gateway.uri, "bob")
    client.close()
    _assert_refused(mesh, "sales", sql, "not a Meshgate node ticket", options=options)
    # Nor does the schema action take SQL.
    _assert_refused(mesh, "sales", sql, "not a Meshgate node ticket", action="schema")


def test_schema_ticket_is_not_a_rows_ticket(mesh):
    mesh.ensure_running("sales")
    genuine = TicketSealer(mesh.key, 60).open(
        node_ticket(mesh, "bob", "SELECT * FROM sales.orders WHERE order_id < 10")
    )
    schema_only = TicketSealer(mesh.key, 60).seal(
        "sales", genuine.sql, (), "bob", genuine.products, purpose="schema"
    )
    _assert_refused(mesh, "sales", schema_only, "'schema'")


# --------------------------------------------------------------------------- 6. proxy mode


def test_plain_flight_client_is_relayed_through_the_gateway(mesh, gateway, connections):
    mesh.ensure_running("sales", "crm")
    sql = "SELECT * FROM sales.orders WHERE order_id <= 2000"
    expected = outcome(connections(gateway.uri, "alice"), sql)
    before = mesh.stats("sales")
    client, options = flight_client(mesh.gateway.uri, "alice")
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        raw = client.do_get(
            flight.Ticket(sql.encode()), options
        ).read_all()  # raw SQL as the ticket
    finally:
        client.close()
    assert table.schema == expected[1] and sorted_rows(table) == expected[2]
    assert raw.schema == expected[1] and sorted_rows(raw) == expected[2]
    assert mesh.stats("sales")["rows"] - before["rows"] == 2 * table.num_rows, (
        "relayed from the node"
    )


def test_plain_flight_client_cross_domain_query(mesh, gateway, connections):
    mesh.ensure_running("sales", "crm")
    sql = (
        "SELECT c.region, count(*) AS n, sum(o.amount) AS revenue, min(c.email) AS email "
        "FROM sales.orders o JOIN crm.customers c USING (customer_id) WHERE o.amount > 4000 GROUP BY 1"
    )
    expected = outcome(connections(gateway.uri, "alice"), sql)
    client, options = flight_client(mesh.gateway.uri, "alice")
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()
    assert table.schema == expected[1] and sorted_rows(table) == expected[2]


def test_node_ticket_of_bob_presented_by_alice_is_refused(mesh):
    mesh.ensure_running("crm")
    ticket = node_ticket(
        mesh, "bob", "SELECT customer_id, ssn FROM crm.customers WHERE customer_id <= 5"
    )
    alice, alice_options = flight_client(mesh.gateway.uri, "alice")
    try:
        with pytest.raises((flight.FlightError, KeyError, pa.ArrowException)) as caught:
            alice.do_get(flight.Ticket(ticket), alice_options).read_all()
    finally:
        alice.close()
    assert not re.search(r"9\d\d-\d\d-\d{4}", str(caught.value)), "an ssn leaked into the error"
    # Bob's ticket was not spent by alice's attempt.
    bob, bob_options = flight_client(mesh.gateway.uri, "bob")
    try:
        assert bob.do_get(flight.Ticket(ticket), bob_options).read_all().num_rows == 5
    finally:
        bob.close()


def test_gateway_refuses_forged_ticket_in_proxy_mode(mesh):
    forged = TicketSealer(os.urandom(32).hex(), 60).seal(
        "sales", "SELECT 1", (), "bob", ("sales.orders",)
    )
    client, options = flight_client(mesh.gateway.uri, "bob")
    try:
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(forged), options).read_all()
    finally:
        client.close()


# --------------------------------------------------------------------------- 7. pushdown


def test_cross_domain_fragments_are_pushed_down(mesh, connections, gateway):
    mesh.ensure_running("sales", "crm")
    whole = {}
    for product in ("sales.orders", "crm.customers"):
        cur = connections(gateway.uri, "bob").cursor()
        try:
            cur.execute(f"SELECT * FROM {product}")
            table = cur.fetch_arrow_table()
        finally:
            cur.close()
        whole[product] = (table.num_rows, table.nbytes)
    cur = connections(gateway.uri, "bob").cursor()
    try:
        cur.execute("SELECT count(*) FROM sales.orders WHERE amount > 4000")
        big_orders = cur.fetch_arrow_table().column(0)[0].as_py()
    finally:
        cur.close()

    log = mesh.gateway.log_path
    offset = log_offset(log)
    sql = (
        "SELECT c.region, count(*) AS n, sum(o.amount) AS revenue FROM sales.orders o "
        "JOIN crm.customers c USING (customer_id) WHERE o.amount > 4000 GROUP BY c.region"
    )
    assert outcome(connections(mesh.gateway.uri, "bob"), sql)[0] == "ok"
    deadline = time.monotonic() + 5
    while not (
        lines := [r for r in json_lines_since(log, offset) if r.get("event") == "federated_query"]
    ):
        assert time.monotonic() < deadline, "no federated_query log line"
        time.sleep(0.05)
    record = lines[-1]
    fragments = {f["products"][0]: f for f in record["fragments"]}
    assert set(fragments) == {"sales.orders", "crm.customers"}
    assert record["pushed_down"] is True
    # The filter is pushed down and the orders fragment is pre-aggregated per customer:
    # fewer rows than the orders it summarises.
    assert fragments["sales.orders"]["kind"] == "partial_aggregate"
    assert 0 < fragments["sales.orders"]["rows"] < big_orders < whole["sales.orders"][0]
    assert fragments["sales.orders"]["bytes"] < whole["sales.orders"][1]
    assert fragments["crm.customers"]["bytes"] < whole["crm.customers"][1], (
        "only the needed columns move"
    )
    assert record["bytes_moved"] == sum(f["bytes"] for f in record["fragments"])
    assert record["bytes_moved"] < sum(size for _, size in whole.values()) / 3
    assert all(f["streamed"] and f["complete"] for f in record["fragments"]), (
        "read once, to the end"
    )


# --------------------------------------------------------------------------- revocation


def test_ticket_issued_before_a_revocation_is_not_relayed_after_it(mesh):
    """Embedded mode guarantees it (tests/governance/test_hot_reload.py); in proxy mode the
    gateway is in the path and can check again."""
    mesh.ensure_running("sales")
    policy = mesh.mesh_dir / "sales" / "policy.csv"
    original = policy.read_text(encoding="utf-8")
    sql = b"SELECT * FROM sales.orders WHERE order_id < 10"
    client, options = flight_client(mesh.gateway.uri, "alice")
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)
        policy.write_text(
            original.replace("p, analyst_eu, sales.orders, read, allow\n", ""), encoding="utf-8"
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)
            except (flight.FlightError, pa.ArrowException):
                break
            assert time.monotonic() < deadline, "the revocation never took effect"
            time.sleep(0.2)
        try:
            table = client.do_get(info.endpoints[0].ticket, options).read_all()
        except (flight.FlightError, pa.ArrowException):
            pass
        else:
            pytest.fail(
                f"a revoked user redeemed an old ticket through the gateway and read {table.num_rows} rows"
            )
    finally:
        policy.write_text(original, encoding="utf-8")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)
                break
            except (flight.FlightError, pa.ArrowException):
                time.sleep(0.2)
        client.close()


# --------------------------------------------------------------------------- 5. replica failover


def test_sales_fails_over_to_the_second_replica(mesh, gateway, connections):
    mesh.ensure_running("sales", "crm")
    first, second = mesh.nodes["sales"]
    # Warm the driver's connection to the first replica, then crash it.
    assert (
        outcome(connections(mesh.gateway.uri, "alice"), "SELECT count(*) FROM sales.orders")[0]
        == "ok"
    )
    first.kill()
    before = second.action("stats")
    single = (
        "SELECT region, count(*) AS n, sum(amount) AS revenue FROM sales.orders GROUP BY region"
    )
    assert_same_as_embedded(connections, mesh, gateway, "alice", single)
    fresh = adbc_connect(mesh.gateway.uri, "erin")
    try:
        got, expected = outcome(fresh, single), outcome(connections(gateway.uri, "erin"), single)
        assert got == expected
    finally:
        fresh.close()
    cross = (
        "SELECT c.region, count(*) AS n, sum(o.amount) AS revenue, min(c.email) AS email FROM sales.orders o "
        "JOIN crm.customers c USING (customer_id) WHERE o.amount > 4000 GROUP BY 1"
    )
    assert_same_as_embedded(connections, mesh, gateway, "alice", cross)
    # Proxy mode too.
    client, options = flight_client(mesh.gateway.uri, "bob")
    try:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(b"SELECT * FROM sales.orders WHERE order_id <= 77"),
            options,
        )
        assert client.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 77
    finally:
        client.close()
    after = second.action("stats")
    assert after["tickets"] - before["tickets"] >= 4, "the second replica served the sales queries"


# --------------------------------------------------------------------------- 4. node dies


def _stream_in_thread(read_batches) -> tuple[threading.Thread, queue.Queue]:
    events: queue.Queue = queue.Queue()

    def run():
        try:
            for batch in read_batches():
                events.put(("batch", batch.num_rows))
                time.sleep(0.1)  # a slow client
            events.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            events.put(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, events


def _kill_mid_stream(node: RunningNode, events: queue.Queue) -> tuple[BaseException, float]:
    """Wait for a few batches, SIGKILL ``node``, return the client's error and its delay."""
    batches = 0
    while batches < 3:
        kind, value = events.get(timeout=30)
        assert kind == "batch", f"the stream ended before the kill: {kind} {value!r}"
        batches += 1
    node.kill()
    killed = time.monotonic()
    while True:
        kind, value = events.get(timeout=FAIL_FAST_SECONDS)
        if kind == "error":
            return value, time.monotonic() - killed
        assert kind == "batch", f"the stream ended normally after its node was killed ({kind})"


def test_node_killed_mid_stream_adbc_fails_fast(mesh):
    """ADBC streams from the node directly: the gateway is not in the path, so the error comes
    from the driver; it must come fast and identify the node (domain or its location)."""
    mesh.ensure_running("logistics")
    node = mesh.node("logistics")
    conn = adbc_connect(mesh.gateway.uri, "erin")
    cur = conn.cursor()
    cur.execute(ENDLESS_LOGISTICS)
    reader = cur.fetch_record_batch()
    thread, events = _stream_in_thread(lambda: reader)
    error, delay = _kill_mid_stream(node, events)
    assert delay < FAIL_FAST_SECONDS, f"the client learnt of the dead node after {delay:.1f} s"
    assert "logistics" in str(error) or node.uri in str(error) or str(node.port) in str(error), (
        error
    )
    thread.join(timeout=5)
    if thread.is_alive():  # never block the suite on a driver stuck in a read
        return
    for closeable in (reader, cur, conn):
        # Best effort: what a stuck or failed stream left behind may not close cleanly.
        with contextlib.suppress(Exception):
            closeable.close()


def test_node_killed_mid_stream_proxy_fails_fast_naming_the_domain(mesh):
    mesh.ensure_running("logistics")
    node = mesh.node("logistics")
    client, options = flight_client(mesh.gateway.uri, "erin")
    try:
        reader = client.do_get(flight.Ticket(ENDLESS_LOGISTICS.encode()), options)

        def batches():
            while True:
                chunk = reader.read_chunk()
                yield chunk.data

        thread, events = _stream_in_thread(batches)
        error, delay = _kill_mid_stream(node, events)
        assert delay < FAIL_FAST_SECONDS, f"the client learnt of the dead node after {delay:.1f} s"
        assert "logistics" in str(error), error
        thread.join(timeout=5)
    finally:
        client.close()


def _federated_record(mesh: Mesh, offset: int) -> dict:
    """The gateway's first ``federated_query`` log record after ``offset`` (written when
    the query's fragment streams end)."""
    deadline = time.monotonic() + 5
    while not (
        records := [
            r
            for r in json_lines_since(mesh.gateway.log_path, offset)
            if r.get("event") == "federated_query"
        ]
    ):
        assert time.monotonic() < deadline, "no federated_query log line"
        time.sleep(0.05)
    return records[0]


def _fragment_of(record: dict, domain: str) -> dict:
    return next(f for f in record["fragments"] if f["domain"] == domain)


def _node_query_ended(mesh: Mesh, domain: str, offsets: dict, outcomes: set[str]) -> None:
    """Wait (``FAIL_FAST_SECONDS`` at most) until a replica of ``domain`` logs a query that
    ended with one of ``outcomes``: the gateway closed its stream."""
    deadline = time.monotonic() + FAIL_FAST_SECONDS
    while True:
        ended = [
            r
            for node in mesh.nodes[domain]
            if node.log_path.exists()
            for r in json_lines_since(node.log_path, offsets.get(node.log_path, 0))
            if r.get("event") == "query" and r.get("outcome") in outcomes
        ]
        if ended:
            return
        assert time.monotonic() < deadline, f"the {domain} node's query was never stopped"
        time.sleep(0.1)


def _ensure_reachable(mesh: Mesh, *domains: str) -> None:
    """``mesh.ensure_running(*domains)``, then wait until the gateway reaches them again: its
    channel to a node restarted on the same port recovers within a few seconds."""
    mesh.ensure_running(*domains)
    sql = (
        "SELECT count(*) FROM logistics.shipments s JOIN sales.orders o USING (order_id) "
        "WHERE s.shipment_id < 3"
    )
    conn = adbc_connect(mesh.gateway.uri, "erin")
    try:
        deadline = time.monotonic() + 20
        while outcome(conn, sql)[0] != "ok":
            assert time.monotonic() < deadline, f"the gateway never reached {domains} again"
            time.sleep(0.2)
    finally:
        conn.close()


def _wait_for_tickets(mesh: Mesh, before: dict[str, int]) -> None:
    """Wait until every domain of ``before`` has served one more ticket (its fragment's
    stream started)."""
    deadline = time.monotonic() + 30
    while any(mesh.stats(domain)["tickets"] <= count for domain, count in before.items()):
        assert time.monotonic() < deadline, "the fragments' streams never started"
        time.sleep(0.05)


def test_client_cancelling_a_cross_domain_query_stops_the_node_streams(mesh):
    """The gateway's DuckDB waits on the sales node (an engine interrupt cannot reach it
    there): a client that cancels still ends the query and the node's query, fast."""
    _ensure_reachable(mesh, "sales", "logistics")
    offset = log_offset(mesh.gateway.log_path)
    sales_logs = {n.log_path: log_offset(n.log_path) for n in mesh.nodes["sales"]}
    before = {domain: mesh.stats(domain)["tickets"] for domain in ("sales", "logistics")}
    client, options = flight_client(mesh.gateway.uri, "erin")
    try:
        reader = client.do_get(flight.Ticket(WAITING_ON_SALES.encode()), options)
        _wait_for_tickets(mesh, before)
        reader.cancel()
        cancelled = time.monotonic()
        _node_query_ended(mesh, "sales", sales_logs, {"cancelled", "disconnected", "error"})
        assert time.monotonic() - cancelled < FAIL_FAST_SECONDS
    finally:
        client.close()
    record = _federated_record(mesh, offset)
    assert not _fragment_of(record, "sales")["complete"]
    deadline = time.monotonic() + FAIL_FAST_SECONDS
    while not [
        r
        for r in json_lines_since(mesh.gateway.log_path, offset)
        if r.get("event") == "query" and r.get("federated") and r.get("outcome") != "ok"
    ]:
        assert time.monotonic() < deadline, "the gateway never ended the cancelled query"
        time.sleep(0.05)


def test_node_killed_while_its_fragment_streams_fails_the_cross_domain_query_fast(mesh):
    """The gateway is in the path: rows stream node -> gateway DuckDB -> client, and the
    client's error must name the domain whose node died, fast."""
    _ensure_reachable(mesh, "sales", "logistics")
    node = mesh.node("logistics")
    offset = log_offset(mesh.gateway.log_path)
    conn = adbc_connect(mesh.gateway.uri, "erin")
    cur = conn.cursor()
    cur.execute(ENDLESS_CROSS_DOMAIN)
    reader = cur.fetch_record_batch()
    thread, events = _stream_in_thread(lambda: reader)
    error, delay = _kill_mid_stream(node, events)
    assert delay < FAIL_FAST_SECONDS, f"the client learnt of the dead node after {delay:.1f} s"
    assert "domain logistics" in str(error), error
    logistics = _fragment_of(_federated_record(mesh, offset), "logistics")
    assert logistics["streamed"] and not logistics["complete"] and logistics["rows"] > 0, logistics
    thread.join(timeout=5)
    for closeable in (reader, cur, conn):
        # Best effort: a stream that failed may not close cleanly.
        with contextlib.suppress(Exception):
            closeable.close()


def test_node_dying_while_its_fragment_waits_unread_fails_the_query_fast(mesh):
    """The gateway's DuckDB waits on the sales fragment and has not read the logistics one:
    only the gateway watching its streams can tell that the logistics node died. The
    query fails fast naming logistics, and the sales node's query is stopped too."""
    _ensure_reachable(mesh, "sales", "logistics")
    node = mesh.node("logistics")
    offset = log_offset(mesh.gateway.log_path)
    sales_logs = {n.log_path: log_offset(n.log_path) for n in mesh.nodes["sales"]}
    before = {domain: mesh.stats(domain)["tickets"] for domain in ("sales", "logistics")}
    conn = adbc_connect(mesh.gateway.uri, "erin")
    try:
        events: queue.Queue = queue.Queue()

        def run():
            try:
                cur = conn.cursor()
                cur.execute(WAITING_ON_SALES)
                events.put(("end", cur.fetch_arrow_table()))
            except Exception as exc:  # noqa: BLE001 - reported to the test thread
                events.put(("error", exc))

        threading.Thread(target=run, daemon=True).start()
        _wait_for_tickets(mesh, before)
        node.kill()
        killed = time.monotonic()
        kind, value = events.get(timeout=FAIL_FAST_SECONDS)
        delay = time.monotonic() - killed
    finally:
        conn.close()
    assert kind == "error", "the query ended normally after its logistics node was killed"
    assert delay < FAIL_FAST_SECONDS, f"the client learnt of the dead node after {delay:.1f} s"
    assert "domain logistics" in str(value), value
    record = _federated_record(mesh, offset)
    assert _fragment_of(record, "logistics")["rows"] == 0, (
        "DuckDB had not read the logistics fragment"
    )
    assert not _fragment_of(record, "sales")["complete"]
    _node_query_ended(mesh, "sales", sales_logs, {"cancelled", "disconnected", "error"})


@pytest.fixture
def logistics_down(mesh: Mesh) -> RunningNode:
    mesh.ensure_running("sales", "crm")
    node = mesh.node("logistics")
    node.kill()
    return node


def _timed_failure(run) -> tuple[BaseException, float]:
    started = time.monotonic()
    try:
        run()
    except Exception as exc:  # noqa: BLE001
        return exc, time.monotonic() - started
    pytest.fail("the query succeeded although its domain's node is down")


def test_dead_node_adbc_single_domain_query_fails_fast_naming_the_domain(mesh, logistics_down):
    conn = adbc_connect(mesh.gateway.uri, "erin")
    try:

        def run():
            cur = conn.cursor()
            cur.execute("SELECT carrier, count(*) FROM logistics.shipments GROUP BY carrier")
            cur.fetch_arrow_table()

        error, elapsed = _timed_failure(run)
    finally:
        conn.close()
    assert elapsed < FAIL_FAST_SECONDS
    assert "logistics" in str(error), f"the error does not name the domain: {error}"


def test_dead_node_cross_domain_query_fails_fast_naming_the_domain(mesh, logistics_down):
    conn = adbc_connect(mesh.gateway.uri, "erin")
    try:

        def run():
            cur = conn.cursor()
            cur.execute(
                "SELECT count(*) FROM sales.orders o JOIN logistics.shipments s USING (order_id)"
            )
            cur.fetch_arrow_table()

        error, elapsed = _timed_failure(run)
    finally:
        conn.close()
    assert elapsed < FAIL_FAST_SECONDS
    assert "logistics" in str(error), error


def test_dead_node_proxy_query_fails_fast_naming_the_domain(mesh, logistics_down):
    client, options = flight_client(mesh.gateway.uri, "erin")
    try:

        def run():
            info = client.get_flight_info(
                flight.FlightDescriptor.for_command(b"SELECT count(*) FROM logistics.shipments"),
                options,
            )
            client.do_get(info.endpoints[0].ticket, options).read_all()

        error, elapsed = _timed_failure(run)
    finally:
        client.close()
    assert elapsed < FAIL_FAST_SECONDS
    assert "logistics" in str(error), error


def test_dead_node_other_domains_still_answer(mesh, gateway, connections, logistics_down):
    for user, sql in (
        ("erin", "SELECT region, count(*) AS n FROM sales.orders GROUP BY region"),
        ("alice", "SELECT * FROM crm.customers WHERE customer_id <= 100"),
        (
            "alice",
            "SELECT c.region, count(*) AS n FROM sales.orders o JOIN crm.customers c USING (customer_id) GROUP BY 1",
        ),
    ):
        assert assert_same_as_embedded(connections, mesh, gateway, user, sql)[0] == "ok"
    client, options = flight_client(mesh.gateway.uri, "bob")
    try:
        health = json.loads(
            next(iter(client.do_action(flight.Action("Health", b""), options))).body.to_pybytes()
        )
    finally:
        client.close()
    assert [r["reachable"] for r in health["nodes"]["logistics"]] == [False]
    assert all(r["reachable"] for r in health["nodes"]["crm"])


def test_products_command_shows_the_dead_node_unreachable(mesh, logistics_down):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "products", str(mesh.mesh_dir)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")]
        cells = [c for c in cells if c]
        if len(cells) >= 3 and cells[1].startswith("grpc://"):
            rows[cells[1]] = (cells[0], cells[2])
    assert rows.get(logistics_down.uri) == ("logistics", "no"), result.stdout
    assert rows.get(mesh.node("crm").uri) == ("crm", "yes"), result.stdout
    assert rows.get(mesh.node("sales", 1).uri) == ("sales", "yes"), result.stdout
