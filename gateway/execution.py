"""Run planned SQL on the engine and stream Arrow batches bounded by rows and bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import structlog

from gateway.catalog import Catalog
from gateway.engine_errors import safe_engine_error
from gateway.errors import QueryFailed
from gateway.pipeline.query import Query
from gateway.principal import Principal

log = structlog.get_logger("meshgate.query")

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

    @property
    def sql(self) -> str:
        return self.query.sql


@dataclass
class StreamStats:
    """What one execution returned."""

    rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.perf_counter)


def result_schema(catalog: Catalog, sql: str, parameters: Sequence[object], products: tuple[str, ...]) -> pa.Schema:
    """The result schema of ``sql`` (planned by DuckDB, no data read)."""
    try:
        return catalog.engine.result_schema(sql, parameters)
    except duckdb.Error as exc:
        raise safe_engine_error(exc, products) from exc


def rows_per_batch(schema: pa.Schema, max_rows: int, max_bytes: int) -> int:
    """A batch row count that keeps typical batches under ``max_bytes``."""
    width = 0
    for schema_field in schema:
        bit_width = getattr(schema_field.type, "bit_width", None) if pa.types.is_primitive(schema_field.type) else None
        width += max(1, (bit_width or 8 * _FIXED_WIDTH_GUESS) // 8)
    return max(1, min(max_rows, max_bytes // max(width, 1)))


def stream_batches(
    planned: PlannedQuery,
    is_cancelled: Callable[[], bool],
    on_finish: Callable[[StreamStats, str, str | None], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Execute ``planned`` and yield its batches, each at most ``batch_bytes`` big.

    Stops the query in DuckDB when the client cancels or disconnects, logs one line with
    user, products, rows, bytes and duration, and calls ``on_finish(stats, outcome,
    error)`` at the end whatever happened.
    """
    settings = planned.catalog.engine.settings
    stats = StreamStats()
    outcome = "ok"
    error: str | None = None
    with planned.catalog.engine.cursor() as cursor:
        try:
            relation = cursor.sql(planned.sql, params=list(planned.parameters) or None)
            reader = relation.to_arrow_reader(
                rows_per_batch(planned.schema, settings.batch_rows, settings.batch_bytes)
            )
            for batch in reader:
                for piece in _split_by_bytes(batch, settings.batch_bytes):
                    if is_cancelled():
                        outcome = "cancelled"
                        cursor.interrupt()
                        return
                    stats.rows += piece.num_rows
                    stats.bytes += piece.nbytes
                    yield piece
        except duckdb.Error as exc:
            outcome = "error"
            failure = safe_engine_error(exc, planned.products)
            error = failure.client_message
            raise failure from exc
        except GeneratorExit:
            outcome = "disconnected"
            cursor.interrupt()
            raise
        except QueryFailed as exc:
            outcome, error = "error", exc.client_message
            raise
        finally:
            if on_finish is not None:
                on_finish(stats, outcome, error)
            log.info(
                "query",
                user=planned.principal.user,
                products=list(planned.products),
                rows=stats.rows,
                bytes=stats.bytes,
                duration_ms=round((time.perf_counter() - stats.started) * 1000, 2),
                outcome=outcome,
            )


def _split_by_bytes(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    size = batch.nbytes
    if size <= max_bytes or batch.num_rows <= 1:
        yield batch
        return
    pieces = -(-size // max_bytes)
    step = max(1, -(-batch.num_rows // pieces))
    for offset in range(0, batch.num_rows, step):
        yield batch.slice(offset, step)
