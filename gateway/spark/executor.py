"""The Spark executor: governed queries run on Apache Spark through Spark Connect.

Governance happens first, exactly as for DuckDB: the statement is planned again for
Spark (the same rules; masks and the security barrier built for Spark), its parameters
inlined as literals, checked for semantics Spark shares with DuckDB, and written as Spark
SQL. Products that are not Parquet travel to Spark as governed Arrow fragments. Results
stream back batch by batch under the same limits, cancellation and timeout as DuckDB's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
import structlog

from gateway.catalog.catalog import Product
from gateway.config import SparkSettings
from gateway.engine.streaming import (
    PlannedQuery,
    StreamStats,
    split_by_bytes,
    stop_message,
    stream_sql,
)
from gateway.errors import MeshgateError, QueryFailed, QueryRefused, ResourceExhausted
from gateway.mesh.federation import inline_parameters
from gateway.planning.query import Query, TargetSource
from gateway.planning.secure import secure_subquery
from gateway.planning.spark_sql import spark_sql
from gateway.query.executors import Finish, Opened
from gateway.spark.connect import SparkConnect
from gateway.spark.sources import fragment_view, source_bytes, spark_source

log = structlog.get_logger("meshgate.spark")

PlanFor = Callable[[PlannedQuery, Mapping[str, TargetSource]], Query]
"""``planned`` planned again for Spark, reading each product from its source (its syntax
tree governed for Spark, no SQL text yet)."""

ENGINE_HINT = "engine"  # the contract's customProperties key: ``engine: spark``


@dataclass(frozen=True)
class Route:
    """Which engine runs a query, and why (for EXPLAIN and the log)."""

    engine: str  # "spark" or "duckdb"
    reason: str


def choose_route(settings: SparkSettings, products: tuple[Product, ...]) -> Route:
    """``route = never | always``, a contract's engine hint, or the size estimate."""
    if settings.route != "large":
        engine = "spark" if settings.route == "always" else "duckdb"
        return Route(engine, f'[engines.spark] route = "{settings.route}"')
    hinted = [p.key for p in products if p.contract.engine_hint == "spark"]
    if hinted:
        return Route("spark", f"the contract of {', '.join(hinted)} asks for engine spark")
    size = sum(source_bytes(p) for p in products)
    if size > settings.large_bytes:
        return Route(
            "spark",
            f"its products hold {size:,} bytes, over large_bytes = {settings.large_bytes:,}",
        )
    return Route("duckdb", f"its products hold {size:,} bytes, within large_bytes")


class SparkExecutor:
    """Runs planned queries on Spark. With ``route = "large"``, what Spark cannot run
    exactly, and (``fallback = true``) what finds Spark down, stays on DuckDB."""

    name = "spark"

    def __init__(self, settings: SparkSettings, spark: SparkConnect, plan_for: PlanFor) -> None:
        self.settings = settings
        self.spark = spark
        self._plan_for = plan_for

    def route(self, planned: PlannedQuery) -> Route:
        """Where ``planned`` runs (see ``choose_route``), kept on DuckDB when the route is
        ``large`` and Spark cannot run it exactly or (with ``fallback``) is unreachable."""
        route = choose_route(self.settings, planned.query.products)
        if route.engine != "spark" or self.settings.route != "large":
            return route
        try:
            self.spark_sql(planned)
        except QueryRefused as exc:
            why = f"Spark cannot run it exactly: {exc.client_message}"
        else:
            if not self.settings.fallback or self.spark.reachable():
                return route
            why = f"Spark at {self.spark.endpoint} is unreachable (fallback = true)"
        log.warning("spark_fallback", user=planned.principal.user, reason=why)
        return Route("duckdb", f"{route.reason}, but {why}")

    def health(self) -> str:
        state = "reachable" if self.spark.reachable() else "unreachable"
        return f"{state} at {self.spark.endpoint}"

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Finish | None = None,
    ) -> Opened:
        """Plan for Spark now (a refusal surfaces before any row); run lazily."""
        sql = self.spark_sql(planned)
        return planned.schema, self._batches(planned, sql, is_cancelled, on_finish)

    def spark_sql(self, planned: PlannedQuery) -> str:
        """The Spark SQL ``planned`` runs as (QueryRefused when Spark cannot run it exactly)."""
        sources = {p.key: spark_source(p) for p in planned.query.products}
        query = self._plan_for(planned, sources)
        assert query.ast is not None  # the planning keeps its tree
        return spark_sql(inline_parameters(query.ast, planned.parameters))

    def _fragments(
        self, planned: PlannedQuery, is_cancelled: Callable[[], bool]
    ) -> dict[str, pa.Table]:
        """The governed rows of every product Spark cannot read in place."""
        views: dict[str, pa.Table] = {}
        for product in planned.query.products:
            if not spark_source(product).governed:
                continue
            select = secure_subquery(
                product.domain,
                product.name,
                planned.query.accesses[product.key],
                product.column_types,
            )
            views[fragment_view(product)] = self._fragment(
                planned, product, select.sql("duckdb"), is_cancelled
            )
        return views

    def _fragment(
        self, planned: PlannedQuery, product: Product, sql: str, is_cancelled: Callable[[], bool]
    ) -> pa.Table:
        engine = planned.catalog.engine
        batches: list[pa.RecordBatch] = []
        size = 0
        schema = engine.result_schema(sql)
        for batch in stream_sql(
            engine,
            sql,
            (),
            schema,
            is_cancelled,
            user=planned.principal.user,
            products=[product.key],
        ):
            size += batch.nbytes
            if size > self.settings.max_fragment_bytes:
                raise ResourceExhausted(
                    f"{product.key} is too big to send to Spark as a fragment (over "
                    f"max_fragment_bytes = {self.settings.max_fragment_bytes:,}); publish it as "
                    "Parquet so that Spark reads it in place"
                )
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=schema)

    def _batches(
        self,
        planned: PlannedQuery,
        sql: str,
        is_cancelled: Callable[[], bool],
        finish: Finish | None,
    ) -> Iterator[pa.RecordBatch]:
        settings = planned.catalog.engine.settings
        watchdog = planned.catalog.engine.watchdog
        session, operation = str(uuid.uuid4()), str(uuid.uuid4())
        stats, outcome, error = StreamStats(operation=operation), "ok", None

        def interrupt() -> None:  # an RPC: never on the watchdog's or the client's thread
            threading.Thread(
                target=self.spark.interrupt,
                args=(session, operation),
                name="meshgate-spark-interrupt",
                daemon=True,
            ).start()

        token = watchdog.watch_call(
            interrupt,
            is_cancelled,
            settings.query_timeout_seconds,
        )
        try:
            views = self._fragments(planned, is_cancelled)
            for batch in self.spark.run(sql, session, operation, views):
                for piece in split_by_bytes(
                    _conformed(batch, planned.schema), settings.batch_bytes
                ):
                    stats.rows += piece.num_rows
                    stats.bytes += piece.nbytes
                    if (
                        stats.rows > settings.max_result_rows
                        or stats.bytes > settings.max_result_bytes
                    ):
                        raise ResourceExhausted(
                            f"the result exceeds the limit of {settings.max_result_rows:,} rows or "
                            f"{settings.max_result_bytes:,} bytes; add filters, aggregate or LIMIT"
                        )
                    yield piece
            if (stopped_by := watchdog.release(token)) is not None:
                raise QueryFailed(stop_message(stopped_by, settings.query_timeout_seconds))
        except GeneratorExit:
            outcome = "disconnected"
            interrupt()
            raise
        except MeshgateError as exc:
            stopped_by = watchdog.release(token)
            outcome = stopped_by or "error"
            if stopped_by is not None:
                error = stop_message(stopped_by, settings.query_timeout_seconds)
                raise QueryFailed(error) from None
            error = exc.client_message
            if isinstance(exc, ResourceExhausted):
                interrupt()
            raise
        finally:
            watchdog.release(token)
            if finish is not None:
                finish(stats, outcome, error)
            log.info(
                "query",
                engine="spark",
                spark_operation=operation,
                user=planned.principal.user,
                products=list(planned.products),
                rows=stats.rows,
                bytes=stats.bytes,
                duration_ms=round((time.perf_counter() - stats.started) * 1000, 2),
                outcome=outcome,
            )


def _conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Spark's batch as the planned schema: columns by position, cast to the planned types
    (Spark names and sizes some results differently; the values are the same)."""
    if batch.schema == schema:
        return batch
    try:
        columns = [
            column if column.type == field.type else column.cast(field.type)
            for column, field in zip(batch.columns, schema, strict=True)
        ]
    except (pa.ArrowException, ValueError) as exc:
        raise QueryFailed(
            "Spark returned a result that does not fit the planned result types; the query "
            "was stopped"
        ) from exc
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def spark_executor(settings: SparkSettings, plan_for: PlanFor) -> SparkExecutor:
    """The executor for ``[engines.spark]`` (gRPC connects on first use)."""
    return SparkExecutor(
        settings, SparkConnect(settings.remote, settings.connect_timeout_seconds), plan_for
    )
