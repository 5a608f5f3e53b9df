"""The governed result cache: results of deterministic statements, replayed as batches.

An entry is keyed by the *governed* SQL (after policy: row filters with the user's
attributes, masks, the barrier) and its parameters, so two users with the same effective
policy share it and users with different policies never do, by construction. It is valid
only for the catalog snapshot, the policy version and the data files it was computed
from: each lookup checks them, so an entry dies the moment a product's files, a contract,
a policy or (through the governed SQL) a user's attributes change. Statements calling a
volatile function (``random``, ``now``, ``current_user``, ``nextval``, a ``SAMPLE``, ...)
are never cached, nor those reading a product whose files cannot be versioned.

``CachingExecutor`` decorates an executor (the gateway's embedded DuckDB): a hit replays
the stored batches, a miss tees the batches into the cache while they stream and stores
them only when the stream completed and stayed under the entry bound. Both are counted
against the engine's row and byte limits like any result; the audit's end record says
``cache: hit | miss``. Memory is bounded by bytes, least recently used first out.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import sqlglot
import structlog
from sqlglot import exp
from sqlglot.errors import SqlglotError

from connectors.file_versions import files_version
from connectors.registry import connector_for
from gateway.audit.recorder import Finish, Opened
from gateway.catalog.catalog import Catalog
from gateway.engine.arrow_types import schema_bytes
from gateway.engine.streaming import (
    PlannedQuery,
    StreamStats,
    closed_outcome,
    count_within_limits,
    stop_message,
)
from gateway.errors import MeshgateError, QueryFailed
from gateway.memo import WeightedLRU, held_bytes, memoize_short
from gateway.query.executors import Executor
from policies.safe_sql import duckdb_volatile_functions, function_name

log = structlog.get_logger("meshgate.cache")

#: Functions whose value changes between executions (those reading the clock, the session
#: or the engine's settings, and DuckDB's VOLATILE ones): a statement calling one, or a
#: macro that calls one (``duckdb_volatile_functions``), is never cached.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "rand",
        "setseed",
        "uuid",
        "uuidv4",
        "uuidv7",
        "gen_random_uuid",
        "nextval",
        "currval",
        "setval",
        "now",
        "today",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_localtime",
        "current_localtimestamp",
        "localtime",
        "localtimestamp",
        "get_current_time",
        "get_current_timestamp",
        "transaction_timestamp",
        "current_user",
        "current_role",
        "session_user",
        "user",
        "current_setting",
        "current_schema",
        "current_schemas",
        "current_database",
        "current_catalog",
        "current_query",
        "current_query_id",
        "current_connection_id",
        "current_transaction_id",
        "txid_current",
        "getvariable",
        "in_search_path",
        "sleep_ms",
        "write_log",
        "error",
        "stats",
        "vector_type",
    }
)
#: sqlglot's own node types for volatile expressions (named, to stay version-tolerant).
_VOLATILE_NODES = frozenset(
    {
        "Rand",
        "Uuid",
        "CurrentDate",
        "CurrentTime",
        "CurrentTimestamp",
        "CurrentDatetime",
        "CurrentUser",
        "CurrentSchema",
        "CurrentRole",
        "SessionUser",
        "Localtime",
        "Localtimestamp",
        "TableSample",
    }
)


#: governed SQL up to this long is judged once and kept, longer each time
_KEPT_SQL_BYTES = 16 * 1024


@memoize_short(maxsize=2048, max_bytes=_KEPT_SQL_BYTES)
def is_deterministic(sql: str) -> bool:
    """Whether ``sql`` (governed DuckDB SQL) returns the same rows for the same data: no
    volatile function, no sampling. Unparseable SQL counts as volatile."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except SqlglotError:
        return False
    volatile = duckdb_volatile_functions(VOLATILE_FUNCTIONS)
    for node in tree.walk():
        if type(node).__name__ in _VOLATILE_NODES:
            return False
        if isinstance(node, exp.Column) and not node.table:
            # DuckDB reads a name no table has, quoted or not, as the keyword it spells:
            # "current_date" is today
            if node.name.lower() in volatile:
                return False
            continue
        if not isinstance(node, exp.Func):
            continue
        name = function_name(node).strip('"')
        if name in volatile or _argument_count(node) < _CLOCK_BELOW_ARGUMENTS.get(name, 0):
            return False
    return True


#: functions that read the clock when called with fewer arguments than this: DuckDB's
#: one-argument ``age(ts)`` is the age at today's date
_CLOCK_BELOW_ARGUMENTS = {"age": 2}


def _argument_count(node: exp.Func) -> int:
    if isinstance(node, exp.Anonymous):
        return len(node.expressions)
    return sum(
        len(value) if isinstance(value, list) else 1
        for value in node.args.values()
        if value is not None
    )


@dataclass
class _Entry:
    schema: pa.Schema
    batches: list[pa.RecordBatch]
    nbytes: int
    valid_for: tuple[object, ...]  # (catalog generation, governor version, data versions)
    sizes: list[int]  # each batch's nbytes (Arrow computes it anew, column by column, per call)


class ResultCache:
    """Arrow results by governed SQL and parameters, bounded by bytes (LRU): an entry
    weighs its batches and its key (the governed SQL can outweigh an empty result)."""

    def __init__(self, max_bytes: int, max_entry_bytes: int | None = None) -> None:
        self.max_entry_bytes = min(max_entry_bytes or max_bytes, max_bytes)
        self._entries: WeightedLRU[tuple[str, str], _Entry] = WeightedLRU(max_bytes)
        self._lock = threading.Lock()
        self.evictions = 0

    @property
    def bytes(self) -> int:
        """What the kept entries weigh (``_weight``)."""
        return self._entries.weight

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str], valid_for: tuple[object, ...]) -> _Entry | None:
        """The entry of ``key`` if it was computed from ``valid_for``; a stale one is
        dropped."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.valid_for != valid_for:
                self._entries.pop(key)
                return None
            return entry

    def put(self, key: tuple[str, str], entry: _Entry) -> bool:
        """Store ``entry`` (evicting the least recently used); False when it is too big."""
        weight = _weight(key, entry)
        if weight > self.max_entry_bytes:
            return False
        with self._lock:
            self.evictions += self._entries.put(key, entry, weight)
            return True


def _weight(key: tuple[str, str], entry: _Entry) -> int:
    keys = held_bytes(key[0]) + held_bytes(key[1])
    return entry.nbytes + schema_bytes(entry.schema) + keys


class CachingExecutor:
    """An executor whose deterministic results are served from a ``ResultCache``."""

    def __init__(
        self,
        inner: Executor,
        cache: ResultCache,
        allowed: Callable[[PlannedQuery], bool] = lambda planned: True,
        uncached_products: frozenset[str] = frozenset(),
    ) -> None:
        """``allowed``: whether the query's principal may use the cache (its resource
        group's ``result_cache``); ``uncached_products``: products always read live."""
        self.inner = inner
        self.name = inner.name
        self.cache = cache
        self._allowed = allowed
        self._uncached = uncached_products
        self._generations: weakref.WeakKeyDictionary[Catalog, int] = weakref.WeakKeyDictionary()
        self._paths: weakref.WeakKeyDictionary[Catalog, dict[str, tuple[Path, ...] | None]] = (
            weakref.WeakKeyDictionary()
        )
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Finish | None = None,
    ) -> Opened:
        """A hit's stored batches, or the inner executor's, stored as they stream."""
        valid_for = self._valid_for(planned) if self._cacheable(planned) else None
        if valid_for is None:
            return self.inner.open(planned, is_cancelled, on_finish)
        key = (planned.sql, _parameters_key(planned.parameters))
        entry = self.cache.get(key, valid_for)
        if entry is not None and entry.schema == planned.schema:
            return planned.schema, self._replayed(planned, entry, is_cancelled, on_finish)
        schema, batches = self.inner.open(planned, is_cancelled, _marked(on_finish, "miss"))
        return schema, self._teed(planned, key, valid_for, schema, batches)

    def _cacheable(self, planned: PlannedQuery) -> bool:
        return (
            not planned.query.explain
            and not any(product in self._uncached for product in planned.products)
            and self._allowed(planned)
            and is_deterministic(planned.sql)
        )

    def _valid_for(self, planned: PlannedQuery) -> tuple[object, ...] | None:
        """What an entry of ``planned`` depends on: the catalog snapshot, the policy
        version and each product's files (None: a product cannot be versioned)."""
        catalog = planned.catalog
        with self._lock:
            generation = self._generations.get(catalog)
            if generation is None:
                generation = self._generations[catalog] = next(self._counter)
            paths = self._paths.setdefault(catalog, {})
        versions = []
        for key in planned.products:
            if key not in paths:
                paths[key] = _data_paths(catalog, key)
            product_paths = paths[key]
            if product_paths is None:
                return None
            versions.append(files_version(product_paths))
        return (generation, planned.governor_version, tuple(versions))

    def _replayed(
        self,
        planned: PlannedQuery,
        entry: _Entry,
        is_cancelled: Callable[[], bool],
        finish: Finish | None,
    ) -> Iterator[pa.RecordBatch]:
        """The stored batches, counted against the engine's limits like a computed result."""
        engine = planned.catalog.engine
        settings = engine.settings
        stats, outcome, error = StreamStats(), "ok", None
        stats_cache(stats, "hit")
        try:
            for batch, nbytes in zip(entry.batches, entry.sizes, strict=True):
                if is_cancelled():
                    outcome = "cancelled"
                    raise QueryFailed(stop_message("cancelled", 0))
                rows = batch.num_rows
                if (
                    stats.rows + rows > settings.max_result_rows
                    or stats.bytes + nbytes > settings.max_result_bytes
                ):
                    count_within_limits(stats, batch, settings)  # raises the engine's error
                stats.rows += rows
                stats.bytes += nbytes
                yield batch
        except GeneratorExit:
            outcome, error = closed_outcome(
                engine.watchdog, planned.time_limit(settings.query_timeout_seconds)
            )
            raise
        except MeshgateError as exc:
            outcome, error = (outcome if outcome != "ok" else "error"), exc.client_message
            raise
        finally:
            if finish is not None:
                finish(stats, outcome, error)

    def _teed(
        self,
        planned: PlannedQuery,
        key: tuple[str, str],
        valid_for: tuple[object, ...],
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
    ) -> Iterator[pa.RecordBatch]:
        """``batches`` as they come, kept aside while under the entry bound; stored once
        the stream completed, if the data did not change meanwhile."""
        kept: list[pa.RecordBatch] | None = []
        sizes: list[int] = []
        size = 0
        try:
            for batch in batches:
                if kept is not None:
                    nbytes = batch.nbytes
                    size += nbytes
                    if size > self.cache.max_entry_bytes:
                        kept = None
                    else:
                        kept.append(batch)
                        sizes.append(nbytes)
                yield batch
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        if kept is not None and self._valid_for(planned) == valid_for:
            self.cache.put(key, _Entry(schema, kept, size, valid_for, sizes))


def stats_cache(stats: StreamStats, outcome: str) -> None:
    """Mark ``stats`` (and so the audit's end record) with the cache's ``outcome``."""
    stats.cache = outcome


def _marked(finish: Finish | None, outcome: str) -> Finish | None:
    if finish is None:
        return None

    def marked(stats: StreamStats, result: str, error: str | None) -> None:
        stats_cache(stats, outcome)
        finish(stats, result, error)

    return marked


def _data_paths(catalog: Catalog, key: str) -> tuple[Path, ...] | None:
    """The files ``key``'s data lives in, or None: never cached (an unknown product, a
    source without files, or a contract saying ``resultCache: false``)."""
    product = catalog.product(*key.split(".", 1))
    if product is None or not product.contract.result_cache:
        return None
    try:
        paths = connector_for(product.contract.source).data_paths
    except MeshgateError:
        return None
    return paths or None


def _parameters_key(parameters: tuple[object, ...]) -> str:
    """The bound parameters, typed (1 and 1.0 and '1' differ)."""
    return repr(tuple((type(value).__name__, value) for value in parameters))
