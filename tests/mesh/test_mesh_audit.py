"""The gateway's audit of node-served queries (issue 14, item 5), end to end.

In mesh mode a client fetches a single-domain query's rows straight from the domain's node:
the gateway sees none of them, yet its audit must tell the truth. Each ticket it seals for
such a query carries the query's audit id; the node reports each endpoint's end (rows,
bytes, start, duration, outcome, error) and the gateway, which collects the reports from
the nodes of pending queries, writes the end record (``gateway.mesh.ends``).

One module-scoped mesh: a copy of the demo mesh with ``split_endpoints = 3``, two sales
replicas, one crm and one logistics node, and one gateway, all real processes on 127.0.0.1.
Every test tags its statements with a unique literal to find its own records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import flight
from support.clients import adbc_connect, flight_client, raw_info
from support.logs import log_records
from support.mesh import Mesh, running_mesh
from support.polling import wait_until

from benchmarks.launch import REPO
from gateway.audit.log import read_audit
from gateway.mesh.actions import ACTION_ENDS
from gateway.mesh.tickets import TicketSealer

pytestmark = pytest.mark.mesh

TICKET_TTL_SECONDS = 8
SPLIT = 3
END_TIMEOUT = 60.0
# Streams until the client stops reading or the node dies.
ENDLESS_LOGISTICS = (
    "SELECT a.shipment_id, a.carrier, b.carrier AS other_carrier, '{tag}' AS tag "
    "FROM logistics.shipments a, logistics.shipments b"
)


@pytest.fixture(scope="module")
def mesh(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mesh-audit")
    with running_mesh(
        demo_mesh,
        root,
        {"sales": 2, "crm": 1, "logistics": 1},
        TICKET_TTL_SECONDS,
        {"split_endpoints": SPLIT},
    ) as running:
        yield running


def tagged() -> str:
    return f"audit-{uuid.uuid4().hex[:10]}"


def audit_dir(mesh: Mesh) -> Path:
    return mesh.mesh_dir / ".meshgate" / "audit"


def begin_of(mesh: Mesh, tag: str) -> dict:
    """The one begin record of the statement tagged ``tag``."""
    begins = [
        r for r in read_audit(audit_dir(mesh)) if r["event"] == "query_begin" and tag in r["sql"]
    ]
    assert len(begins) == 1, begins
    return begins[0]


def end_of(mesh: Mesh, tag: str, timeout: float = END_TIMEOUT) -> dict:
    """The end record of the statement tagged ``tag``, once the gateway wrote it."""
    query_id = begin_of(mesh, tag)["query_id"]

    def written() -> list[dict]:
        return [
            r
            for r in read_audit(audit_dir(mesh))
            if r["event"] == "query_end" and r["query_id"] == query_id
        ]

    ends = wait_until(written, timeout, 0.1, f"the end record of {tag}")
    assert isinstance(ends, list) and len(ends) == 1, ends
    return ends[0]


def received_bytes(table: pa.Table) -> int:
    return sum(batch.nbytes for batch in table.to_batches())


def assert_bytes(end: dict, table: pa.Table, sent: int) -> None:
    """The end record's bytes are the Arrow bytes the nodes sent (``sent``: their counters),
    as the embedded path counts its batches; the client holds no more (the wire drops the
    validity bitmaps of columns without nulls)."""
    assert end["bytes"] == sent
    assert 0 < received_bytes(table) <= end["bytes"]


# --------------------------------------------------------------------------- served by nodes


@pytest.mark.parametrize(
    "sql",
    [
        # split into 3 endpoints, fetched in parallel from the two sales replicas
        "SELECT order_id, amount, region, '{tag}' AS tag FROM sales.orders",
        # one endpoint: an aggregate is never split
        "SELECT region, count(*) AS n, '{tag}' AS tag FROM sales.orders GROUP BY region",
    ],
    ids=["split-scan", "aggregate"],
)
def test_adbc_fetches_from_the_nodes_and_the_end_record_matches_what_it_received(
    mesh: Mesh, sql: str
):
    mesh.ensure_running("sales")
    tag = tagged()
    before = mesh.stats("sales")
    with adbc_connect(mesh.gateway.uri, "alice") as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(sql.format(tag=tag))
        table = cur.fetch_arrow_table()
        elapsed_ms = (time.perf_counter() - started) * 1000
    begin = begin_of(mesh, tag)
    assert (begin["engine"], begin["node"], begin["decision"]) == ("node", "sales", "allowed")
    end = end_of(mesh, tag)
    assert (end["outcome"], end["error"]) == ("ok", None)
    assert end["rows"] == table.num_rows > 0
    assert_bytes(end, table, mesh.stats("sales")["bytes"] - before["bytes"])
    assert 0 < end["duration_ms"] <= elapsed_ms


def test_a_plain_flight_client_relayed_by_the_gateway_is_audited_the_same(mesh: Mesh):
    mesh.ensure_running("sales")
    tag = tagged()
    sql = f"SELECT order_id, customer_id, '{tag}' AS tag FROM sales.orders WHERE amount > 1000"
    before = mesh.stats("sales")
    client, options = flight_client(mesh.gateway.uri, "bob")
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        assert len(info.endpoints) == SPLIT
        # pyarrow does not follow locations: the tickets go back to the gateway, which relays
        table = pa.concat_tables(
            client.do_get(endpoint.ticket, options).read_all() for endpoint in info.endpoints
        )
    finally:
        client.close()
    end = end_of(mesh, tag)
    assert (end["outcome"], end["rows"], end["error"]) == ("ok", table.num_rows, None)
    assert_bytes(end, table, mesh.stats("sales")["bytes"] - before["bytes"])


def test_meshgate_audit_shows_the_rows_and_bytes_of_a_node_served_query(mesh: Mesh):
    mesh.ensure_running("sales")
    tag = tagged()
    with adbc_connect(mesh.gateway.uri, "erin") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT order_id, '{tag}' AS tag FROM sales.orders WHERE order_id <= 777")
        table = cur.fetch_arrow_table()
    end = end_of(mesh, tag)
    listed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", str(mesh.mesh_dir), "--user", "erin"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400", "NO_COLOR": "1"},
        timeout=120,
        check=True,
    )
    (line,) = [line for line in listed.stdout.splitlines() if tag in line]
    cells = [cell.strip() for cell in line.split("│")]
    assert str(table.num_rows) in cells and str(end["bytes"]) in cells, line


# --------------------------------------------------------------------------- failures


def adbc_query(mesh: Mesh, sql: str) -> None:
    with adbc_connect(mesh.gateway.uri, "bob") as conn, conn.cursor() as cur:
        cur.execute(sql)
        cur.fetch_arrow_table()


def raw_sql_ticket(mesh: Mesh, sql: str) -> None:
    """Raw SQL as a DoGet ticket: the gateway plans it and relays the node's rows."""
    client, options = flight_client(mesh.gateway.uri, "bob")
    try:
        client.do_get(flight.Ticket(sql.encode()), options).read_all()
    finally:
        client.close()


@pytest.mark.parametrize(
    ("run", "sql"),
    [
        # placed: the endpoints would be the crm node's
        (adbc_query, "SELECT customer_id, '{tag}' AS tag FROM crm.customers"),
        # relayed by the gateway, opened at once
        (raw_sql_ticket, "SELECT customer_id, '{tag}' AS tag FROM crm.customers"),
        # federated: the crm fragment fails before the first row
        (
            adbc_query,
            (
                "SELECT o.order_id, c.name, '{tag}' AS tag FROM sales.orders o "
                "JOIN crm.customers c ON c.customer_id = o.customer_id"
            ),
        ),
    ],
    ids=["placed", "relayed", "federated"],
)
def test_a_query_whose_node_is_down_is_recorded_as_failed_naming_its_domain(
    mesh: Mesh, run, sql: str
):
    mesh.ensure_running("crm", "sales")
    node = mesh.node("crm")
    node.kill()
    try:
        tag = tagged()
        with pytest.raises(Exception, match="domain crm is unavailable"):
            run(mesh, sql.format(tag=tag))
        end = end_of(mesh, tag)
        assert end["outcome"] == "error"
        assert end["error"].startswith("domain crm is unavailable"), end
        assert end["rows"] == 0
    finally:
        mesh.ensure_running("crm")


def test_the_nodes_own_error_is_the_end_records_error(mesh: Mesh):
    """The query fails on the node, at run time: the client and the audit get the node's
    message."""
    mesh.ensure_running("sales")
    tag = tagged()
    with pytest.raises(Exception) as caught:  # ADBC's error, compared below
        adbc_query(mesh, f"SELECT CAST(region AS INTEGER) AS r, '{tag}' AS tag FROM sales.orders")
    end = end_of(mesh, tag)
    assert end["outcome"] == "error" and end["error"], end
    assert end["error"] in str(caught.value)
    assert "sales.orders" in end["error"]


def test_a_node_that_dies_while_streaming_fails_the_query_in_the_audit(mesh: Mesh):
    mesh.ensure_running("logistics")
    node = mesh.node("logistics")
    tag = tagged()
    got: dict[str, object] = {"rows": 0}
    first_batch = threading.Event()

    def read() -> None:
        try:
            with adbc_connect(mesh.gateway.uri, "bob") as conn, conn.cursor() as cur:
                cur.execute(ENDLESS_LOGISTICS.format(tag=tag))
                reader = cur.fetch_record_batch()
                for batch in reader:
                    got["rows"] = int(got["rows"]) + batch.num_rows  # type: ignore[call-overload]
                    first_batch.set()
        except Exception as exc:  # noqa: BLE001 - the failure is the point; asserted below
            got["error"] = exc
        finally:
            first_batch.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_batch.wait(60) and "error" not in got, got
        # the gateway has collected from the node while it streamed (twice: once after the
        # stream began, whatever the phase of its polling)
        collected = node.action("stats")["collected"]
        wait_until(lambda: node.action("stats")["collected"] >= collected + 2, 30)
        node.kill()
        reader.join(60)
        assert "error" in got, "the client kept reading from a dead node"
        end = end_of(mesh, tag)
        assert end["outcome"] == "error"
        assert end["error"] == "domain logistics's node stopped while streaming; the query failed"
        assert end["rows"] > 0  # as of the node's last report
    finally:
        mesh.ensure_running("logistics")


def test_endpoints_never_fetched_end_the_query_incomplete_after_their_tickets_expire(mesh: Mesh):
    mesh.ensure_running("sales")
    tag = tagged()
    info = raw_info(mesh.gateway.uri, "alice", f"SELECT *, '{tag}' AS tag FROM sales.orders")
    assert len(info.endpoints) == SPLIT  # handed out, never fetched
    end = end_of(mesh, tag, timeout=TICKET_TTL_SECONDS + END_TIMEOUT)
    assert (end["outcome"], end["rows"], end["bytes"]) == ("incomplete", 0, 0)
    assert end["error"] == (
        f"{SPLIT} of {SPLIT} endpoint(s) of domain sales's node reported no end: never fetched "
        "before their tickets expired, or the node stopped"
    )


# --------------------------------------------------------------------------- forgery


class ForgingNode(flight.FlightServerBase):
    """A compromised node holding the ticket key, at a sales replica's address: it answers
    the gateway's collection with reports of another domain's query."""

    def __init__(self, location: str, key: str, forged: dict) -> None:
        super().__init__(location)
        self._sealer = TicketSealer(key, 60)
        self._forged = forged
        self.asked = 0

    def do_action(self, context, action):
        if action.type != ACTION_ENDS:
            raise flight.FlightUnavailableError("not here")
        self._sealer.open(action.body.to_pybytes())  # the gateway's control ticket
        self.asked += 1
        answer = {"instance": "forger", "streaming": [], "ended": [self._forged]}
        return [flight.Result(json.dumps(answer).encode())]


def test_a_node_cannot_end_another_domains_query(mesh: Mesh):
    """A sales replica reports the end of a crm query (whose id it learnt somehow): the
    gateway ignores it, and the crm query's end record comes from crm's node."""
    mesh.ensure_running("sales", "crm")
    crm_tag, sales_tag = tagged(), tagged()
    crm_sql = f"SELECT customer_id, '{crm_tag}' AS tag FROM crm.customers WHERE customer_id < 50"
    before = mesh.stats("crm")
    crm_info = raw_info(mesh.gateway.uri, "bob", crm_sql)  # pending on crm until fetched
    crm_query = begin_of(mesh, crm_tag)["query_id"]
    forged = {
        "query": crm_query,
        "part": 0,
        "rows": 999_999,
        "bytes": 1,
        "started": time.time(),
        "duration_ms": 1.0,
        "outcome": "ok",
        "error": None,
    }
    replica = mesh.node("sales", 1)
    replica.kill()
    forger = ForgingNode(replica.uri, mesh.key, forged)
    try:
        # a pending sales query makes the gateway collect from every sales replica
        raw_info(mesh.gateway.uri, "bob", f"SELECT *, '{sales_tag}' AS tag FROM sales.orders")
        wait_until(lambda: forger.asked >= 2, 30, what="the gateway collecting from the forger")
        client, options = flight_client(mesh.gateway.uri, "bob")
        try:
            table = client.do_get(crm_info.endpoints[0].ticket, options).read_all()
        finally:
            client.close()
        end = end_of(mesh, crm_tag)
        assert (end["outcome"], end["rows"]) == ("ok", table.num_rows)
        assert 0 < table.num_rows < 50
        assert_bytes(end, table, mesh.stats("crm")["bytes"] - before["bytes"])
        ignored = wait_until(
            lambda: log_records(mesh.gateway.log(), "end_report_refused"), 10, what="the log"
        )
        assert isinstance(ignored, list) and ignored[0]["domain"] == "sales"
    finally:
        forger.shutdown()
        mesh.ensure_running("sales")


# --------------------------------------------------------------------------- shutdown


def test_a_gateway_shutting_down_ends_the_queries_it_placed(
    demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory
):
    """SIGTERM: the gateway collects once more, then ends what its nodes have not
    reported, instead of leaving begin records without an end."""
    root = tmp_path_factory.mktemp("mesh-audit-shutdown")
    with running_mesh(demo_mesh, root, {"sales": 1}, ticket_ttl_seconds=600) as mesh:
        tag = tagged()
        raw_info(mesh.gateway.uri, "bob", f"SELECT order_id, '{tag}' AS tag FROM sales.orders")
        assert mesh.gateway is not None
        mesh.gateway.process.terminate()
        assert mesh.gateway.process.wait(timeout=60) == 0
        end = end_of(mesh, tag, timeout=5)  # written before the process exited
    assert (end["outcome"], end["rows"]) == ("incomplete", 0)
    assert end["error"] == (
        "the gateway stopped before domain sales's node reported the end of 1 of 1 endpoint(s)"
    )
