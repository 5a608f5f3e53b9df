"""The Spark executor: governed queries run on Apache Spark through Spark Connect.

Governance happens first, exactly as for DuckDB: the statement is planned again for
Spark (the same rules; masks and the security barrier built for Spark), its parameters
inlined as literals, checked for semantics Spark shares with DuckDB, and written as Spark
SQL. Products that are not Parquet travel to Spark as governed Arrow fragments, computed
where their data lives (``gateway.spark.fragments``: in mesh mode, by the domain's node).
Results stream back batch by batch under the same limits, cancellation and timeout as
DuckDB's.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
import structlog

from gateway.catalog.catalog import Product
from gateway.config import SparkSettings
from gateway.engine.streaming import (
    PlannedQuery,
    StreamStats,
    closed_outcome,
    count_within_limits,
    split_by_bytes,
    stop_message,
)
from gateway.errors import MeshgateError, QueryFailed, QueryRefused
from gateway.mesh.federation import NodeDirectory, inline_parameters
from gateway.planning.query import Query, TargetSource
from gateway.planning.spark_sql import spark_sql
from gateway.query.executors import Finish, Opened
from gateway.spark.connect import SparkConnect
from gateway.spark.fragments import SparkFragments, Stop
from gateway.spark.sources import source_bytes, spark_source

log = structlog.get_logger("meshgate.spark")

PlanFor = Callable[[PlannedQuery, Mapping[str, TargetSource]], Query]
"""``planned`` planned again for Spark, reading each product from its source (its syntax
tree governed for Spark, no SQL text yet)."""

#: how long a Spark reachability probe is believed (health, fallback decisions)
_REACHABILITY_TTL_SECONDS = 5.0


@dataclass(frozen=True)
class Route:
    """Which engine runs a query, and why (for EXPLAIN and the log)."""

    engine: str  # "spark" or "duckdb"
    reason: str


def choose_route(
    settings: SparkSettings, products: tuple[Product, ...], bytes_read: float | None = None
) -> Route:
    """``route = never | always``, a contract's engine hint, or the size estimate:
    ``bytes_read``, what the governed plan is estimated to read after pruning
    (``gateway.engine.plan_cost``), else the products' bytes on disk. The reasons never
    give sizes: a user may not learn how big a product is beyond their view."""
    if settings.route != "large":
        engine = "spark" if settings.route == "always" else "duckdb"
        return Route(engine, f'[engines.spark] route = "{settings.route}"')
    for engine in ("duckdb", "spark"):
        hinted = [p.key for p in products if p.contract.engine_hint == engine]
        if hinted:
            return Route(engine, f"the contract of {', '.join(hinted)} asks for engine {engine}")
    if bytes_read is not None:
        if bytes_read > settings.large_bytes:
            return Route("spark", "it is estimated to read more than large_bytes")
        return Route("duckdb", "it is estimated to read no more than large_bytes")
    if sum(source_bytes(p) for p in products) > settings.large_bytes:
        return Route("spark", "its products hold more than large_bytes")
    return Route("duckdb", "its products hold no more than large_bytes")


@dataclass(frozen=True)
class _Decision:
    """A route, and for Spark the Spark SQL and the sources it reads (made once)."""

    route: Route
    sql: str | None = None
    sources: Mapping[str, TargetSource] | None = None


class SparkExecutor:
    """Runs planned queries on Spark. With ``route = "large"``, what Spark cannot run
    exactly, a DuckDB-file product too big for a fragment, and (``fallback = true``) what
    finds Spark down stay on DuckDB."""

    name = "spark"

    def __init__(
        self,
        settings: SparkSettings,
        spark: SparkConnect,
        plan_for: PlanFor,
        fragments: SparkFragments | None = None,
    ) -> None:
        """``fragments``: where governed fragments are computed (default: the gateway)."""
        self.settings = settings
        self.spark = spark
        self._plan_for = plan_for
        self.fragments = fragments or SparkFragments(settings.max_fragment_bytes)
        self._decisions: dict[int, tuple[weakref.ref[PlannedQuery], _Decision]] = {}
        self._lock = threading.Lock()
        self._reachable: tuple[float, bool] = (-_REACHABILITY_TTL_SECONDS, False)

    def route(self, planned: PlannedQuery) -> Route:
        """Where ``planned`` runs (decided once per planned query, see ``_decide``)."""
        return self._decision(planned).route

    def _decision(self, planned: PlannedQuery) -> _Decision:
        key = id(planned)
        with self._lock:
            known = self._decisions.get(key)
        if known is not None and known[0]() is planned:
            return known[1]
        decision = self._decide(planned)
        with self._lock:
            self._decisions[key] = (
                weakref.ref(planned, lambda _: self._forget(key)),
                decision,
            )
        return decision

    def _forget(self, key: int) -> None:
        with self._lock:
            self._decisions.pop(key, None)

    def _decide(self, planned: PlannedQuery) -> _Decision:
        cost = planned.cost
        route = choose_route(
            self.settings, planned.query.products, cost.bytes_read if cost else None
        )
        if route.engine != "spark":
            return _Decision(route)
        try:
            sources = self._sources(planned)
            sql = self._spark_sql(planned, sources)
        except QueryRefused as exc:
            if self.settings.route != "large":
                raise
            return self._stays(planned, route, f"Spark cannot run it exactly: {exc.client_message}")
        if self.settings.route == "large":
            too_big = [
                p.key
                for p in planned.query.products
                if sources[p.key].governed and source_bytes(p) > self.settings.max_fragment_bytes
            ]
            if too_big:
                why = f"{', '.join(too_big)} is too big for a fragment (publish it as Parquet)"
                return self._stays(planned, route, why)
            if self.settings.fallback and not self.reachable():
                return self._stays(planned, route, "Spark is unreachable (fallback = true)")
        return _Decision(route, sql, sources)

    def _stays(self, planned: PlannedQuery, route: Route, why: str) -> _Decision:
        log.warning("spark_fallback", user=planned.principal.user, reason=why)
        return _Decision(Route("duckdb", f"{route.reason}, but {why}"))

    def reachable(self) -> bool:
        """Whether Spark answered a probe (probed at most every few seconds)."""
        checked, answer = self._reachable
        if time.monotonic() - checked < _REACHABILITY_TTL_SECONDS:
            return answer
        answer = self.spark.reachable()
        self._reachable = (time.monotonic(), answer)
        return answer

    def health(self, operator: bool = False) -> str:
        """ "reachable" or "unreachable"; the operator also sees where."""
        state = "reachable" if self.reachable() else "unreachable"
        return f"{state} at {self.spark.endpoint}" if operator else state

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Finish | None = None,
    ) -> Opened:
        """Plan for Spark now (a refusal surfaces before any row); run lazily."""
        decision = self._decision(planned)
        if decision.sql is None or decision.sources is None:  # routed here all the same
            sources = self._sources(planned)
            decision = _Decision(decision.route, self._spark_sql(planned, sources), sources)
        assert decision.sql is not None and decision.sources is not None
        return planned.schema, self._batches(
            planned, decision.sql, decision.sources, is_cancelled, on_finish
        )

    def reads(self, planned: PlannedQuery) -> str | None:
        """Which of ``planned``'s products reach Spark from their domain's node (for
        EXPLAIN in mesh mode), or None."""
        from_nodes = [
            p
            for p in planned.query.products
            if self.fragments.from_node(p) and spark_source(p, "").governed
        ]
        if not from_nodes:
            return None
        return "; ".join(
            f"{p.key} comes from domain {p.domain}'s node as a governed fragment"
            for p in from_nodes
        )

    def spark_sql(self, planned: PlannedQuery) -> str:
        """The Spark SQL ``planned`` runs as (QueryRefused when Spark cannot run it exactly)."""
        return self._spark_sql(planned, self._sources(planned))

    def _sources(self, planned: PlannedQuery) -> dict[str, TargetSource]:
        suffix = uuid.uuid4().hex[:12]  # fragment views never collide with a user's names
        return {p.key: spark_source(p, suffix) for p in planned.query.products}

    def _spark_sql(self, planned: PlannedQuery, sources: Mapping[str, TargetSource]) -> str:
        query = self._plan_for(planned, sources)
        assert query.ast is not None  # the planning keeps its tree
        return spark_sql(inline_parameters(query.ast, planned.parameters))

    def _fragments(
        self,
        planned: PlannedQuery,
        sources: Mapping[str, TargetSource],
        is_cancelled: Callable[[], bool],
        stop: Stop,
    ) -> dict[str, pa.Table]:
        """The governed rows of every product Spark cannot read in place."""
        return {
            sources[p.key].table.name: self.fragments.table(planned, p, is_cancelled, stop)
            for p in planned.query.products
            if sources[p.key].governed
        }

    def _batches(
        self,
        planned: PlannedQuery,
        sql: str,
        sources: Mapping[str, TargetSource],
        is_cancelled: Callable[[], bool],
        finish: Finish | None,
    ) -> Iterator[pa.RecordBatch]:
        settings = planned.catalog.engine.settings
        watchdog = planned.catalog.engine.watchdog
        session, operation = str(uuid.uuid4()), str(uuid.uuid4())
        stats, outcome, error = StreamStats(operation=operation), "ok", None
        stop = Stop()

        def interrupt() -> None:  # an RPC: never on the watchdog's or the client's thread
            stop.set()  # cuts fragment streams; a stop before Spark starts the operation
            threading.Thread(
                target=self.spark.interrupt,
                args=(session, operation),
                name="meshgate-spark-interrupt",
                daemon=True,
            ).start()

        limit = planned.time_limit(settings.query_timeout_seconds)
        token = watchdog.watch_call(interrupt, is_cancelled, limit)
        try:
            fragments = self._fragments(planned, sources, is_cancelled, stop)
            batches = self.spark.run(sql, session, operation, fragments, stop.event)
            del fragments  # ``run`` drops them once uploaded: hold no other reference
            for batch in batches:
                if stop.is_set():
                    break
                for piece in split_by_bytes(
                    _conformed(batch, planned.schema), settings.batch_bytes
                ):
                    count_within_limits(stats, piece, settings)
                    yield piece
            if (stopped_by := watchdog.release(token)) is not None:
                outcome = stopped_by
                error = stop_message(stopped_by, limit)
                raise QueryFailed(error)
        except GeneratorExit:
            outcome, error = closed_outcome(watchdog, limit)
            interrupt()
            raise
        except MeshgateError as exc:
            if outcome != "ok":  # stopped by the watchdog: recorded just above
                raise
            stopped_by = watchdog.release(token)
            if stopped_by is not None:
                outcome, error = (
                    stopped_by,
                    stop_message(stopped_by, limit),
                )
                raise QueryFailed(error) from None
            outcome, error = "error", exc.client_message
            interrupt()
            raise
        except Exception:
            outcome, error = "error", "internal error on the Spark route"
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
    """Spark's batch as the planned schema: columns by position, and where Spark sizes a
    type otherwise (an INT count, a narrower DECIMAL, a UTC timestamp), cast to the
    planned type when every value survives; any other difference stops the query rather
    than convert data silently."""
    if batch.schema == schema:
        return batch
    columns = []
    for column, target in zip(batch.columns, schema, strict=True):
        if column.type != target.type:
            if not _kept_by_cast(column.type, target.type):
                raise QueryFailed(
                    f"Spark returned column {target.name!r} as {column.type}, planned as "
                    f"{target.type}; the query was stopped"
                )
            try:
                column = column.cast(target.type)  # safe: fails on overflow or lost digits
            except (pa.ArrowException, ValueError) as exc:
                raise QueryFailed(
                    f"Spark returned values of column {target.name!r} that do not fit "
                    f"{target.type}; the query was stopped"
                ) from exc
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


_FAMILIES = (
    lambda t: pa.types.is_integer(t) or pa.types.is_decimal(t),
    pa.types.is_floating,
    lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    pa.types.is_timestamp,
    pa.types.is_date,
    pa.types.is_boolean,
)


def _kept_by_cast(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether both types hold the same kind of value (a safe cast then checks each one)."""
    if pa.types.is_decimal(source) and pa.types.is_integer(target):
        return False  # digits after the point would go
    return any(family(source) and family(target) for family in _FAMILIES)


def spark_executor(
    settings: SparkSettings, plan_for: PlanFor, nodes: NodeDirectory | None = None
) -> SparkExecutor:
    """The executor for ``[engines.spark]`` (gRPC connects on first use); ``nodes``: the
    domain nodes in mesh mode, which compute their products' fragments."""
    return SparkExecutor(
        settings,
        SparkConnect(settings.remote, settings.connect_timeout_seconds),
        plan_for,
        SparkFragments(settings.max_fragment_bytes, nodes),
    )
