"""The executor seam: the router's choices from a config, and the Flight layer streaming
whatever the chosen executor yields (an in-memory executor, a real Flight client)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from gateway.catalog.state import MeshState
from gateway.config import NodesSettings, SparkSettings, load_config
from gateway.engine.streaming import PlannedQuery, StreamStats
from gateway.flightsql.server import MeshgateFlightServer
from gateway.flightsql.service import SqlService
from gateway.query.executors import (
    EmbeddedExecutor,
    FederatedExecutor,
    NodeExecutor,
    Placing,
    Router,
)
from gateway.security.auth import LoginGuard, TokenStore, UserDirectory
from gateway.security.principal import Principal
from gateway.spark.executor import SparkExecutor, spark_executor

FIXED = pa.table({"answer": pa.array([42, 43, 44], pa.int64()), "word": ["a", "b", "c"]})


class FixedExecutor:
    """Yields a fixed Arrow table, whatever the query."""

    name = "fixed"

    def __init__(self) -> None:
        self.opened: list[PlannedQuery] = []
        self.finished: list[tuple[int, str]] = []

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Callable[[StreamStats, str, str | None], None] | None = None,
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        self.opened.append(planned)
        return FIXED.schema, self._batches(on_finish)

    def _batches(self, on_finish) -> Iterator[pa.RecordBatch]:
        yield from FIXED.to_batches(max_chunksize=2)
        self.finished.append((FIXED.num_rows, "ok"))
        if on_finish is not None:
            on_finish(StreamStats(rows=FIXED.num_rows), "ok", None)


@pytest.fixture(scope="module")
def state(demo_mesh: Path) -> MeshState:
    return MeshState(demo_mesh, load_config(demo_mesh))


def bob(state: MeshState) -> Principal:
    settings = state.config.users["bob"]
    return Principal("bob", tuple(settings.roles), dict(settings.attributes))


def test_router_chooses_embedded_node_or_federated_from_the_config(state: MeshState):
    service = SqlService(state)
    nodes = state.config.nodes.model_copy(
        update={"domains": {"sales": ["grpc://127.0.0.1:1"]}, "ticket_key": "11" * 32}
    )
    router = Router.from_config(nodes, service.planner.access_of, service.planner.with_ast)
    embedded_only = Router.from_config(
        state.config.nodes.model_copy(update={"domains": {}}),
        service.planner.access_of,
        service.planner.with_ast,
    )

    def chosen(r: Router, sql: str):
        return r.executor_for(service.planner.plan(bob(state), sql))

    one_node = chosen(router, "SELECT order_id FROM sales.orders")
    assert isinstance(one_node, NodeExecutor) and one_node.node == "sales"
    assert isinstance(one_node, Placing)
    spanning = "SELECT o.order_id FROM sales.orders o JOIN crm.customers c USING (customer_id)"
    assert isinstance(chosen(router, spanning), FederatedExecutor)
    assert isinstance(chosen(router, "SELECT customer_id FROM crm.customers"), EmbeddedExecutor)
    explain = "EXPLAIN SELECT order_id FROM sales.orders"
    assert isinstance(chosen(router, explain), EmbeddedExecutor)
    for sql in ("SELECT order_id FROM sales.orders", spanning):
        assert isinstance(chosen(embedded_only, sql), EmbeddedExecutor)
    assert embedded_only.nodes is None and embedded_only.relay is None
    assert router.nodes is not None and router.nodes.serves("sales")
    assert not isinstance(embedded_only.embedded, Placing)


def test_router_in_mesh_mode_with_spark_sends_what_spark_takes_to_spark(state: MeshState):
    """Both configured: a cross-domain query goes to Spark when its route takes it (its
    DuckDB-file product then comes from the node, as EXPLAIN says), else it is federated.
    Routing reads no data: neither Spark nor the node address is ever called here."""
    service = SqlService(state)
    nodes = state.config.nodes.model_copy(
        update={"domains": {"sales": ["grpc://127.0.0.1:1"]}, "ticket_key": "11" * 32}
    )

    def with_spark(settings: NodesSettings, route: str) -> Router:
        spark = SparkSettings(remote="sc://localhost:1/;token=unused", route=route)
        return Router.from_config(
            settings,
            service.planner.access_of,
            service.planner.with_ast,
            lambda directory: spark_executor(spark, service.planner.plan_for_spark, directory),
        )

    always, never = with_spark(nodes, "always"), with_spark(nodes, "never")
    spanning = service.planner.plan(
        bob(state), "SELECT o.order_id FROM sales.orders o JOIN crm.customers c USING (customer_id)"
    )
    parquet = service.planner.plan(bob(state), "SELECT customer_id FROM crm.customers")
    assert isinstance(always.executor_for(spanning), SparkExecutor)
    assert always.describe(spanning) == (
        'spark: [engines.spark] route = "always"; '
        "sales.orders comes from domain sales's node as a governed fragment"
    )
    assert always.describe(parquet) == 'spark: [engines.spark] route = "always"'
    assert isinstance(never.executor_for(spanning), FederatedExecutor)
    assert never.describe(spanning) == (
        "duckdb (federated: fragments from the nodes, joined in the gateway): "
        '[engines.spark] route = "never"'
    )
    embedded = with_spark(state.config.nodes.model_copy(update={"domains": {}}), "always")
    assert isinstance(embedded.executor_for(spanning), SparkExecutor)
    assert embedded.describe(spanning) == 'spark: [engines.spark] route = "always"'


def test_flight_streams_whatever_the_chosen_executor_yields(state: MeshState):
    fixed = FixedExecutor()
    service = SqlService(state, router=Router(fixed))
    server = MeshgateFlightServer(
        "grpc://127.0.0.1:0",
        service,
        UserDirectory(state.config.users),
        TokenStore(60),
        LoginGuard(5, 60),
    )
    try:
        client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("bob", "bob")])
        descriptor = flight.FlightDescriptor.for_command("SELECT order_id FROM sales.orders")
        info = client.get_flight_info(descriptor, options)
        assert len(info.endpoints) == 1 and not info.endpoints[0].locations
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        client.close()
    finally:
        server.shutdown()
    assert table.equals(FIXED)
    assert [p.products for p in fixed.opened] == [("sales.orders",)]
    assert fixed.finished == [(3, "ok")]
