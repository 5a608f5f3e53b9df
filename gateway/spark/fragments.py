"""Governed fragments for Spark: the rows of a product Spark cannot read in place.

A fragment is the product's secure subquery (the user's visible columns, masks and row
filter, in DuckDB SQL), run where the product's data lives: in mesh mode, by the node of
the product's domain, to which the gateway sends it in a sealed ticket as it sends a
federated query's fragments (``gateway.mesh.federation``); otherwise by the gateway's own
DuckDB. Either way at most ``max_fragment_bytes`` of it is held for Spark: past that the
query fails with an error naming the product to publish as Parquet.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from gateway.catalog.catalog import Product
from gateway.engine.streaming import PlannedQuery, stream_sql
from gateway.errors import QueryFailed, ResourceExhausted, first_line
from gateway.mesh.federation import NodeDirectory
from gateway.mesh.fragments import Fragment
from gateway.mesh.tickets import decisions_of
from gateway.planning.secure import secure_subquery

log = structlog.get_logger("meshgate.spark")


class FragmentTooBig(ResourceExhausted):
    """A product's governed fragment is bigger than ``max_fragment_bytes``."""

    def __init__(self, product: str, max_bytes: int) -> None:
        super().__init__(
            f"{product} is too big to send to Spark as a fragment (over max_fragment_bytes = "
            f"{max_bytes:,}); publish it as Parquet so that Spark reads it in place"
        )


class Stop:
    """One query's stop (cancel, time limit, failure): set once, it cuts every fragment
    stream still being read, wherever that read waits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._cuts: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        with self._lock:
            self.event.set()
            cuts, self._cuts = self._cuts, []
        for cut in cuts:
            cut()

    def on_stop(self, cut: Callable[[], None]) -> None:
        """Call ``cut`` when the query stops (now, if it already has)."""
        with self._lock:
            if not self.event.is_set():
                self._cuts.append(cut)
                return
        cut()


class SparkFragments:
    """Computes the governed fragments of one gateway's Spark queries; ``nodes``: the
    domain nodes in mesh mode."""

    def __init__(self, max_bytes: int, nodes: NodeDirectory | None = None) -> None:
        self.max_bytes = max_bytes
        self.nodes = nodes

    def from_node(self, product: Product) -> bool:
        """Whether ``product``'s fragment comes from its domain's node (mesh mode)."""
        return self.nodes is not None and self.nodes.serves(product.domain)

    def table(
        self,
        planned: PlannedQuery,
        product: Product,
        is_cancelled: Callable[[], bool],
        stop: Stop,
    ) -> pa.Table:
        """``product``'s governed rows for ``planned``'s user, whole (for upload to Spark)."""
        sql = secure_subquery(
            product.domain,
            product.name,
            planned.query.accesses[product.key],
            product.column_types,
        ).sql("duckdb")
        if self.from_node(product):
            return self._from_node(planned, product, sql, stop)
        engine = planned.catalog.engine
        schema = engine.result_schema(sql)
        batches = stream_sql(
            engine,
            sql,
            (),
            schema,
            lambda: is_cancelled() or stop.is_set(),
            user=planned.principal.user,
            products=[product.key],
            fragment_for="spark",
        )
        return _bounded(product.key, schema, batches, self.max_bytes)

    def _from_node(self, planned: PlannedQuery, product: Product, sql: str, stop: Stop) -> pa.Table:
        """The fragment run by the node of ``product``'s domain (a sealed ticket: the node
        checks the user's policy decision again), read as it streams."""
        assert self.nodes is not None
        fragment = Fragment(f"spark:{product.key}", product.domain, sql, (product.key,))
        decisions = decisions_of(planned.query.accesses, (product.key,))
        try:
            stream = self.nodes.open_stream(fragment, planned.principal, decisions)
        except flight.FlightUnauthenticatedError as exc:  # the node refused the ticket
            reason = re.split(r"\. (?:Detail|gRPC client debug context)", first_line(exc))[0]
            raise QueryFailed(
                f"domain {product.domain}'s node refused {product.key}'s fragment for Spark "
                f"({reason})"
            ) from None
        stop.on_stop(stream.stop)
        try:
            return _bounded(product.key, stream.schema, stream.batches(), self.max_bytes)
        finally:
            stream.stop()  # nothing left to cut once it was read to its end
            log.info(
                "spark_fragment",
                user=planned.principal.user,
                product=product.key,
                node=stream.location,
                rows=stream.rows,
                bytes=stream.bytes,
                complete=stream.complete,
            )


def _bounded(
    product: str,
    schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
    max_bytes: int,
) -> pa.Table:
    """``batches`` as one table, or FragmentTooBig as soon as they pass ``max_bytes`` (a
    generator is closed either way: its stream ends now)."""
    held: list[pa.RecordBatch] = []
    size = 0
    try:
        for batch in batches:
            size += batch.nbytes
            if size > max_bytes:
                raise FragmentTooBig(product, max_bytes)
            held.append(batch)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return pa.Table.from_batches(held, schema=schema)
