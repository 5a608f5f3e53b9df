"""Spark in mesh mode: a cross-domain query that Spark runs gets its DuckDB-file product
from the domain's node as a governed fragment, and reads its Parquet product in place.

One mesh for the module (``support.mesh.running_mesh``): sales and crm nodes, and a
gateway with ``[engines.spark] route = "always"`` on the session's Spark Connect server.
The gateway validates contracts against the data at load time, so it does open its copy
of ``orders.duckdb`` (README, "Mesh mode"); what it must not do is compute the fragment
from it. So it runs on a copy of its own in which ``sales.orders`` holds other rows
(regions EU and US swapped, amounts shifted): an answer equal to the oracle's, which reads
the pristine demo files, can only have come from the node's copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import adbc_driver_manager
import duckdb
import pyarrow as pa
import pytest
from support.clients import adbc_connect, message
from support.logs import json_lines_since, log_offset, log_records
from support.mesh import Mesh, running_mesh
from support.oracle import ORDERS_DB, Oracle
from support.polling import poll_for
from support.servers import RunningGateway, configure, copy_mesh, start_gateway, stop_gateway
from support.tables import assert_tables_equal

from benchmarks.spark_server import SparkServer

pytestmark = [pytest.mark.spark, pytest.mark.mesh, pytest.mark.slow]

#: sales.orders (a DuckDB file) joined with crm.customers (Parquet): alice sees EU orders
#: only, customers' emails partly masked
JOIN = (
    "SELECT o.order_id, o.region, o.amount, c.name, c.email FROM sales.orders o "
    "JOIN crm.customers c ON o.customer_id = c.customer_id ORDER BY o.order_id"
)
NODE_FRAGMENT = "sales.orders comes from domain sales's node as a governed fragment"


def _other_orders(mesh: Path) -> None:
    """The gateway's copy of sales.orders: the same columns and types, other rows."""
    con = duckdb.connect(str(mesh / ORDERS_DB))
    try:
        con.execute(
            "UPDATE orders SET amount = amount + 1, region = CASE region WHEN 'EU' THEN 'US' "
            "WHEN 'US' THEN 'EU' ELSE region END"
        )
    finally:
        con.close()


@pytest.fixture(scope="module")
def mesh(
    demo_mesh: Path, spark_server: SparkServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("spark-mesh-mode")
    source = copy_mesh(demo_mesh, root / "source")
    configure(source, "engines.spark", remote=spark_server.remote, route="always")
    with running_mesh(
        source, root, {"sales": 1, "crm": 1}, gateway_prepare=_other_orders
    ) as running:
        yield running


def _gateway(mesh: Mesh) -> RunningGateway:
    assert mesh.gateway is not None
    return mesh.gateway


def _fetch(uri: str, user: str, sql: str) -> pa.Table:
    with adbc_connect(uri, user) as conn, conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetch_arrow_table()


def test_the_gateway_copy_of_orders_differs(mesh: Mesh, oracle: Oracle) -> None:
    """Else the test below would prove nothing of where the rows came from."""
    path = _gateway(mesh).mesh_dir / ORDERS_DB
    with duckdb.connect(str(path), read_only=True) as con:
        eu = {
            r[0] for r in con.execute("SELECT order_id FROM orders WHERE region = 'EU'").fetchall()
        }
    assert eu and eu.isdisjoint(oracle.eu_order_ids)


def test_a_cross_domain_join_on_spark_reads_orders_from_the_sales_node(
    mesh: Mesh, oracle: Oracle, gateway: RunningGateway
) -> None:
    spark_gateway = _gateway(mesh)
    audit = mesh.node_audit_path("sales")
    audit_from, log_from = log_offset(audit), log_offset(spark_gateway.log_path)
    before = {domain: mesh.stats(domain)["tickets"] for domain in ("sales", "crm")}

    table = _fetch(spark_gateway.uri, "alice", JOIN)

    assert_tables_equal(table, oracle.run("alice", JOIN), "Spark in mesh mode vs the oracle")
    assert_tables_equal(table, _fetch(gateway.uri, "alice", JOIN), "vs the embedded route")
    assert set(table.column("region").to_pylist()) == {"EU"}

    def since() -> list[dict]:
        return json_lines_since(spark_gateway.log_path, log_from)

    # the query's log line is written as its stream ends: read the log once it is there
    records = poll_for(lambda: [r for r in since() if r.get("event") == "query"] and since(), 10)
    assert isinstance(records, list)
    queries = [r for r in records if r.get("event") == "query"]
    assert [(r.get("engine"), r.get("user"), r.get("outcome")) for r in queries] == [
        ("spark", "alice", "ok")
    ]
    # the gateway's DuckDB computed no fragment; the sales node served it, whole
    assert not [r for r in records if r.get("fragment_for")]
    fragments = [r for r in records if r.get("event") == "spark_fragment"]
    assert [(f["product"], f["node"], f["complete"]) for f in fragments] == [
        ("sales.orders", mesh.node("sales").uri, True)
    ]
    assert fragments[0]["rows"] == oracle.orders_by_region["EU"]
    served = [r for r in json_lines_since(audit, audit_from) if r.get("event") == "ticket_begin"]
    assert [(r["user"], r["products"]) for r in served] == [("alice", ["sales.orders"])]
    # crm.customers is Parquet: Spark read it in place, its node served nothing
    after = {domain: mesh.stats(domain)["tickets"] for domain in ("sales", "crm")}
    assert after == {"sales": before["sales"] + 1, "crm": before["crm"]}


def test_explain_names_spark_and_the_node_fragment(mesh: Mesh) -> None:
    explained = _fetch(_gateway(mesh).uri, "alice", f"EXPLAIN {JOIN}").to_pylist()
    engine = [r["explain_value"] for r in explained if r["explain_key"] == "engine"]
    assert engine == [f'spark: [engines.spark] route = "always"; {NODE_FRAGMENT}']
    parquet_only = _fetch(_gateway(mesh).uri, "alice", "EXPLAIN SELECT name FROM crm.customers")
    engine = [r["explain_value"] for r in parquet_only.to_pylist() if r["explain_key"] == "engine"]
    assert engine == ['spark: [engines.spark] route = "always"']


def test_a_node_fragment_past_max_fragment_bytes_names_the_product(
    mesh: Mesh, tmp_path: Path
) -> None:
    """A second gateway on the same nodes, with a small fragment bound: the node starts
    serving, the gateway stops reading at the bound and says what to publish as Parquet."""
    small = copy_mesh(mesh.mesh_dir, tmp_path / "mesh")
    configure(small, "engines.spark", max_fragment_bytes=1000)
    audit = mesh.node_audit_path("sales")
    audit_from = log_offset(audit)
    bounded = start_gateway(small, tmp_path / "gateway.log")
    try:
        with pytest.raises(adbc_driver_manager.Error) as failed:
            _fetch(bounded.uri, "bob", JOIN)
    finally:
        stop_gateway(bounded)
    text = message(failed.value)
    assert "sales.orders is too big to send to Spark as a fragment" in text
    assert "max_fragment_bytes = 1,000" in text and "publish it as Parquet" in text
    served = [r for r in json_lines_since(audit, audit_from) if r.get("event") == "ticket_begin"]
    assert [(r["user"], r["products"]) for r in served] == [("bob", ["sales.orders"])]
    stopped = log_records(bounded.log(), "spark_fragment")
    assert [(r["product"], r["complete"]) for r in stopped] == [("sales.orders", False)]
