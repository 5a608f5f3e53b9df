"""Split endpoints and replica load spreading (issue 4, item 2), end to end.

One module-scoped mesh with ``[nodes] split_endpoints = 4``: a copy of the demo mesh plus
``sales.visits``, a Parquet product of 8 files (with a row filter for alice, a pii mask
and a rounding mask), served by two sales replicas and one logistics node. The oracle is
an embedded gateway (no ``[nodes]``) over the same extended copy: every answer must equal
it, for every demo user, through ADBC (parallel fetch of every endpoint from the nodes)
and through a plain pyarrow.flight client (each ticket relayed by the gateway).

Partitions: ``sales.orders`` (a DuckDB table) splits by rowid ranges, ``sales.visits`` by
file groups (md5 of the file's path below the product root, modulo 4); an aggregate, a
DISTINCT, an ORDER BY, a LIMIT, a window, a join or a subquery is never split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from pyarrow import flight
from support.clients import adbc_connections, flight_client, raw_info
from support.logs import json_lines_since, log_offset
from support.mesh import Mesh, outcome, running_mesh, sorted_rows
from support.polling import wait_until
from support.servers import RunningGateway, start_gateway, stop_gateway

from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.errors import UnknownObject
from gateway.flightsql.service import SqlService
from gateway.mesh.tickets import MAGIC
from gateway.security.principal import Principal

pytestmark = pytest.mark.mesh

SPLIT = 4
USERS = ("alice", "bob", "carol", "erin", "dave")
VISIT_FILES = 8  # file names chosen so that md5 % 4 puts 2, 2, 3 and 1 files in the partitions
VISITS_PER_FILE = 5_000

SCANS = [
    "SELECT * FROM sales.orders",
    "SELECT order_id, amount * 2 AS doubled, upper(region) AS r FROM sales.orders WHERE amount > 2500",
    "SELECT * FROM sales.visits",
    "SELECT visit_id, email, duration_s FROM sales.visits v WHERE v.duration_s BETWEEN 100 AND 4000",
]
NOT_SPLIT = [
    "SELECT count(*) AS n FROM sales.visits",
    "SELECT region, sum(amount) AS total FROM sales.orders GROUP BY region",
    "SELECT DISTINCT region FROM sales.visits",
    "SELECT * FROM sales.orders ORDER BY order_id",
    "SELECT * FROM sales.visits LIMIT 10",
    "SELECT * FROM sales.orders OFFSET 10",
    "SELECT visit_id, row_number() OVER () AS n FROM sales.visits",
    "SELECT geomean(duration_s) AS g FROM sales.visits",
    "SELECT * FROM sales.orders WHERE amount > (SELECT avg(amount) FROM sales.orders)",
    "SELECT a.order_id FROM sales.orders a JOIN sales.orders b USING (order_id)",
    "SELECT * FROM sales.visits UNION ALL SELECT * FROM sales.visits",
    "WITH v AS (SELECT * FROM sales.visits) SELECT * FROM v",
    "SELECT * FROM sales.visits USING SAMPLE 10 PERCENT (bernoulli)",
]

_VISITS_CONTRACT = """\
apiVersion: v3.1.0
kind: DataContract
id: urn:meshgate:sales:visits
version: 1.0.0
status: active
name: visits
domain: sales
dataProduct: visits
description:
  purpose: Web shop visits, one Parquet file per day (a product of many files).
servers:
  - server: local
    type: local
    format: parquet
    path: data/visits
schema:
  - name: visits
    physicalType: table
    properties:
      - name: visit_id
        physicalType: BIGINT
        logicalType: integer
        required: true
      - name: region
        physicalType: VARCHAR
        logicalType: string
        required: true
      - name: email
        physicalType: VARCHAR
        logicalType: string
        required: true
        tags: [pii]
      - name: duration_s
        physicalType: BIGINT
        logicalType: integer
        required: true
"""

_VISITS_POLICY = """
p, analyst_eu, sales.visits, read, allow
p, analyst_eu, sales.visits, filter, allow, region = {user.region}
p, ops, sales.visits, read, allow
p, ops, sales.visits.duration_s, mask, allow, round:100
"""


def write_visits(mesh_dir: Path) -> None:
    """Add ``sales.visits`` (8 Parquet files) with its contract and policy rules."""
    folder = mesh_dir / "sales" / "data" / "visits"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    for number in range(VISIT_FILES):
        first = number * VISITS_PER_FILE
        con.execute(
            f"COPY (SELECT range AS visit_id, ['EU', 'US', 'APAC'][1 + range % 3] AS region, "
            f"'user' || range || '@example.com' AS email, (range * 7919) % 5000 AS duration_s "
            f"FROM range({first}, {first + VISITS_PER_FILE})) TO '{folder / f'part-{number:02d}.parquet'}' "
            "(FORMAT parquet)"
        )
    con.close()
    (mesh_dir / "sales" / "visits.odcs.yaml").write_text(_VISITS_CONTRACT, encoding="utf-8")
    with (mesh_dir / "sales" / "policy.csv").open("a", encoding="utf-8") as policy:
        policy.write(_VISITS_POLICY)


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def source(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo mesh plus ``sales.visits``."""
    root = tmp_path_factory.mktemp("split-source")
    mesh_dir = Path(
        shutil.copytree(demo_mesh, root / "mesh", ignore=shutil.ignore_patterns(".meshgate"))
    )
    write_visits(mesh_dir)
    return mesh_dir


@pytest.fixture(scope="module")
def mesh(source: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("split-mesh")
    with running_mesh(
        source, root, {"sales": 2, "logistics": 1}, 60, {"split_endpoints": SPLIT}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def embedded(source: Path, tmp_path_factory: pytest.TempPathFactory):
    """The oracle: the same extended mesh, embedded mode (no nodes, no split)."""
    running = start_gateway(source, tmp_path_factory.mktemp("split-embedded") / "gateway.log")
    yield running
    stop_gateway(running)


@pytest.fixture(scope="module")
def connections(mesh: Mesh, embedded: RunningGateway):
    """ADBC connections, one per (gateway, user), opened lazily and closed at the end."""
    with adbc_connections() as get:
        yield get


# --------------------------------------------------------------------------- helpers


def replica_tickets(mesh: Mesh, domain: str = "sales") -> list[int]:
    return [node.action("stats")["tickets"] for node in mesh.nodes[domain]]


def relayed(uri: str, user: str, sql: str) -> tuple[int, pa.Table]:
    """Plain pyarrow.flight: FlightInfo, then every endpoint's ticket sent back to ``uri``."""
    client, options = flight_client(uri, user)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        tables = [client.do_get(e.ticket, options).read_all() for e in info.endpoints]
        return len(info.endpoints), pa.concat_tables(tables)
    finally:
        client.close()


def same_as_embedded(
    connections, mesh: Mesh, embedded: RunningGateway, user: str, sql: str
) -> tuple:
    got = outcome(connections(mesh.gateway.uri, user), sql)
    expected = outcome(connections(embedded.uri, user), sql)
    if expected[0] == "error":
        assert got[0] == "error", f"{user}: {sql}: mesh answered, embedded refused: {expected}"
        return got
    assert got[0] == "ok", f"{user}: {sql}: {got}"
    assert got[1] == expected[1], f"{user}: {sql}: schema differs"
    assert len(got[2]) == len(expected[2]), (
        f"{user}: {sql}: {len(got[2])} rows, embedded {len(expected[2])}"
    )
    assert got[2] == expected[2], f"{user}: {sql}: values differ"
    return got


# --------------------------------------------------------------------------- planning (in process)


@pytest.fixture(scope="module")
def service(source: Path) -> SqlService:
    config = load_config(source)
    config = config.model_copy(
        update={"nodes": config.nodes.model_copy(update={"split_endpoints": SPLIT})}
    )
    return SqlService(MeshState(source, config))


def principal(service: SqlService, user: str) -> Principal:
    settings = service._state.config.users[user]
    return Principal(user, tuple(settings.roles), dict(settings.attributes))


def test_partition_views_cover_every_row_once(service: SqlService):
    engine = service.snapshot.catalog.engine
    assert engine.partitions["sales.orders"][0] == SPLIT
    assert engine.partitions["sales.visits"] == (SPLIT, VISIT_FILES)
    with engine.cursor() as cursor:
        for key in ("sales.orders", "sales.visits", "logistics.shipments"):
            domain, name = key.split(".")
            whole = f'memory."{domain}"."{name}"'
            parts = [f'memory.__meshgate_partitions."{key}#{i}/{SPLIT}"' for i in range(SPLIT)]
            union = " UNION ALL ".join(f"SELECT * FROM {part}" for part in parts)
            differences = cursor.sql(
                f"SELECT (SELECT count(*) FROM (SELECT * FROM {whole} EXCEPT ALL ({union}))), "
                f"(SELECT count(*) FROM (({union}) EXCEPT ALL SELECT * FROM {whole}))"
            ).fetchall()[0]
            assert differences == (0, 0), key  # the same multiset of rows
            sizes = [cursor.sql(f"SELECT count(*) FROM {part}").fetchall()[0][0] for part in parts]
            if key != "logistics.shipments":  # 3 files: md5 leaves some partitions empty
                assert all(sizes), (key, sizes)


def test_users_cannot_name_partition_views(service: SqlService):
    """Only catalogued products resolve: the hidden views are unreachable by name."""
    for sql in (
        'SELECT * FROM __meshgate_partitions."sales.orders#0/4"',
        'SELECT * FROM mesh.__meshgate_partitions."sales.orders#0/4"',
        'SELECT * FROM memory.__meshgate_partitions."sales.orders#0/4"',
        'SELECT * FROM sales."orders#0/4"',
        'SELECT * FROM "sales.orders#0/4"',
    ):
        with pytest.raises(UnknownObject):
            service.planner.plan(principal(service, "bob"), sql)


def test_only_row_wise_single_product_scans_split(service: SqlService):
    from gateway.mesh.partitions import partition_sqls

    bob = principal(service, "bob")
    secured = set()
    for user in (bob, principal(service, "alice")):
        for sql in SCANS:
            planned = service.planner.plan(user, sql)
            parts = partition_sqls(planned, SPLIT)
            assert len(parts) == SPLIT, sql
            assert all(f"#{i}/{SPLIT}" in part for i, part in enumerate(parts)), sql
            secured.add("(SELECT" in planned.sql)
    # both shapes split: products bob sees whole (their views read directly), and alice's
    # row-filtered reads through their secure subqueries
    assert secured == {True, False}
    for sql in NOT_SPLIT:
        assert partition_sqls(service.planner.plan(bob, sql), SPLIT) == (), sql
    # one file, or not worth it: never split
    assert partition_sqls(service.planner.plan(bob, "SELECT * FROM crm.customers"), SPLIT) == ()


# --------------------------------------------------------------------------- end to end


def test_flight_info_has_one_endpoint_per_partition(mesh: Mesh):
    for sql in SCANS:
        info = raw_info(mesh.gateway.uri, "bob", sql)
        assert len(info.endpoints) == SPLIT, sql
        assert all(e.ticket.ticket.startswith(MAGIC) for e in info.endpoints)
        assert len({e.ticket.ticket for e in info.endpoints}) == SPLIT
    for sql in NOT_SPLIT[:6]:
        assert len(raw_info(mesh.gateway.uri, "bob", sql).endpoints) == 1, sql


def test_adbc_results_equal_embedded_for_every_user(
    connections, mesh: Mesh, embedded: RunningGateway
):
    mesh.ensure_running("sales")
    for user in USERS:
        for sql in SCANS + NOT_SPLIT[:3]:
            before = sum(replica_tickets(mesh))
            got = same_as_embedded(connections, mesh, embedded, user, sql)
            if got[0] == "ok" and sql in SCANS:
                assert sum(replica_tickets(mesh)) - before == SPLIT, (
                    f"{user}: {sql}: rows not from {SPLIT} node tickets"
                )


def test_plain_flight_client_relays_every_endpoint(mesh: Mesh, embedded: RunningGateway):
    mesh.ensure_running("sales")
    for user in ("alice", "bob", "erin"):
        for sql in SCANS:
            endpoints, table = relayed(mesh.gateway.uri, user, sql)
            assert endpoints == SPLIT
            _, expected = relayed(embedded.uri, user, sql)
            assert table.schema == expected.schema
            assert sorted_rows(table) == sorted_rows(expected), f"{user}: {sql}"


def test_every_partition_returns_a_share(mesh: Mesh):
    """Each endpoint's ticket, fetched from the node itself, returns a non-empty share."""
    mesh.ensure_running("sales")
    for user, sql in (
        ("alice", "SELECT * FROM sales.visits"),
        ("bob", "SELECT * FROM sales.orders"),
    ):
        info = raw_info(mesh.gateway.uri, user, sql)
        shares = []
        for endpoint in info.endpoints:
            client = flight.FlightClient(endpoint.locations[0])
            try:
                shares.append(client.do_get(endpoint.ticket).read_all().num_rows)
            finally:
                client.close()
        assert len(shares) == SPLIT and all(shares), (sql, shares)
        if user == "alice":  # her row filter holds in every partition
            assert sum(shares) == len(
                range(0, VISIT_FILES * VISITS_PER_FILE, 3)
            )  # region EU: id % 3 = 0


def test_one_audit_entry_per_statement(mesh: Mesh, connections):
    audit = mesh.mesh_dir / ".meshgate" / "audit" / "audit.jsonl"
    offset = log_offset(audit)
    sql = "SELECT visit_id, region FROM sales.visits WHERE visit_id % 2 = 0"
    assert outcome(connections(mesh.gateway.uri, "bob"), sql)[0] == "ok"
    begins = [
        r
        for r in json_lines_since(audit, offset)
        if r.get("event") == "query_begin" and r.get("sql") == sql
    ]
    assert len(begins) == 1


def test_round_robin_spreads_tickets_over_replicas(mesh: Mesh, connections):
    mesh.ensure_running("sales")
    before = replica_tickets(mesh)
    conn = connections(mesh.gateway.uri, "bob")
    assert outcome(conn, "SELECT * FROM sales.orders")[0] == "ok"  # 4 endpoints
    for _ in range(4):  # unsplit queries rotate too
        assert outcome(conn, "SELECT count(*) AS n FROM sales.orders")[0] == "ok"
    served = [after - first for after, first in zip(replica_tickets(mesh), before, strict=True)]
    assert sum(served) == SPLIT + 4
    assert min(served) >= 3, f"replicas served {served} tickets: not spread"


def test_failover_skips_a_dead_replica(mesh: Mesh, connections, embedded: RunningGateway):
    mesh.ensure_running("sales")
    dead, alive = mesh.nodes["sales"]
    dead.kill()
    try:
        before = alive.action("stats")["tickets"]
        for sql in (SCANS[0], SCANS[2], NOT_SPLIT[0]):
            same_as_embedded(connections, mesh, embedded, "bob", sql)
        # immediately after the kill the gateway may still list the dead replica (health is
        # cached for a while): the client then fails over to the next location itself; soon
        # every endpoint lists only the live replica (GetFlightInfo seals, fetches nothing)
        wait_until(
            lambda: (
                (endpoints := raw_info(mesh.gateway.uri, "bob", SCANS[0]).endpoints)
                and all([loc.uri.decode() for loc in e.locations] == [alive.uri] for e in endpoints)
            ),
            what="endpoints listing only the live replica",
        )
        assert alive.action("stats")["tickets"] - before == 2 * SPLIT + 1
    finally:
        mesh.ensure_running("sales")
