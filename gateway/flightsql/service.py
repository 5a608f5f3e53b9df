"""Flight SQL semantics of the gateway: commands in, FlightInfo / Arrow streams out.

The Flight server (``gateway.flightsql.server``) only unwraps RPCs and calls this service with the
authenticated principal. Every statement, whatever path it arrives by (ad-hoc query,
prepared statement at prepare and at every execution, raw SQL command or ticket,
EXPLAIN), is planned by the same pipeline, which authorizes and rewrites it; metadata
shows each user only the products and columns they may read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.flight as flight
from sqlglot import exp

from gateway.audit.log import AuditLog
from gateway.audit.recorder import AuditRecorder, Finish, NullAuditRecorder
from gateway.catalog.catalog import Product
from gateway.catalog.state import MeshSnapshot, MeshState
from gateway.engine.errors import safe_engine_error
from gateway.engine.streaming import PlannedQuery, StreamStats, result_schema
from gateway.engine.watchdog import StalledStream, Watchdog
from gateway.errors import (
    InvalidQuery,
    MeshgateError,
    NotSupported,
    QueryFailed,
    QueryRefused,
    ResourceExhausted,
)
from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql import metadata
from gateway.flightsql import protocol as flightsql
from gateway.mesh.federation import NodeDirectory
from gateway.mesh.tickets import MAGIC as TICKET_MAGIC
from gateway.planning.planner import plan
from gateway.planning.query import PlanContext, PlanLimits, Query
from gateway.planning.secure import governed_columns
from gateway.query import explain
from gateway.query.executors import Endpoint, Placing, Router
from gateway.query.handles import HandleStore
from gateway.query.limits import UserLimiter
from gateway.query.plan_cache import CachedPlan, PlanCache, plan_key
from gateway.security.principal import Principal

if TYPE_CHECKING:
    from policies.engine import ProductAccess


_WRITES = (
    pb.CommandStatementUpdate,
    pb.CommandPreparedStatementUpdate,
    pb.CommandStatementIngest,
)
_READ_ONLY_MESSAGE = "the gateway is read-only: updates, inserts and ingestion are refused"
_STATEMENTS = (str, pb.CommandStatementQuery, pb.CommandPreparedStatementQuery)
_Statement = str | pb.CommandStatementQuery | pb.CommandPreparedStatementQuery


@dataclass
class PreparedStatement:
    """A statement prepared by one user; parameters arrive later by DoPut."""

    text: str
    parameter_count: int
    parameters: tuple[object, ...] | None = None
    planned: PlannedQuery | None = None  # the prepare-time plan, reused while still current


class SqlService:
    """Answers Flight SQL requests for one mesh."""

    def __init__(
        self,
        state: MeshState,
        audit: AuditLog | None = None,
        operator_view: bool = False,
        router: Router | None = None,
    ) -> None:
        """``operator_view``: EXPLAIN POLICY also lists columns hidden from the user (for
        the local ``meshgate explain`` command, never for Flight clients); ``router``: where
        queries run (default: from the config's ``[nodes]``)."""
        self._state = state
        self._audit = AuditRecorder(audit) if audit is not None else NullAuditRecorder()
        self._operator_view = operator_view
        self.router = (
            router
            if router is not None
            else Router.from_config(state.config.nodes, self._access_of, self._with_ast)
        )
        settings = state.config.gateway
        self.draining = False
        self._active = 0
        self._active_lock = threading.Lock()
        self.limiter = UserLimiter(
            settings.max_concurrent_queries_per_user, settings.max_queries_per_minute_per_user
        )
        self._hash_key = state.config.governance.hash_key
        self._tickets: HandleStore[PlannedQuery] = HandleStore(
            "ticket", settings.ticket_ttl_seconds, capacity=10_000, per_owner=32
        )
        self._prepared: HandleStore[PreparedStatement] = HandleStore(
            "prepared statement",
            settings.ticket_ttl_seconds * 6,
            capacity=10_000,
            per_owner=settings.max_prepared_statements_per_user,
            full_message=_too_many_prepared,
        )
        self._limits = PlanLimits(
            max_statement_bytes=settings.max_statement_bytes,
            max_planning_seconds=state.config.engine.query_timeout_seconds,
        )
        self._schemas: dict[tuple[int, str, str], pa.Schema] = {}
        self._plans = PlanCache()

    @property
    def nodes(self) -> NodeDirectory | None:
        """The domain nodes in mesh mode, else None."""
        return self.router.nodes

    @property
    def snapshot(self) -> MeshSnapshot:
        return self._state.current

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(self._state.config.users)

    @property
    def policy_errors(self) -> tuple:
        return self._state.policies.errors

    # -- planning ---------------------------------------------------------------------

    def context(self, principal: Principal, snapshot: MeshSnapshot | None = None) -> PlanContext:
        snapshot = snapshot or self._state.current
        return PlanContext(
            principal,
            snapshot.catalog,
            snapshot.governor,
            limits=self._limits,
            hash_key=self._hash_key,
        )

    def plan(
        self,
        principal: Principal,
        text: str,
        parameters: Sequence[object] | None = (),
        keep_ast: bool = False,
    ) -> PlannedQuery:
        """Run ``text`` through the pipeline (or take its cached plan) and compute its
        result schema.

        ``parameters=None`` plans with every parameter unbound (NULL), as at prepare time;
        ``keep_ast`` plans afresh and keeps the syntax tree (cached plans have none).
        """
        started = time.monotonic()
        context = self.context(principal)
        key = plan_key(principal, text)
        cached = (
            None if keep_ast else self._plans.get(context.catalog, context.governor.version, key)
        )
        try:
            query = cached.query if cached else plan(text, context)
            if parameters is None:
                parameters = (None,) * query.parameter_count
            if query.parameter_count != len(parameters):
                raise InvalidQuery(
                    f"the statement has {query.parameter_count} parameter(s) but "
                    f"{len(parameters)} value(s) were bound"
                )
            schema = (
                cached.schema
                if cached and cached.schema
                else self._result_schema(context, query, parameters, started)
            )
        except MeshgateError as exc:
            self._audit.refusal(principal, text, exc)
            raise
        if cached is None and not query.explain:
            self._plans.put(
                context.catalog,
                context.governor.version,
                key,
                CachedPlan(query, None if query.parameter_count else schema),
            )
        return PlannedQuery(
            principal,
            context.catalog,
            query,
            query.product_keys,
            schema,
            tuple(parameters),
            context.governor.version,
        )

    def _result_schema(
        self, context: PlanContext, query: Query, parameters: Sequence[object], started: float
    ) -> pa.Schema:
        """The result schema, bound by DuckDB in what is left of the planning time limit."""
        if query.explain == "policy":
            return explain.POLICY_SCHEMA
        if query.explain == "plan":
            return explain.EXPLAIN_SCHEMA
        limit = context.limits.max_planning_seconds
        remaining = None if limit is None else limit - (time.monotonic() - started)
        if remaining is not None and remaining <= 0:
            raise QueryFailed(f"planning the statement exceeded the time limit of {limit:g} s")
        assert query.sql is not None  # set by generate_sql, the last step
        schema = result_schema(
            context.catalog, query.sql, parameters, query.product_keys, remaining
        )
        if self._hash_key and any(self._hash_key in name for name in schema.names):
            raise InvalidQuery(
                "name every computed column with AS: its automatic name would expose governed SQL"
            )
        return schema

    # -- GetFlightInfo / GetSchema ------------------------------------------------------

    def flight_info(
        self, principal: Principal, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        command = flightsql.decode_descriptor(descriptor)
        if isinstance(command, _STATEMENTS):
            planned = self._plan_command(principal, command)
            executor = self.router.executor_for(planned)
            if isinstance(executor, Placing):
                return self._placed_info(descriptor, planned, executor)
            # A waiting ticket keeps no syntax tree (memory): a federated query re-plans.
            kept = replace(planned, query=planned.query.evolve(ast=None))
            ticket = pb.TicketStatementQuery(
                statement_handle=self._tickets.put(principal.user, kept)
            )
            return _info(descriptor, planned.schema, flightsql.pack(ticket))
        schema = self._metadata_schema(command)
        return _info(descriptor, schema, descriptor.command)

    def _placed_info(
        self, descriptor: flight.FlightDescriptor, planned: PlannedQuery, executor: Placing
    ) -> flight.FlightInfo:
        """Endpoints where the executor's node serves the rows straight to the client (a
        client that ignores locations sends the tickets back here and is relayed); one
        audit entry, whatever the number of endpoints."""
        self._audit.begin(planned, node=executor.node)
        endpoints = [_flight_endpoint(e) for e in executor.endpoints(planned)]
        return flight.FlightInfo(planned.schema, descriptor, endpoints, -1, -1)

    def _access_of(self, principal: Principal) -> Callable[[str], ProductAccess]:
        """The current policy's decision per product for ``principal`` (relay checks)."""
        snapshot = self._state.current
        subject = self.context(principal, snapshot).subject
        return lambda key: snapshot.governor.access(subject, key)

    def _with_ast(self, planned: PlannedQuery) -> PlannedQuery:
        """``planned`` planned afresh, keeping its syntax tree (federation splits it)."""
        return self.plan(planned.principal, planned.query.text, planned.parameters, keep_ast=True)

    def schema(self, principal: Principal, descriptor: flight.FlightDescriptor) -> pa.Schema:
        command = flightsql.decode_descriptor(descriptor)
        if isinstance(command, _STATEMENTS):
            return self._plan_command(principal, command).schema
        return self._metadata_schema(command)

    def _plan_command(self, principal: Principal, command: _Statement) -> PlannedQuery:
        """Plan a statement command in one of the user's concurrent-query slots: planning
        is work too (up to the query timeout), so a user cannot plan past their limit."""
        self._refuse_when_draining()
        self.limiter.admit(principal.user)
        with self.limiter.running(principal.user):
            return self._plan_in_slot(principal, command)

    def _plan_in_slot(self, principal: Principal, command: _Statement) -> PlannedQuery:
        if isinstance(command, str):
            return self.plan(principal, command)
        if isinstance(command, pb.CommandStatementQuery):
            if command.HasField("transaction_id"):
                raise NotSupported("transactions are not supported: the gateway is read-only")
            return self.plan(principal, command.query)
        prepared = self._prepared.get(principal.user, command.prepared_statement_handle)
        if prepared.planned is not None and not prepared.parameter_count:
            return self._current(prepared.planned)  # planned at prepare; re-planned if stale
        if prepared.parameters is None and prepared.parameter_count:
            raise InvalidQuery(
                f"the prepared statement has {prepared.parameter_count} parameter(s); bind them first"
            )
        return self.plan(principal, prepared.text, prepared.parameters or ())

    def _metadata_schema(self, command: object) -> pa.Schema:
        if isinstance(command, _WRITES):
            raise QueryRefused(_READ_ONLY_MESSAGE)
        if isinstance(command, pb.CommandGetTables):
            return (
                metadata.schemas.GET_TABLES_WITH_SCHEMA
                if command.include_schema
                else metadata.schemas.GET_TABLES
            )
        schema = _METADATA_SCHEMAS.get(type(command))
        if schema is None:
            raise NotSupported(f"{type(command).__name__} is not supported by this server")
        return schema

    # -- DoGet ------------------------------------------------------------------------

    def stream(
        self, principal: Principal, ticket: bytes, is_cancelled: Callable[[], bool]
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The schema and batches for a ticket from GetFlightInfo (or raw SQL); the batches
        run in one of the user's concurrent-query slots."""
        self._refuse_when_draining()
        schema, batches = self._stream(principal, ticket, is_cancelled)
        inner = self._in_slot(principal.user, batches)
        timeout = self._state.config.engine.query_timeout_seconds
        watchdog = self._state.watchdog
        return schema, _expiring(watchdog, watchdog.watch_stream(inner, timeout + 1.0), timeout)

    def health(self, principal: Principal | None = None) -> dict:
        """Products' health and node reachability: all of it without a ``principal`` (the
        operator); for a user, only the products they may read, and the nodes of the domains
        where they may read one (locations they get in endpoints anyway), each listing only
        those products: no product, domain or node address their catalog does not show."""
        snapshot = self._state.current
        health = snapshot.catalog.engine.health
        keys = [
            p.key for p in (self.visible_products(principal) if principal else snapshot.catalog)
        ]
        answer: dict = {
            "status": "draining" if self.draining else "ok",
            "products": {key: health.get(key, "unknown") for key in keys},
        }
        if self.nodes is not None:
            if principal is None:
                answer["nodes"] = {d: self.nodes.health(d) for d in self.nodes.domains}
            else:
                domains = self.nodes.domains
                readable = {d: {k for k in keys if k.startswith(d + ".")} for d in domains}
                answer["nodes"] = {
                    d: [_user_replica_view(r, readable[d]) for r in self.nodes.health(d)]
                    for d in self.nodes.domains
                    if readable[d]
                }
        return answer

    @property
    def active_streams(self) -> int:
        return self._active

    def _in_slot(
        self, user: str, batches: Iterator[pa.RecordBatch]
    ) -> Generator[pa.RecordBatch, None, None]:
        with self.limiter.running(user):
            with self._active_lock:
                self._active += 1
            try:
                yield from batches
            finally:
                with self._active_lock:
                    self._active -= 1

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise ResourceExhausted(
                "the gateway is shutting down; retry on another instance or in a moment"
            )

    def _stream(
        self, principal: Principal, ticket: bytes, is_cancelled: Callable[[], bool]
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        relay = self.router.relay
        if relay is not None and ticket.startswith(TICKET_MAGIC):
            return relay.open(principal, ticket)
        command = flightsql.decode(ticket)
        if isinstance(command, pb.TicketStatementQuery):
            waiting = self._tickets.take(principal.user, command.statement_handle)
            with self.limiter.running(principal.user):  # may re-plan: in a slot, like planning
                planned = self._current(waiting)
        elif isinstance(command, (str, pb.CommandStatementQuery)):
            planned = self._plan_command(principal, command)
        else:
            table = self._metadata_table(principal, command)
            return table.schema, iter(table.to_batches())
        if planned.query.explain:
            finish = self._audit.begin(planned)
            table = self._explanation(planned)
            finish(StreamStats(rows=table.num_rows, bytes=table.nbytes), "ok", None)
            return table.schema, iter(table.to_batches())
        end = _LateFinish()
        schema, batches = self.router.executor_for(planned).open(planned, is_cancelled, end)
        return schema, self._audited(planned, end, batches)

    def _audited(
        self, planned: PlannedQuery, end: _LateFinish, batches: Iterator[pa.RecordBatch]
    ) -> Iterator[pa.RecordBatch]:
        """``batches`` with their audit records: the begin record is written when streaming
        begins (binding ``end``, the executor's end callback) and is on disk before the
        first batch leaves (the query computes while it is flushed); the end record always
        follows."""
        sequence, finish = self._audit.begin_deferred(planned)
        end.bind(finish)
        try:
            first = next(batches, None)
            self._audit.wait_durable(sequence)
            if first is not None:
                yield first
                yield from batches
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _current(self, planned: PlannedQuery) -> PlannedQuery:
        """``planned`` again if the catalog or policy changed since it was planned: a ticket
        never outlives the rules it was granted under."""
        snapshot = self._state.current
        if (
            planned.catalog is snapshot.catalog
            and planned.governor_version == snapshot.governor.version
        ):
            return planned
        replanned = self.plan(planned.principal, planned.query.text, planned.parameters)
        if replanned.schema != planned.schema:
            raise InvalidQuery(
                "the catalog or the policy changed since this query was planned; run it again"
            )
        return replanned

    def _explanation(self, planned: PlannedQuery) -> pa.Table:
        if planned.query.explain == "policy":
            return explain.policy_explanation(planned.query, show_hidden=self._operator_view)
        try:
            return explain.plan_explanation(planned.catalog, planned.query, planned.parameters)
        except duckdb.Error as exc:
            raise safe_engine_error(exc, planned.products) from exc

    def _metadata_table(self, principal: Principal, command: object) -> pa.Table:
        if isinstance(command, pb.CommandGetSqlInfo):
            return pa.Table.from_batches([metadata.sql_info(list(command.info))])
        if isinstance(command, pb.CommandGetCatalogs):
            return metadata.catalogs()
        if isinstance(command, pb.CommandGetTableTypes):
            return metadata.table_types()
        if isinstance(
            command,
            (pb.CommandGetImportedKeys, pb.CommandGetExportedKeys, pb.CommandGetCrossReference),
        ):
            return metadata.no_keys()
        products = self.visible_products(principal)
        if isinstance(command, pb.CommandGetDbSchemas):
            return metadata.db_schemas(products, command)
        if isinstance(command, pb.CommandGetTables):
            return metadata.tables(products, command)
        if isinstance(command, pb.CommandGetPrimaryKeys):
            return metadata.primary_keys(products, command)
        self._metadata_schema(command)  # raises the right refusal
        raise NotSupported(f"{type(command).__name__} is not supported by this server")

    def visible_products(self, principal: Principal) -> list[Product]:
        """The products ``principal`` may read, each reduced to the columns they may see,
        with the schema they would get (masks may change a column's type)."""
        snapshot = self._state.current
        context = self.context(principal, snapshot)
        visible = []
        for product in snapshot.catalog:
            access = snapshot.governor.access(context.subject, product.key)
            if not access.allowed or not access.visible_columns:
                continue
            visible.append(
                product.restricted_to(
                    [c.name for c in access.visible_columns],
                    self._user_schema(snapshot, principal, product, access),
                )
            )
        return visible

    def _user_schema(
        self, snapshot: MeshSnapshot, principal: Principal, product: Product, access
    ) -> pa.Schema:
        """The schema ``principal`` gets from ``product`` (masks may change types), learnt
        from typed NULLs: metadata never reads the product's data."""
        key = (snapshot.governor.version, principal.user, product.key)
        schema = self._schemas.get(key)
        if schema is None:
            select = exp.select(*governed_columns(access, product.column_types, typed_nulls=True))
            schema = snapshot.catalog.engine.result_schema(select.sql("duckdb"))
            if len(self._schemas) > 10_000:
                self._schemas.clear()
            self._schemas[key] = schema
        return schema

    # -- DoPut ------------------------------------------------------------------------

    def put(
        self,
        principal: Principal,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
    ) -> bytes | None:
        """Bind prepared-statement parameters; refuse every kind of write."""
        command = flightsql.decode_descriptor(descriptor)
        if isinstance(command, (*_WRITES, str)):
            raise QueryRefused(_READ_ONLY_MESSAGE)
        if not isinstance(command, pb.CommandPreparedStatementQuery):
            raise NotSupported(f"DoPut with {type(command).__name__} is not supported")
        handle = command.prepared_statement_handle
        prepared = self._prepared.get(principal.user, handle)
        table = reader.read_all()
        if table.num_rows != 1:
            raise InvalidQuery(
                f"bind exactly one row of parameters per execution (got {table.num_rows})"
            )
        if table.num_columns != prepared.parameter_count:
            raise InvalidQuery(
                f"the statement has {prepared.parameter_count} parameter(s) but "
                f"{table.num_columns} were bound"
            )
        values = _parameter_values(table)
        self._prepared.replace(
            principal.user,
            handle,
            PreparedStatement(prepared.text, prepared.parameter_count, values),
        )
        return pb.DoPutPreparedStatementResult(prepared_statement_handle=handle).SerializeToString()

    # -- DoAction ---------------------------------------------------------------------

    def action(self, principal: Principal, action_type: str, body: bytes) -> list[bytes]:
        if action_type == flightsql.ACTION_CREATE_PREPARED_STATEMENT:
            request = flightsql.decode_as(body, pb.ActionCreatePreparedStatementRequest)
            if request.HasField("transaction_id"):
                raise NotSupported("transactions are not supported: the gateway is read-only")
            return [self._prepare(principal, request.query)]
        if action_type == flightsql.ACTION_CLOSE_PREPARED_STATEMENT:
            closing = flightsql.decode_as(body, pb.ActionClosePreparedStatementRequest)
            self._prepared.discard(principal.user, closing.prepared_statement_handle)
            return []
        raise NotSupported(f"action {action_type!r} is not supported by this server")

    def _prepare(self, principal: Principal, text: str) -> bytes:
        self._prepared.check_room(principal.user)  # before the work of planning
        with self.limiter.running(principal.user):
            planned = self.plan(principal, text, parameters=None)
        count = len(planned.parameters)
        reusable = replace(planned, query=planned.query.evolve(ast=None)) if not count else None
        handle = self._prepared.put(
            principal.user, PreparedStatement(text, count, planned=reusable)
        )
        parameter_schema = pa.schema([pa.field(f"${i + 1}", pa.null()) for i in range(count)])
        result = pb.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle,
            dataset_schema=planned.schema.serialize().to_pybytes(),
            parameter_schema=parameter_schema.serialize().to_pybytes(),
        )
        return flightsql.pack(result)


_METADATA_SCHEMAS: dict[type, pa.Schema] = {
    pb.CommandGetSqlInfo: metadata.schemas.GET_SQL_INFO,
    pb.CommandGetCatalogs: metadata.schemas.GET_CATALOGS,
    pb.CommandGetDbSchemas: metadata.schemas.GET_DB_SCHEMAS,
    pb.CommandGetTableTypes: metadata.schemas.GET_TABLE_TYPES,
    pb.CommandGetPrimaryKeys: metadata.schemas.GET_PRIMARY_KEYS,
    pb.CommandGetImportedKeys: metadata.schemas.GET_IMPORTED_KEYS,
    pb.CommandGetExportedKeys: metadata.schemas.GET_EXPORTED_KEYS,
    pb.CommandGetCrossReference: metadata.schemas.GET_CROSS_REFERENCE,
}


def _user_replica_view(replica: dict, readable: set[str]) -> dict:
    """A node replica's health as a user sees it: reachability and the products they may
    read (never the node's other products, validation problems or connection errors)."""
    view = {"location": replica["location"], "reachable": replica["reachable"]}
    if replica["reachable"]:
        view["status"] = replica.get("status", "unknown")
        view["products"] = sorted(p for p in replica.get("products", ()) if p in readable)
    return view


def _too_many_prepared(user: str, limit: int) -> str:
    return (
        f"resource exhausted: {user} has {limit} open prepared statements (the limit, "
        "[gateway] max_prepared_statements_per_user); close one (ClosePreparedStatement; in "
        "ADBC, close the statement or cursor) before preparing another, or wait for one to expire"
    )


def _parameter_values(table: pa.Table) -> tuple[object, ...]:
    """The one row of bound parameters as Python values; a value Python cannot hold (a
    DATE past year 9999, say) is refused naming the parameter, never shown."""
    values = []
    for number, column in enumerate(table.columns, start=1):
        try:
            values.append(column[0].as_py())
        except (OverflowError, ValueError, pa.ArrowException) as exc:
            raise InvalidQuery(
                f"parameter {number} ({column.type}) is out of range for the gateway; bind a "
                "value within the type's calendar or numeric range (dates: years 1-9999)"
            ) from exc
    return tuple(values)


def _expiring(
    watchdog: Watchdog, stalled: StalledStream, timeout: float
) -> Iterator[pa.RecordBatch]:
    """The watched stream's batches, ending with an error (never a silently short result)
    when the watchdog closed it because the client stopped reading past the time limit."""
    try:
        while True:
            try:
                batch = stalled.advance()  # never while the watchdog closes the stream
            except StopIteration:
                break
            yield batch
        if stalled.expired:
            raise QueryFailed(
                f"the query exceeded the time limit of {timeout:g} s while the client was not "
                "reading; run it again and read the result as it arrives"
            )
    finally:
        stalled.close()
        watchdog.unwatch_stream(stalled)


class _LateFinish:
    """An executor's end callback whose target (the audit's end record) is bound when
    streaming begins, after the executor was opened."""

    def __init__(self) -> None:
        self._finish: Finish | None = None

    def bind(self, finish: Finish) -> None:
        self._finish = finish

    def __call__(self, stats: StreamStats, outcome: str, error: str | None) -> None:
        if self._finish is not None:
            self._finish(stats, outcome, error)


def _flight_endpoint(endpoint: Endpoint) -> flight.FlightEndpoint:
    expires = pa.scalar(endpoint.expires, pa.timestamp("us", "UTC"))
    return flight.FlightEndpoint(endpoint.ticket, endpoint.locations, expiration_time=expires)


def _info(
    descriptor: flight.FlightDescriptor, schema: pa.Schema, ticket: bytes
) -> flight.FlightInfo:
    return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)
