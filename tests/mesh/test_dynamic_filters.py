"""Dynamic filtering in mesh mode (issue 17, item 4), end to end on real nodes.

A cross-domain join whose build side is small fetches that side first and sends its
distinct keys with the probe side's fragment, so the probe's node returns only rows that
can join (``gateway.mesh.dynamic``); ORs across products are split per product
(``gateway.mesh.disjunctions``, TPC-H q19).

- TPC-H at SF 0.01 over three domain nodes: every cross-domain query answers exactly as the
  embedded gateway, for the admin and for the analyst (row filter on lineitem); q19 sends
  the filtered parts' keys and its lineitem fragment moves only rows of those parts.
- Governance on the demo mesh: alice's row filter keeps non-EU orders from her; the keys
  her orders send to the customers node are her visible orders' customers only (the probe
  returns exactly those customers: a hidden key would bring its customer along, and an
  order's customer shares its region), and a probe under her row filter gets the keys
  around its governed fragment, never inside it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from support.logs import log_offset
from support.mesh import Mesh, federated, outcome, running_mesh
from support.servers import RunningGateway, start_gateway, stop_gateway

from benchmarks.data import find_executable, write_mesh
from benchmarks.measure import same_result
from benchmarks.mesh import domains_of
from benchmarks.settings import ADMIN_USER, ANALYST_USER, BenchConfig
from benchmarks.tpch import QUERY_NUMBERS, qualified
from gateway.audit.log import read_audit
from gateway.mesh.tickets import KEY_SET_PREFIX
from gateway.security.passwords import hash_password

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

SCALE = 0.01
CROSS_DOMAIN = [n for n in QUERY_NUMBERS if len(domains_of(qualified(n))) > 1]
Q19_PARTS = (
    "SELECT p_partkey FROM parts.part WHERE "
    "(p_brand = 'Brand#12' AND p_container IN ('SM CASE', 'SM BOX', 'SM PACK', 'SM PKG') "
    "AND p_size BETWEEN 1 AND 5) OR (p_brand = 'Brand#23' AND p_container IN "
    "('MED BAG', 'MED BOX', 'MED PKG', 'MED PACK') AND p_size BETWEEN 1 AND 10) OR "
    "(p_brand = 'Brand#34' AND p_container IN ('LG CASE', 'LG BOX', 'LG PACK', 'LG PKG') "
    "AND p_size BETWEEN 1 AND 15)"
)
DAY = "DATE '2024-03-01'"
#: Build: one day of alice's orders (row filter region = EU); probe: every customer.
ORDERS_TO_CUSTOMERS = (
    "SELECT c.customer_id, c.name, o.order_id FROM sales.orders o "
    f"JOIN crm.customers c ON c.customer_id = o.customer_id WHERE o.order_date = {DAY}"
)
#: Build: ten customers; probe: orders, under alice's row filter.
CUSTOMERS_TO_ORDERS = (
    "SELECT o.order_id, o.amount, c.name FROM crm.customers c "
    "JOIN sales.orders o ON o.customer_id = c.customer_id "
    "WHERE c.customer_id IN (3, 5, 8, 13, 21, 34, 55, 89, 144, 233)"
)


def node_begins(mesh: Mesh, domain: str, since: int) -> list[dict]:
    audit = mesh.mesh_dir / ".meshgate" / "audit" / f"node-{domain}"
    return [r for r in read_audit(audit) if r["event"] == "ticket_begin"][since:]


def filtered_begins(begins: list[dict]) -> list[dict]:
    """The tickets that carried a dynamic filter (not, say, a whole-product size estimate)."""
    return [b for b in begins if dynamic_predicates(b["sql"])]


def dynamic_predicates(sql: str | exp.Expr) -> list[exp.In]:
    """The semi-joins on a key set in ``sql`` (the dynamic filters)."""
    tree = sqlglot.parse_one(sql, read="duckdb") if isinstance(sql, str) else sql
    return [
        node
        for node in tree.find_all(exp.In)
        if node.args.get("query") is not None
        and any(t.name.startswith(KEY_SET_PREFIX) for t in node.find_all(exp.Table))
    ]


def fetch(conn, sql: str):
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return cur.fetch_arrow_table()
    finally:
        cur.close()


# --------------------------------------------------------------------------- TPC-H


@pytest.fixture(scope="module")
def tpch_mesh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark's TPC-H mesh at SF 0.01, plus ``bob`` (admin), whom the launchers
    of ``support`` sign in with."""
    if find_executable("tpchgen-cli") is None:
        pytest.skip("tpchgen-cli is not installed")
    config = BenchConfig.make(scale=SCALE, out=tmp_path_factory.mktemp("tpch"))
    mesh_dir = write_mesh(config, log=lambda _: None).mesh_dir
    shutil.rmtree(mesh_dir / ".meshgate", ignore_errors=True)
    text = (mesh_dir / "mesh.toml").read_text(encoding="utf-8")
    bob = f'\n[users.bob]\npassword_hash = "{hash_password("bob")}"\nroles = ["admin"]\n'
    head, marker, tail = text.partition("\n[users.")
    (mesh_dir / "mesh.toml").write_text(head + bob + marker + tail, encoding="utf-8")
    return mesh_dir


@pytest.fixture(scope="module")
def tpch_embedded(tpch_mesh: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tpch-embedded")
    mesh_dir = Path(
        shutil.copytree(tpch_mesh, root / "mesh", ignore=shutil.ignore_patterns(".meshgate"))
    )
    running = start_gateway(mesh_dir, root / "gateway.log")
    yield running
    stop_gateway(running)


@pytest.fixture(scope="module")
def tpch_nodes(tpch_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("tpch-mesh")
    with running_mesh(tpch_mesh, root, {"orders": 1, "customers": 1, "parts": 1}) as running:
        yield running


@pytest.mark.parametrize("user", [ADMIN_USER, ANALYST_USER])
def test_cross_domain_tpch_equals_embedded(
    tpch_nodes: Mesh, tpch_embedded: RunningGateway, connections, user: str
):
    assert len(CROSS_DOMAIN) == 17
    mesh, embedded = connections(tpch_nodes.gateway.uri, user), connections(tpch_embedded.uri, user)
    filtered = 0
    for number in CROSS_DOMAIN:
        offset = log_offset(tpch_nodes.gateway.log_path)
        got, expected = fetch(mesh, qualified(number)), fetch(embedded, qualified(number))
        same, why = same_result(got, expected)
        assert same, f"q{number} as {user}: {why}"
        assert got.schema.types == expected.schema.types, f"q{number}"
        filtered += bool(federated(tpch_nodes.gateway.log_path, offset)["dynamic_filters"])
    assert filtered >= 10, "dynamic filters were sent for most cross-domain queries"


def test_q19_moves_only_lineitems_of_the_filtered_parts(
    tpch_nodes: Mesh, tpch_embedded: RunningGateway, connections
):
    embedded = connections(tpch_embedded.uri, ANALYST_USER)
    parts = fetch(embedded, Q19_PARTS).column("p_partkey").to_pylist()
    matching = (
        fetch(
            embedded,
            "SELECT count(*) AS n FROM orders.lineitem WHERE l_partkey IN "
            f"({', '.join(map(str, parts))})",
        )
        .column("n")[0]
        .as_py()
    )
    total = fetch(embedded, "SELECT count(*) AS n FROM orders.lineitem").column("n")[0].as_py()
    assert len(parts) > 0 and 0 < matching < total // 20

    offset = log_offset(tpch_nodes.gateway.log_path)
    fetch(connections(tpch_nodes.gateway.uri, ANALYST_USER), qualified(19))
    record = federated(tpch_nodes.gateway.log_path, offset)
    assert record["dynamic_filters"] == [
        {
            "probe": "orders.lineitem",
            "column": "l_partkey",
            "build": record["dynamic_filters"][0]["build"],
            "kind": "in",
            "keys": len(parts),
        }
    ]
    lineitem = next(f for f in record["fragments"] if f["products"] == ["orders.lineitem"])
    assert lineitem["complete"] and lineitem["rows"] <= matching
    part = next(f for f in record["fragments"] if f["products"] == ["parts.part"])
    assert part["rows"] == len(parts), "the OR on part went to its node, split per product"


def test_builds_first_then_probes_and_a_repeated_query_is_not_estimated_again(
    tpch_nodes: Mesh, connections
):
    """q3: customers (build) -> orders x lineitem (probe). The log's timeline shows the
    probe's ticket sent after the build's last batch; the second run takes the fragments'
    row estimates from the gateway's cache (``EstimateCache``) and plans the same filters."""
    conn = connections(tpch_nodes.gateway.uri, ANALYST_USER)
    records = []
    for _ in range(2):
        offset = log_offset(tpch_nodes.gateway.log_path)
        fetch(conn, qualified(3))
        records.append(federated(tpch_nodes.gateway.log_path, offset))
    first, again = records
    assert again["timeline"]["estimates"] == 0
    assert again["dynamic_filters"] == first["dynamic_filters"] != []
    for record in records:
        timeline = record["timeline"]
        assert timeline["planned"] <= timeline["ready"] <= timeline["closed"]
        stages = {
            product: (f["requested_ms"], f["opened_ms"], f["ended_ms"])
            for f in record["fragments"]
            for product in f["products"]
        }
        for requested, opened, ended in stages.values():
            assert requested <= opened <= ended
        assert stages["customers.customer"][2] <= stages["orders.orders"][0]


# --------------------------------------------------------------------------- governance


@pytest.fixture(scope="module")
def demo_nodes(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("dynamic-demo")
    with running_mesh(demo_mesh, root, {"sales": 1, "crm": 1, "logistics": 1}) as running:
        yield running


def test_alice_sends_keys_of_her_visible_orders_only(
    demo_nodes: Mesh, gateway: RunningGateway, connections
):
    embedded = connections(gateway.uri, "bob")
    every_order = fetch(
        embedded, f"SELECT customer_id, region FROM sales.orders WHERE order_date = {DAY}"
    ).to_pylist()
    visible = {r["customer_id"] for r in every_order if r["region"] == "EU"}
    hidden = {r["customer_id"] for r in every_order if r["region"] != "EU"}
    assert visible and hidden and not visible & hidden

    begins = len(node_begins(demo_nodes, "crm", 0))
    offset = log_offset(demo_nodes.gateway.log_path)
    alice = connections(demo_nodes.gateway.uri, "alice")
    got = outcome(alice, ORDERS_TO_CUSTOMERS)
    assert got == outcome(connections(gateway.uri, "alice"), ORDERS_TO_CUSTOMERS)
    assert {row[0] for row in got[2]} == {repr(c) for c in visible}

    record = federated(demo_nodes.gateway.log_path, offset)
    assert record["dynamic_filters"] == [
        {
            "probe": "crm.customers",
            "column": "customer_id",
            "build": record["dynamic_filters"][0]["build"],
            "kind": "in",
            "keys": len(visible),
        }
    ]
    (begin,) = filtered_begins(node_begins(demo_nodes, "crm", begins))
    assert begin["user"] == "alice" and (begin["parameters"], begin["key_sets"]) == (0, 1)
    (crm,) = [f for f in record["fragments"] if f["domain"] == "crm"]
    # Every customer is visible to alice: a hidden order's key would have brought its
    # (non-EU) customer into the rows the crm node served.
    assert crm["complete"] and crm["rows"] == len(visible)


def test_keys_go_around_the_governed_probe_never_inside(
    demo_nodes: Mesh, gateway: RunningGateway, connections
):
    begins = len(node_begins(demo_nodes, "sales", 0))
    offset = log_offset(demo_nodes.gateway.log_path)
    got = outcome(connections(demo_nodes.gateway.uri, "alice"), CUSTOMERS_TO_ORDERS)
    assert got == outcome(connections(gateway.uri, "alice"), CUSTOMERS_TO_ORDERS)
    assert got[0] == "ok" and got[2]
    record = federated(demo_nodes.gateway.log_path, offset)
    assert [f["probe"] for f in record["dynamic_filters"]] == ["sales.orders"]

    (begin,) = filtered_begins(node_begins(demo_nodes, "sales", begins))
    tree = sqlglot.parse_one(begin["sql"], read="duckdb")
    (predicate,) = dynamic_predicates(tree)
    assert predicate.parent_select is tree, "the keys filter the governed fragment's output"
    inner = tree.args["from_"].this
    assert isinstance(inner, exp.Subquery)
    assert "region" in inner.sql("duckdb") and not dynamic_predicates(inner)
    assert json.dumps(begin).count("'EU'") == 1, "the row filter is applied once, inside"


# --------------------------------------------------------------------------- switches

#: a self-join of sales (grouped on the sales node) joined to a small build of customers
SELF_JOIN_TO_CUSTOMERS = (
    "SELECT c.region, count(*) AS n, sum(o2.amount) AS s FROM sales.orders o1 "
    "JOIN sales.orders o2 ON o2.order_id = o1.order_id + 1 JOIN crm.customers c "
    "ON c.customer_id = o1.customer_id WHERE c.customer_id <= 10 GROUP BY 1"
)


@pytest.fixture(scope="module")
def plain_nodes(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("dynamic-off")
    settings = {"dynamic_filters": False, "join_groups": False}
    with running_mesh(
        demo_mesh, root, {"sales": 1, "crm": 1, "logistics": 1}, nodes_settings=settings
    ) as running:
        yield running


def test_dynamic_filters_and_join_groups_can_be_switched_off(
    demo_nodes: Mesh, plain_nodes: Mesh, gateway: RunningGateway, connections
):
    """``[nodes] dynamic_filters`` and ``join_groups``: on (the default), the sales self-join
    is one fragment and the customers' keys go with it; off, each product moves on its own,
    unfiltered. The answer is the embedded gateway's either way."""
    expected = outcome(connections(gateway.uri, "alice"), SELF_JOIN_TO_CUSTOMERS)
    assert expected[0] == "ok" and expected[2]
    records = {}
    for name, nodes in (("on", demo_nodes), ("off", plain_nodes)):
        offset = log_offset(nodes.gateway.log_path)
        got = outcome(connections(nodes.gateway.uri, "alice"), SELF_JOIN_TO_CUSTOMERS)
        assert got == expected, name
        records[name] = federated(nodes.gateway.log_path, offset)
    on, off = records["on"], records["off"]
    assert [f["domain"] for f in on["fragments"]].count("sales") == 1
    assert [f["domain"] for f in off["fragments"]].count("sales") == 2
    assert [d["probe"] for d in on["dynamic_filters"]] == ["sales.orders"]
    assert off["dynamic_filters"] == []
    sales_rows = sum(f["rows"] for f in on["fragments"] if f["domain"] == "sales")
    assert sales_rows < sum(f["rows"] for f in off["fragments"] if f["domain"] == "sales")
