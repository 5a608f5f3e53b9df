"""Run planned SQL on the engine and stream Arrow batches bounded by rows and bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import duckdb
import pyarrow as pa
import structlog

from gateway.catalog.catalog import Catalog
from gateway.config import EngineSettings
from gateway.engine.arrow_types import WIDE_SCHEMA_FIELDS, plain_type
from gateway.engine.database import Engine
from gateway.engine.errors import engine_failure
from gateway.engine.failures import carries_engine_error, engine_type
from gateway.engine.plan_cost import PlanCost
from gateway.engine.watchdog import Watchdog
from gateway.errors import MeshgateError, QueryFailed, ResourceExhausted
from gateway.memo import IdentityMemo
from gateway.planning.query import Query
from gateway.security.principal import Principal

log = structlog.get_logger("meshgate.query")

#: pyarrow's default IPC write options, built once: a Flight stream given none builds them
#: anew (reading the environment) for every result
IPC_OPTIONS = pa.ipc.IpcWriteOptions()

_FIXED_WIDTH_GUESS = 16  # bytes per value assumed for variable-width columns


@dataclass(frozen=True)
class PlannedQuery:
    """A statement that passed the pipeline, ready to execute on its catalog's engine."""

    principal: Principal
    catalog: Catalog
    query: Query
    products: tuple[str, ...]
    schema: pa.Schema
    parameters: tuple[object, ...] = ()
    governor_version: int = 0
    #: what the governed plan is estimated to cost (``gateway.engine.plan_cost``)
    cost: PlanCost | None = None
    #: this query's time limit, when its resource group sets one below the engine's
    timeout_seconds: float | None = None
    #: spill bytes past which the query is stopped (its resource group's ``max_spill_bytes``)
    spill_limit_bytes: int | None = None
    #: the schema its unqualified product names were resolved against (a session's)
    default_schema: str | None = None

    def time_limit(self, engine_limit: float) -> float:
        """Seconds this query may run: its group's limit, never above the engine's."""
        return min(self.timeout_seconds or engine_limit, engine_limit)

    @property
    def sql(self) -> str:
        assert self.query.sql is not None  # set by generate_sql, the last planning step
        return self.query.sql


@dataclass
class StreamStats:
    """What one execution returned."""

    rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.perf_counter)
    #: the executing engine's own id of the run (Spark's operation id), for the audit
    operation: str | None = None
    #: the result cache's part (``gateway.query.result_cache``): "hit", "miss" or None
    cache: str | None = None
    #: the Arrow bytes domain nodes sent for a federated query's fragments (None: not one)
    moved_bytes: int | None = None


@dataclass(frozen=True)
class StreamedTable:
    """Rows a query reads once, as they arrive (a federated fragment streaming from its
    node); ``rows`` estimates how many, for DuckDB's join planning (None: unknown)."""

    reader: pa.RecordBatchReader
    rows: int | None = None


class TableSources(Protocol):
    """Where the streamed tables of one query come from (see ``stream_sql``)."""

    def watch(self, interrupt: Callable[[], None]) -> None:
        """The tables are registered: ``interrupt`` stops the query (when a source fails)."""

    def failure(self) -> MeshgateError | None:
        """The error of a source that failed: reported instead of DuckDB's wrapping of it."""

    def close(self) -> None:
        """Stop every source: the query is over or being torn down."""


def result_schema(
    catalog: Catalog,
    sql: str,
    parameters: Sequence[object],
    products: tuple[str, ...],
    timeout: float | None = None,
    pooled: bool = True,
) -> pa.Schema:
    """The result schema of ``sql`` (planned by DuckDB, no data read), within ``timeout``
    seconds (the query timeout by default: what is left of it after the pipeline);
    ``pooled=False``: on a connection used once (see ``Engine.cursor``)."""
    return _bind(catalog, sql, parameters, products, timeout, with_plan=False, pooled=pooled)[0]


def result_schema_and_plan(
    catalog: Catalog,
    sql: str,
    parameters: Sequence[object],
    products: tuple[str, ...],
    timeout: float | None = None,
) -> tuple[pa.Schema, str]:
    """``result_schema`` and DuckDB's physical plan of ``sql`` as JSON (with its
    cardinality estimates), from one binding."""
    schema, plan = _bind(catalog, sql, parameters, products, timeout, with_plan=True)
    assert plan is not None
    return schema, plan


def _bind(
    catalog: Catalog,
    sql: str,
    parameters: Sequence[object],
    products: tuple[str, ...],
    timeout: float | None,
    with_plan: bool,
    pooled: bool = True,
) -> tuple[pa.Schema, str | None]:
    engine = catalog.engine
    try:
        with engine.cursor(pooled) as cursor:  # planning folds constants: bound it by the timeout
            seconds = engine.settings.query_timeout_seconds if timeout is None else timeout
            token = engine.watchdog.watch(engine, cursor, lambda: False, seconds)
            try:
                if with_plan:
                    return engine.schema_and_plan_on(cursor, sql, parameters)
                return engine.schema_on(cursor, sql, parameters), None
            finally:
                engine.watchdog.release(token)
    except duckdb.InterruptException as exc:
        raise QueryFailed(
            f"planning the query exceeded the time limit of {engine.settings.query_timeout_seconds:g} s"
        ) from exc
    except duckdb.Error as exc:
        raise engine_failure(engine, exc, products) from exc


def rows_per_batch(schema: pa.Schema, max_rows: int, max_bytes: int) -> int:
    """A batch row count that keeps typical batches under ``max_bytes`` (kept per schema
    object: a repeated statement's plan hands out the same one)."""
    if len(schema) > WIDE_SCHEMA_FIELDS:
        return _rows_per_batch(schema, max_rows, max_bytes)
    return _ROWS_PER_BATCH.get(
        schema, lambda: _rows_per_batch(schema, max_rows, max_bytes), max_rows, max_bytes
    )


_ROWS_PER_BATCH: IdentityMemo[pa.Schema, int] = IdentityMemo(256)


def _rows_per_batch(schema: pa.Schema, max_rows: int, max_bytes: int) -> int:
    width = 0
    for schema_field in schema:
        bit_width = (
            getattr(schema_field.type, "bit_width", None)
            if pa.types.is_primitive(schema_field.type)
            else None
        )
        width += max(1, (bit_width or 8 * _FIXED_WIDTH_GUESS) // 8)
    return max(1, min(max_rows, max_bytes // max(width, 1)))


def stream_batches(
    planned: PlannedQuery,
    is_cancelled: Callable[[], bool],
    on_finish: Callable[[StreamStats, str, str | None], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Execute ``planned`` and yield its batches, each at most ``batch_bytes`` big.

    The query is interrupted in DuckDB as soon as the client cancels or disconnects (the
    watchdog checks every 0.1 s, also before the first batch); one log line gives user,
    products, rows, bytes and duration, and ``on_finish(stats, outcome, error)`` is
    called at the end whatever happened.
    """
    yield from stream_sql(
        planned.catalog.engine,
        planned.sql,
        planned.parameters,
        planned.schema,
        is_cancelled,
        on_finish,
        timeout=planned.timeout_seconds,
        spill_limit=planned.spill_limit_bytes,
        same_names=planned.query.columns_from_data,
        user=planned.principal.user,
        products=list(planned.products),
    )


def opened_sql(
    engine: Engine,
    sql: str,
    parameters: Sequence[object],
    is_cancelled: Callable[[], bool],
    on_finish: Callable[[StreamStats, str, str | None], None] | None = None,
    tables: Mapping[str, pa.Table] | None = None,
    **log_fields: object,
) -> tuple[pa.Schema, Generator[pa.RecordBatch, None, None]]:
    """``stream_sql`` of a query whose schema is the one DuckDB binds it to: bound once,
    for its schema and its run, which starts when the first batch is asked for;
    ``tables``: as ``stream_sql``'s."""
    steps = _stream_sql(
        engine, sql, parameters, None, is_cancelled, on_finish, log_fields, tables, announce=True
    )
    return next(steps), steps


def stream_sql(
    engine: Engine,
    sql: str,
    parameters: Sequence[object],
    schema: pa.Schema,
    is_cancelled: Callable[[], bool],
    on_finish: Callable[[StreamStats, str, str | None], None] | None = None,
    tables: Mapping[str, pa.Table | StreamedTable] | None = None,
    sources: TableSources | None = None,
    timeout: float | None = None,
    spill_limit: int | None = None,
    same_names: bool = False,
    **log_fields: object,
) -> Iterator[pa.RecordBatch]:
    """Run ``sql`` on ``engine`` and yield batches of ``schema`` (see ``stream_batches``).

    ``tables`` are Arrow tables or streams made visible to ``sql`` under their names for
    this query only (the fragments of a federated query); ``sources`` feed the streams: a
    source that fails stops the query with its own error, and they are closed before the
    cursor is released, whatever happened. ``timeout``: seconds, at most the engine's
    query timeout (its default). ``same_names``: the result must have ``schema``'s column
    names, not only its types (a dynamic PIVOT, whose names are values of the data), and
    its connection is not reused (see ``Engine.cursor``).
    """
    return _stream_sql(
        engine,
        sql,
        parameters,
        schema,
        is_cancelled,
        on_finish,
        log_fields,
        tables,
        sources,
        timeout,
        spill_limit,
        same_names,
    )


def _stream_sql(
    engine: Engine,
    sql: str,
    parameters: Sequence[object],
    schema: pa.Schema | None,
    is_cancelled: Callable[[], bool],
    on_finish: Callable[[StreamStats, str, str | None], None] | None,
    log_fields: Mapping[str, object],
    tables: Mapping[str, pa.Table | StreamedTable] | None = None,
    sources: TableSources | None = None,
    timeout: float | None = None,
    spill_limit: int | None = None,
    same_names: bool = False,
    announce: bool = False,
) -> Generator[pa.RecordBatch | pa.Schema, None, None]:
    """``stream_sql``; ``schema`` None: the one DuckDB binds ``sql`` to; ``announce``:
    yield the schema first, once bound, before the query runs."""
    settings = engine.settings
    limit = min(timeout or settings.query_timeout_seconds, settings.query_timeout_seconds)
    products = tuple(cast(Iterable[str], log_fields.get("products", ())))
    stats = StreamStats()
    outcome = "ok"
    error: str | None = None
    watchdog = engine.watchdog
    with engine.cursor(pooled=not same_names) as cursor:
        token = watchdog.watch(engine, cursor, is_cancelled, limit, spill_limit)
        reader = None
        try:
            for name, table in (tables or {}).items():
                _register(cursor, name, table)
            if sources is not None:
                sources.watch(lambda: engine.interrupt(cursor))
            if schema is None:  # bound first, for its schema (``opened_sql``)
                relation = cursor.sql(sql, params=list(parameters) or None)
                schema = engine.relation_schema(cursor, relation)
                if announce:
                    yield schema
                reader = relation.to_arrow_reader(
                    rows_per_batch(schema, settings.batch_rows, settings.batch_bytes)
                )
            else:
                reader = engine.arrow_reader(
                    cursor,
                    sql,
                    parameters,
                    rows_per_batch(schema, settings.batch_rows, settings.batch_bytes),
                )
            decode = reader.schema != schema
            if same_names and reader.schema.names != schema.names:
                raise QueryFailed(
                    "the columns of the PIVOT changed since the statement was planned (its "
                    "values come from the data); prepare or run it again"
                )
            for batch in reader:
                if decode:
                    batch = _conform(batch, schema)
                size = batch.nbytes  # Arrow sums it column by column: once per batch
                if size <= settings.batch_bytes or batch.num_rows <= 1:
                    count_within_limits(stats, batch, settings, size)
                    yield batch
                    continue
                for piece in split_by_bytes(batch, settings.batch_bytes):
                    count_within_limits(stats, piece, settings)
                    yield piece
        except (duckdb.InterruptException, OSError, pa.ArrowException) as exc:
            stopped_by = watchdog.release(token)
            if (failure := _failed_source(sources)) is not None:
                outcome, error = "error", failure.client_message
                raise failure from exc
            interrupted = issubclass(engine_type(exc), duckdb.InterruptException)
            if stopped_by is None and not interrupted and carries_engine_error(exc):
                outcome = "error"  # DuckDB failed while the result streamed
                failure = engine_failure(engine, exc, products)
                error = failure.client_message
                raise failure from exc
            if not interrupted and stopped_by is None:
                outcome, error = "error", "the query failed"
                raise  # a genuine reader failure, not our interrupt
            outcome = stopped_by or "cancelled"
            error = stop_message(outcome, limit)
            raise QueryFailed(error) from None
        except duckdb.Error as exc:
            outcome = "error"
            if (failure := _failed_source(sources)) is not None:
                error = failure.client_message
                raise failure from exc
            if (stopped_by := watchdog.release(token)) is not None:
                outcome, error = (
                    stopped_by,
                    stop_message(stopped_by, limit),
                )
                raise QueryFailed(error) from None  # stopped: DuckDB's error is a consequence
            failure = engine_failure(engine, exc, products)
            error = failure.client_message
            raise failure from exc
        except GeneratorExit:
            outcome, error = closed_outcome(watchdog, limit)
            engine.interrupt(cursor)
            raise
        except (QueryFailed, ResourceExhausted) as exc:
            if outcome == "ok":
                outcome, error = "error", exc.client_message
                engine.interrupt(cursor)
            raise
        finally:
            watchdog.release(token)
            if outcome == "ok":
                engine.mark_health(products, "ok")
            if sources is not None:  # first: a DuckDB thread may be waiting on a source
                sources.close()
            if reader is not None:
                reader.close()
            for name in tables or {}:
                cursor.unregister(name)
            if on_finish is not None:
                on_finish(stats, outcome, error)
            log.info(
                "query",
                **log_fields,
                rows=stats.rows,
                bytes=stats.bytes,
                duration_ms=round((time.perf_counter() - stats.started) * 1000, 2),
                outcome=outcome,
            )


def _register(
    cursor: duckdb.DuckDBPyConnection, name: str, table: pa.Table | StreamedTable
) -> None:
    """Make ``table`` readable as ``name``. DuckDB cannot count a stream without reading
    it and plans it as one row, which makes a big stream the build side of its hash joins
    (held whole, the very thing streaming avoids): where this DuckDB lets an Arrow source
    report its rows (``duckdb._sources``, DuckDB 2), the stream's estimate is given."""
    if not isinstance(table, StreamedTable):
        cursor.register(name, table)
    elif table.rows is not None and _EstimatedStream is not None:
        cursor._register_arrow_source(name, _EstimatedStream(table.reader, table.rows))
    else:
        cursor.register(name, table.reader)


def count_within_limits(
    stats: StreamStats, batch: pa.RecordBatch, settings: EngineSettings, nbytes: int | None = None
) -> None:
    """Count ``batch`` (``nbytes`` big, when the caller knows) into ``stats``;
    ResourceExhausted once the result passes the engine's row or byte limit (whichever
    engine computed it)."""
    stats.rows += batch.num_rows
    stats.bytes += batch.nbytes if nbytes is None else nbytes
    if stats.rows > settings.max_result_rows or stats.bytes > settings.max_result_bytes:
        raise ResourceExhausted(
            f"the result exceeds the limit of {settings.max_result_rows:,} rows or "
            f"{settings.max_result_bytes:,} bytes; add filters, aggregate or LIMIT"
        )


def closed_outcome(watchdog: Watchdog, limit: float) -> tuple[str, str | None]:
    """The outcome and error of a stream closed before its end: by the watchdog because
    the client stopped reading past the time limit ``limit`` (the client then gets the
    time-limit error) or at shutdown, or by the client going away (while the server shuts
    down: "shutdown")."""
    reason = watchdog.closing_reason() or ("shutdown" if watchdog.shutting_down else None)
    if reason is None:
        return "disconnected", None
    return reason, stop_message(reason, limit)


def stop_message(reason: str, timeout: float) -> str:
    return _STOP_MESSAGES.get(reason, "the query was stopped").format(timeout=timeout)


def _failed_source(sources: TableSources | None) -> MeshgateError | None:
    return sources.failure() if sources is not None else None


def _estimated_stream_class() -> Callable[[pa.RecordBatchReader, int], object] | None:
    """A RecordBatchReader source that reports an estimated row count; None on another
    DuckDB, whose streams are then registered without an estimate."""
    try:
        from duckdb._sources.pyarrow import PyArrowReaderSource
    except ImportError:
        return None
    if not hasattr(duckdb.DuckDBPyConnection, "_register_arrow_source"):
        return None

    class EstimatedStream(PyArrowReaderSource):
        def __init__(self, reader: pa.RecordBatchReader, rows: int) -> None:
            super().__init__(reader)
            self._rows = rows

        def rows(self) -> int | None:
            return self._rows

    return EstimatedStream


_EstimatedStream = _estimated_stream_class()


_STOP_MESSAGES = {
    "timeout": "the query exceeded the time limit of {timeout:g} s; add filters or aggregate",
    "shutdown": "the query was cancelled: the gateway is shutting down; run it again",
    "cancelled": "the query was cancelled",
    "memory": "the query was stopped: the gateway's memory is nearly exhausted; add filters or aggregate",
    "spill": "the query was stopped: the engine spilled more to disk than its resource group "
    "allows ([workload.groups] max_spill_bytes); add filters or aggregate",
}


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` as ``schema``: dictionaries decoded (also nested ones), columns renamed
    positionally. Any other difference is a planning bug: fail rather than convert data
    silently."""
    columns = []
    for column, target in zip(batch.columns, schema, strict=True):
        if column.type != target.type:
            if plain_type(column.type) != target.type:
                raise QueryFailed(
                    f"internal error: column {target.name!r} came back as {column.type}, planned "
                    f"as {target.type}; the query was stopped"
                )
            column = column.cast(target.type)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def split_by_bytes(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    size = batch.nbytes
    if size <= max_bytes or batch.num_rows <= 1:
        yield batch
        return
    pieces = -(-size // max_bytes)
    step = max(1, -(-batch.num_rows // pieces))
    for offset in range(0, batch.num_rows, step):
        yield batch.slice(offset, step)
