"""The DuckDB engine that executes governed queries.

One in-memory DuckDB database per catalog snapshot: DuckDB product files are ATTACHed
read-only, every product becomes a view ``memory.<domain>.<product>`` over exactly its
declared columns, then the database is hardened and its configuration locked. Each query
gets its own cursor (a DuckDB connection to that database) and streams Arrow batches.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import structlog
from sqlglot import exp

from connectors.base import Connector
from connectors.file_versions import FileVersion, files_version
from gateway.catalog.contracts import ProductContract
from gateway.catalog.source_check import check_columns
from gateway.config import EngineSettings
from gateway.engine.acceleration import AcceleratedCopy
from gateway.engine.arrow_types import ArrowTypeCache, plain_type
from gateway.engine.failures import Diagnosis, diagnose
from gateway.engine.parameters import PLAN_OF_STATEMENT, parameter_type_names
from gateway.engine.spill import new_spill_directory, released_with
from gateway.engine.watchdog import Watchdog
from gateway.errors import first_line
from gateway.planning.naming import (
    ACCELERATED_SCHEMA,
    PARTITION_SCHEMA,
    accelerated_table,
    partition_table,
    product_table,
)

log = structlog.get_logger("meshgate.engine")


def _duckdb_submit() -> Callable[..., Any] | None:
    """DuckDB 2's ``_seam.submit(connection, sql, values, format, batch_size)``, or None."""
    try:
        from duckdb import _seam
    except ImportError:
        return None
    return getattr(_seam, "submit", None)


_submit = _duckdb_submit()

_POOL_SIZE = 16


class Engine:
    """A hardened DuckDB database holding one view per product."""

    def __init__(self, settings: EngineSettings, watchdog: Watchdog | None = None) -> None:
        """``watchdog`` stops this engine's queries (time limit, cancel, memory ceiling,
        shutdown); the engines of one MeshState share theirs. Without one, the engine has
        its own, with no memory ceiling."""
        self.settings = settings
        self.watchdog = watchdog if watchdog is not None else Watchdog()
        self._spill_dir, spill_lock = new_spill_directory()
        # removed when the engine is closed, or collected (a reload retired it), or at exit
        self._remove_spill_dir = released_with(self, self._spill_dir, spill_lock)
        self._db = duckdb.connect(":memory:", config={"temp_directory": str(self._spill_dir)})
        self._attached: dict[Path, str] = {}
        self._readable: set[Path] = set()
        self._paths_of: dict[str, tuple[Path, ...]] = {}
        self.health: dict[str, str] = {}
        #: product key -> (partition views bound, pieces to divide); see ``partition_table``.
        self.partitions: dict[str, tuple[int, int]] = {}
        #: product key -> its in-memory copy, for accelerated products
        self.accelerated: dict[str, AcceleratedCopy] = {}
        #: product key -> (its files, their signature) of products whose copy failed to load
        self.unaccelerated: dict[str, tuple[tuple[Path, ...], FileVersion]] = {}
        self._locked = False
        self._idle: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._tainted: set[duckdb.DuckDBPyConnection] = set()
        self._lock = threading.Lock()
        self._arrow_types = ArrowTypeCache()

    def bind(
        self,
        contract: ProductContract,
        connector: Connector,
        partitions: int = 1,
        accelerate: bool = False,
    ) -> tuple[pa.Schema, dict[str, str]]:
        """Create the product's view after checking the contract against the source, and
        ``partitions`` hidden partition views when ``partitions > 1`` and the source splits.
        ``accelerate``: the view reads an in-memory copy of the rows instead (``accelerate``),
        unless the copy would pass ``accelerate_memory_bytes``; an accelerated product is
        served unsplit.

        Returns the view's Arrow schema and DuckDB column types. Raises ContractError or
        ConnectorError; the database is unchanged on error.
        """
        assert not self._locked, "bind every product before lock()"
        scan = connector.scan(self._attach)
        connector.check_source(self._attach, self._value)
        probe = exp.select("*").from_(scan).limit(0)
        actual = self._db.sql(probe.sql("duckdb"))
        check_columns(contract, list(zip(actual.columns, map(str, actual.types), strict=True)))
        columns = [exp.column(c.name, quoted=True) for c in contract.columns]
        source: exp.Expr = scan
        if accelerate and self._load_copy(contract, connector, exp.select(*columns).from_(scan)):
            source = accelerated_table(contract.domain, contract.name)
        view = exp.Create(
            kind="VIEW",
            this=exp.table_(contract.name, db=contract.domain, quoted=True),
            expression=exp.select(*columns).from_(source),
        )
        self._db.execute(
            exp.Create(
                kind="SCHEMA", this=exp.to_identifier(contract.domain, quoted=True), exists=True
            ).sql("duckdb")
        )
        self._db.execute(view.sql("duckdb"))
        if partitions > 1 and contract.key not in self.accelerated:
            self._bind_partitions(contract, connector, partitions)
        self._readable.update(connector.data_paths)
        self._paths_of[contract.key] = connector.data_paths
        self.health[contract.key] = "ok"
        relation = self._db.sql(
            exp.select("*")
            .from_(product_table(contract.domain, contract.name))
            .limit(0)
            .sql("duckdb")
        )
        types = dict(zip(relation.columns, map(str, relation.types), strict=True))
        return relation.to_arrow_table().schema, types

    def _load_copy(self, contract: ProductContract, connector: Connector, rows: exp.Select) -> bool:
        """Load ``rows`` (the product's declared columns) into its hidden in-memory table;
        False, with nothing kept, when the copy would pass the memory budget."""
        signature = files_version(connector.data_paths)  # before reading: a change
        # during the load makes the copy stale, and the next reload loads it again
        table = accelerated_table(contract.domain, contract.name)
        self._db.execute(
            exp.Create(
                kind="SCHEMA", this=exp.to_identifier(ACCELERATED_SCHEMA, quoted=True), exists=True
            ).sql("duckdb")
        )
        before = self._memory_bytes()
        started = time.time()
        try:
            self._db.execute(exp.Create(kind="TABLE", this=table, expression=rows).sql("duckdb"))
        except duckdb.Error as exc:  # out of memory, a file rewritten meanwhile, ...
            log.warning("acceleration_failed", product=contract.key, error=first_line(exc))
            self.unaccelerated[contract.key] = (connector.data_paths, signature)
            return False  # served from its files; loaded again once they change
        size = max(0, self._memory_bytes() - before)
        used = sum(copy.bytes for copy in self.accelerated.values())
        if used + size > self.settings.accelerate_memory_bytes:
            self._db.execute(exp.Drop(kind="TABLE", tables=[table]).sql("duckdb"))
            log.warning(
                "acceleration_over_budget",
                product=contract.key,
                bytes=size,
                used=used,
                budget=self.settings.accelerate_memory_bytes,
            )
            return False
        count = self._value(exp.select(exp.func("count", exp.Star())).from_(table))
        self.accelerated[contract.key] = AcceleratedCopy(
            rows=int(count),  # type: ignore[call-overload]
            bytes=size,
            loaded_at=started,
            paths=connector.data_paths,
            source=signature,
        )
        log.info(
            "product_accelerated",
            product=contract.key,
            rows=count,
            bytes=size,
            ms=round((time.time() - started) * 1000, 1),
        )
        return True

    def _memory_bytes(self) -> int:
        return int(
            self._value(
                exp.select(
                    exp.func(
                        "coalesce",
                        exp.func("sum", exp.column("memory_usage_bytes")),
                        exp.Literal.number(0),
                    )
                ).from_(exp.Table(this=exp.func("duckdb_memory")))
            )  # type: ignore[call-overload]
        )

    def _bind_partitions(self, contract: ProductContract, connector: Connector, count: int) -> None:
        """One view per partition of the product, over exactly its declared columns; a
        source that cannot be split (or fails to) is simply served unsplit."""
        try:
            partitioning = connector.partitions(count, self._attach, self._value)
            if partitioning is None:
                return
            self._db.execute(
                exp.Create(
                    kind="SCHEMA",
                    this=exp.to_identifier(PARTITION_SCHEMA, quoted=True),
                    exists=True,
                ).sql("duckdb")
            )
            for index, part in enumerate(partitioning.scans):
                view = exp.Create(
                    kind="VIEW",
                    replace=True,
                    this=partition_table(contract.domain, contract.name, index, count),
                    expression=exp.select(
                        *(exp.column(c.name, quoted=True) for c in contract.columns)
                    )
                    .from_(part.scan)
                    .where(part.where),
                )
                self._db.execute(view.sql("duckdb"))
        except duckdb.Error as exc:
            log.warning("partitions_unavailable", product=contract.key, error=first_line(exc))
            return
        self.partitions[contract.key] = (len(partitioning.scans), partitioning.pieces)

    def _value(self, query: exp.Query) -> object:
        return self._db.sql(query.sql("duckdb")).fetchall()[0][0]

    def lock(self) -> None:
        """Harden the database: only product data readable, no extensions, config locked."""
        directories = sorted(str(p) + "/" for p in self._readable if p.is_dir())
        files = sorted(str(p) for p in self._readable if not p.is_dir())
        settings = self.settings
        statements = [
            ("allowed_directories", directories),
            ("allowed_paths", files),
            ("enable_external_access", False),
            ("autoinstall_known_extensions", False),
            ("autoload_known_extensions", False),
            ("python_enable_replacements", False),
            ("memory_limit", settings.memory_limit),
            ("max_temp_directory_size", settings.max_spill_size),
            ("threads", settings.threads),
            ("lock_configuration", True),
        ]
        for name, value in statements:  # GLOBAL: a plain SET binds this session only, and
            # every query runs on a cursor, a session of its own
            self._db.execute(
                exp.Set(
                    expressions=[
                        exp.SetItem(
                            this=exp.EQ(this=exp.to_identifier(name), expression=_literal(value)),
                            kind="GLOBAL",
                        )
                    ]
                ).sql("duckdb")
            )
        self._locked = True

    @contextmanager
    def cursor(self, pooled: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection for one query, returned to a small pool afterwards.

        A connection that saw an error or an interrupt is closed, never reused; so is one
        taken with ``pooled=False``: for a dynamic PIVOT, which leaves a temporary ENUM
        type of its values (the values one user saw) in the connection that ran it.
        """
        try:
            cursor = self._idle.get_nowait()
        except queue.Empty:
            cursor = self._db.cursor()
        healthy = False
        try:
            yield cursor
            healthy = pooled and cursor not in self._tainted
        finally:
            self._tainted.discard(cursor)
            if healthy and self._idle.qsize() < _POOL_SIZE:
                self._idle.put(cursor)
            else:
                cursor.close()

    def interrupt(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Stop the query running on ``cursor``; the cursor is not reused afterwards."""
        self._tainted.add(cursor)
        cursor.interrupt()

    def result_schema(self, sql: str, params: Sequence[object] | None = None) -> pa.Schema:
        """The Arrow schema of ``sql``'s result, planned without reading the data."""
        with self.cursor() as cursor:
            return self.schema_on(cursor, sql, params)

    def result_columns(self, sql: str) -> tuple[pa.Schema, tuple[str, ...]]:
        """``result_schema`` and the DuckDB type of each result column, as DuckDB spells it
        (``DECIMAL(12,2)``), from one binding."""
        with self.cursor() as cursor:
            relation = cursor.sql(sql)
            schema = self.relation_schema(cursor, relation)
            return schema, tuple(str(duck_type) for duck_type in relation.types)

    def parameter_schema(
        self, sql: str, count: int, timeout_seconds: float | None = None
    ) -> pa.Schema:
        """The parameters ``$1`` .. ``$count`` of ``sql`` as fields of the Arrow type DuckDB
        infers for each (``gateway.engine.parameters``; null where it cannot tell), bound
        within ``timeout_seconds`` (the query timeout by default)."""
        types = [pa.null()] * count
        if count:
            seconds = (
                self.settings.query_timeout_seconds if timeout_seconds is None else timeout_seconds
            )
            with self.cursor() as cursor:
                token = self.watchdog.watch(self, cursor, lambda: False, seconds)
                try:
                    plan = cursor.execute(PLAN_OF_STATEMENT, [sql]).fetchall()[0][0]
                    types = self._arrow_types.types(cursor, parameter_type_names(plan, count))
                except duckdb.Error as exc:  # the statement binds: only the types are unknown
                    log.info("parameter_types_unknown", error=first_line(exc))
                finally:
                    self.watchdog.release(token)
        return pa.schema(
            [pa.field(f"${number}", plain_type(t)) for number, t in enumerate(types, start=1)]
        )

    def schema_on(
        self, cursor: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] | None = None
    ) -> pa.Schema:
        """``result_schema`` on a given cursor: the query is bound, not planned nor run."""
        relation = cursor.sql(sql, params=list(params) if params else None)
        return self.relation_schema(cursor, relation)

    @staticmethod
    def arrow_reader(
        cursor: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object], batch_rows: int
    ) -> pa.RecordBatchReader:
        """Run ``sql`` (planned: its schema is known) on ``cursor`` and stream its result.
        On DuckDB 2 through ``duckdb._seam.submit``, which the relation API runs a statement
        with: ``cursor.sql(sql)`` would first parse and bind it once more, for a schema the
        plan has (0.2-0.6 ms a statement in the server); the relation API on another DuckDB."""
        values = list(params) or None
        if _submit is not None:
            return _submit(cursor, sql, values, "stream", batch_rows).arrow_reader()
        return cursor.sql(sql, params=values).to_arrow_reader(batch_rows)

    def relation_schema(
        self, cursor: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation
    ) -> pa.Schema:
        """The schema a bound ``relation`` streams as, dictionaries decoded."""
        return plain_schema(self._arrow_types.schema(cursor, relation))

    def schema_and_plan_on(
        self, cursor: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] | None = None
    ) -> tuple[pa.Schema, str]:
        """``schema_on`` and the physical plan of ``sql`` as JSON, with DuckDB's cardinality
        estimates (planned, not run)."""
        schema = self.schema_on(cursor, sql, params)
        explained = cursor.execute(explain_json(sql), list(params) if params else None)
        return schema, explained.fetchall()[0][1]

    def diagnose(self, exc: BaseException, products: tuple[str, ...]) -> Diagnosis:
        """What kind of failure ``exc`` is, raised running a query of ``products``
        (``failures.diagnose``: by DuckDB's type, files attributed by their paths)."""
        paths = {key: self._paths_of.get(key, ()) for key in products}
        return diagnose(exc, paths, self._spill_dir)

    def mark_health(self, products: tuple[str, ...], status: str) -> None:
        for key in products:
            if key in self.health:
                self.health[key] = status

    def row_count(
        self,
        domain: str,
        name: str,
        where: exp.Expr | None = None,
        timeout_seconds: float | None = None,
    ) -> int:
        """How many rows a product has (those meeting ``where``), counted within
        ``timeout_seconds`` (the query timeout by default)."""
        count = exp.select(exp.func("count", exp.Star())).from_(product_table(domain, name))
        if where is not None:
            count = count.where(where.copy())
        seconds = (
            self.settings.query_timeout_seconds if timeout_seconds is None else timeout_seconds
        )
        with self.cursor() as cursor:
            token = self.watchdog.watch(self, cursor, lambda: False, seconds)
            try:
                return cursor.sql(count.sql("duckdb")).fetchall()[0][0]
            finally:
                self.watchdog.release(token)

    def keywords(self) -> tuple[str, ...]:
        """DuckDB's SQL keywords, upper case, sorted, each once (``duckdb_keywords()`` lists
        a word once per category it has)."""
        listing = exp.select(exp.func("upper", exp.column("keyword_name"))).from_(
            exp.Table(this=exp.func("duckdb_keywords"))
        )
        with self.cursor() as cursor:
            rows = cursor.sql(listing.sql("duckdb")).fetchall()
        return tuple(sorted({row[0] for row in rows}))

    def memory_usage(self) -> tuple[int, int]:
        """Bytes DuckDB holds now in memory and in temporary storage (``duckdb_memory()``)."""
        usage = exp.select(
            exp.func(
                "coalesce", exp.func("sum", exp.column("memory_usage_bytes")), exp.Literal.number(0)
            ),
            exp.func(
                "coalesce",
                exp.func("sum", exp.column("temporary_storage_bytes")),
                exp.Literal.number(0),
            ),
        ).from_(exp.Table(this=exp.func("duckdb_memory")))
        with self.cursor() as cursor:
            memory, temporary = cursor.sql(usage.sql("duckdb")).fetchall()[0]
        return int(memory), int(temporary)

    def spill_bytes(self) -> int:
        """Bytes in this engine's spill directory now."""
        total = 0
        try:
            entries = list(os.scandir(self._spill_dir))
        except OSError:
            return 0
        for entry in entries:
            try:
                total += entry.stat(follow_symlinks=False).st_size if entry.is_file() else 0
            except OSError:
                continue  # removed meanwhile
        return total

    def close(self) -> None:
        """Close the database and remove its spill directory."""
        with self._lock:
            while not self._idle.empty():
                self._idle.get_nowait().close()
            self._db.close()
            self._remove_spill_dir()

    def _attach(self, path: Path) -> str:
        alias = self._attached.get(path)
        if alias is None:
            alias = "src_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            attach = exp.Attach(
                this=exp.alias_(exp.Literal.string(str(path)), alias),
                expressions=[exp.AttachOption(this=exp.var("READ_ONLY"))],
            )
            self._db.execute(attach.sql("duckdb"))
            self._attached[path] = alias
        return alias


def explain_json(sql: str) -> str:
    """DuckDB's ``EXPLAIN (FORMAT JSON)`` of ``sql``, a statement the gateway generated with
    sqlglot. sqlglot knows EXPLAIN only as an opaque command, so this is the one statement
    made by prefixing; it is 5x faster than the relation API's ``explain()`` here."""
    return exp.Command(this="EXPLAIN", expression=exp.var(f"(FORMAT JSON) {sql}")).sql("duckdb")


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary (DuckDB ENUM) columns, also nested in lists, structs and
    maps, as their value type: batches are streamed without dictionary messages, which
    Flight generator streams do not send."""
    plain = [plain_type(f.type) for f in schema]
    if plain == schema.types:
        return schema
    return pa.schema(
        [f.with_type(t) for f, t in zip(schema, plain, strict=True)], metadata=schema.metadata
    )


def _literal(value: object) -> exp.Expr:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, list):
        return exp.Array(expressions=[exp.Literal.string(v) for v in value])
    return exp.Literal.string(str(value))
