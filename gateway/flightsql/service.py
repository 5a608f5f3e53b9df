"""Flight SQL semantics of the gateway: commands in, FlightInfo / Arrow streams out.

The Flight server (``gateway.flightsql.server``) only unwraps RPCs and calls this service with the
authenticated principal. The service dispatches: every statement, whatever path it arrives
by (ad-hoc query, prepared statement, raw SQL command or ticket, EXPLAIN), is planned by
the ``StatementPlanner`` (``gateway.query.statements``), run by the executor the ``Router``
picks and recorded by the ``AuditRecorder``; metadata shows each user only what
``VisibleCatalog`` lets them see.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import nullcontext
from dataclasses import replace
from typing import NamedTuple

import pyarrow as pa
import pyarrow.flight as flight

from gateway.audit.log import AuditLog
from gateway.audit.recorder import AuditRecorder, NullAuditRecorder
from gateway.catalog.state import MeshSnapshot, MeshState
from gateway.engine.arrow_types import WIDE_SCHEMA_FIELDS
from gateway.engine.streaming import PlannedQuery, StreamStats
from gateway.errors import (
    HandleNotFound,
    MeshgateError,
    NotSupported,
    QueryRefused,
    ResourceExhausted,
)
from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql import metadata, sessions
from gateway.flightsql import protocol as flightsql
from gateway.flightsql.schemas import SqlInfoValue
from gateway.memo import IdentityMemo
from gateway.mesh.federation import NodeDirectory
from gateway.mesh.tickets import MAGIC as TICKET_MAGIC
from gateway.metrics.registry import GatewayMetrics
from gateway.query import explain
from gateway.query.executors import (
    EMBEDDED,
    Endpoint,
    Executor,
    RoutedExecutor,
    Router,
    is_placing,
)
from gateway.query.handles import HandleStore
from gateway.query.plan_cache import text_bytes
from gateway.query.result_cache import CachingExecutor, ResultCache
from gateway.query.statements import StatementPlanner
from gateway.query.visibility import VisibleCatalog
from gateway.security.principal import Principal
from gateway.workload.scheduler import Slot, Workload, activity_text

_WRITES = (
    pb.CommandStatementUpdate,
    pb.CommandPreparedStatementUpdate,
    pb.CommandStatementIngest,
)
#: an embedded query estimated (``PlanCost.rows``) at most this, whose slot is free, is
#: quick: its first batch is read before its schema goes out (``answer_stream``)
QUICK_ROWS = 100_000
_READ_ONLY_MESSAGE = "the gateway is read-only: updates, inserts and ingestion are refused"
_STATEMENTS = (str, pb.CommandStatementQuery, pb.CommandPreparedStatementQuery)
_Statement = str | pb.CommandStatementQuery | pb.CommandPreparedStatementQuery


class Answer(NamedTuple):
    """A DoGet's result: ``quick`` when its first batch is expected at once (nothing to
    run, or a small embedded query), so it may be read before the schema goes out."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    quick: bool


class SqlService:
    """Answers Flight SQL requests for one mesh."""

    def __init__(
        self,
        state: MeshState,
        audit: AuditLog | None = None,
        operator_view: bool = False,
        router: Router | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        """``operator_view``: EXPLAIN POLICY also lists columns hidden from the user (for
        the local ``meshgate explain`` command, never for Flight clients); ``router``: where
        queries run (default: from the config's ``[nodes]``); ``metrics``: fed by the
        audit recorder."""
        self._state = state
        self._audit = AuditRecorder(audit, metrics) if audit is not None else NullAuditRecorder()
        self._operator_view = operator_view
        self.planner = StatementPlanner(state, self._audit)
        self.visible = VisibleCatalog(state)
        self.router = (
            router
            if router is not None
            else Router.from_config(
                state.config.nodes,
                self.planner.access_of,
                self.planner.with_ast,
                self._engine_beside(state),
            )
        )
        settings = state.config.gateway
        self.draining = False
        self._active = 0
        self._active_lock = threading.Lock()
        self.workload = Workload(state.config)
        self.result_cache = self._cached(state, metrics)
        if metrics is not None:
            metrics.accelerated_bytes.set_function(
                lambda: sum(c.bytes for c in state.current.catalog.engine.accelerated.values())
            )
        self._tickets: HandleStore[PlannedQuery] = HandleStore(
            "ticket",
            settings.ticket_ttl_seconds,
            capacity=10_000,
            per_owner=32,
            weigh=lambda planned: text_bytes(planned.query),
            per_owner_bytes=_TICKET_BYTES_PER_USER,
        )
        #: Flight session options (the schema unqualified names mean), per login
        self.sessions = sessions.SessionStore(settings.token_ttl_seconds)
        self._keywords: list[str] | None = None
        self._schemas: IdentityMemo[pa.Schema, bytes] = IdentityMemo(_SCHEMAS_KEPT)

    def _cached(self, state: MeshState, metrics: GatewayMetrics | None) -> ResultCache | None:
        """The embedded executor behind a result cache, when ``[cache]`` is enabled."""
        settings = state.config.cache
        if not settings.enabled:
            return None
        cache = ResultCache(settings.max_bytes, settings.max_entry_bytes or settings.max_bytes // 4)
        workload = self.workload
        self.router.embedded = CachingExecutor(
            self.router.embedded,
            cache,
            lambda planned: workload.group_of(planned.principal).result_cache,
            frozenset(p.lower() for p in settings.uncached_products),
        )
        if metrics is not None:
            metrics.result_cache_bytes.set_function(lambda: cache.bytes)
        return cache

    def _engine_beside(
        self, state: MeshState
    ) -> Callable[[NodeDirectory | None], RoutedExecutor] | None:
        """Spark, when ``[engines.spark]`` is configured, given the domain nodes in mesh
        mode (its client is the ``spark`` extra, imported only then)."""
        settings = state.config.engines.spark
        if settings is None:
            return None
        from gateway.spark.executor import spark_executor

        return lambda nodes: spark_executor(settings, self.planner.plan_for_spark, nodes)

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

    @property
    def active_streams(self) -> int:
        return self._active

    # -- GetFlightInfo / GetSchema ------------------------------------------------------

    def flight_info(
        self, principal: Principal, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        command = flightsql.decode_descriptor(descriptor)
        if not isinstance(command, _STATEMENTS):
            return _info(descriptor, _metadata_schema(command), descriptor.command)
        planned = self._plan_command(principal, command)
        executor = self._executor_for(planned)
        name = executor.name
        if is_placing(executor):
            # The executor's node serves the rows straight to the client (a client that
            # ignores locations sends the tickets back here and is relayed); one audit
            # entry, whatever the number of endpoints, ended from the node's reports.
            placed = self._audit.placed(planned, executor.endpoints, executor.node, name)
            endpoints = [_flight_endpoint(e) for e in placed]
            return flight.FlightInfo(planned.schema, descriptor, endpoints, -1, -1)
        # A waiting ticket keeps no syntax tree (memory): a federated query re-plans. It
        # carries its group's limits already (DoGet then copies it only if they changed).
        group = self.workload.group_of(principal)
        kept = replace(
            planned,
            query=planned.query.without_ast(),
            timeout_seconds=group.query_timeout_seconds,
            spill_limit_bytes=group.max_spill_bytes,
        )
        ticket = pb.TicketStatementQuery(statement_handle=self._tickets.put(principal.user, kept))
        return _info(descriptor, planned.schema, flightsql.pack(ticket))

    def schema(self, principal: Principal, descriptor: flight.FlightDescriptor) -> pa.Schema:
        command = flightsql.decode_descriptor(descriptor)
        if isinstance(command, _STATEMENTS):
            return self._plan_command(principal, command).schema
        return _metadata_schema(command)

    def _plan_command(self, principal: Principal, command: _Statement) -> PlannedQuery:
        """Plan a statement command in a slot of the user's resource group (planning is
        work too, up to the query timeout), then admit it by its estimated cost."""
        self._refuse_when_draining()
        self.workload.admit_rate(principal.user)
        if isinstance(command, pb.CommandPreparedStatementQuery):
            # a prepared statement whose plan holds: nothing to plan, no planning slot
            # (as for a DoGet ticket whose plan is current)
            kept = self.planner.prepared_plan(principal, command.prepared_statement_handle)
            if kept is not None:
                self._admit_cost(kept)
                return kept
        with self.workload.slot(principal, "planning", _statement_text(command)):
            schema = self.sessions.options(principal).schema
            if isinstance(command, str):
                planned = self.planner.plan(principal, command, default_schema=schema)
            elif isinstance(command, pb.CommandStatementQuery):
                if command.HasField("transaction_id"):
                    raise NotSupported("transactions are not supported: the gateway is read-only")
                planned = self.planner.plan(principal, command.query, default_schema=schema)
            else:
                planned = self.planner.plan_prepared(principal, command.prepared_statement_handle)
        self._admit_cost(planned)
        return planned

    def _executor_for(self, planned: PlannedQuery) -> Executor:
        """Where ``planned`` runs; an engine refusing it (Spark cannot run it exactly) is
        audited like any refusal."""
        try:
            return self.router.executor_for(planned)
        except MeshgateError as exc:
            self._audit.refusal(planned.principal, planned.query.text, exc)
            raise

    def _admit_cost(self, planned: PlannedQuery) -> None:
        if planned.query.explain:
            return  # explaining runs nothing
        try:
            self.workload.admit_cost(planned.principal, planned.cost)
        except MeshgateError as exc:
            self._audit.refusal(planned.principal, planned.query.text, exc)
            raise

    # -- DoGet ------------------------------------------------------------------------

    def stream(
        self, principal: Principal, ticket: bytes, is_cancelled: Callable[[], bool]
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The schema and batches for a ticket from GetFlightInfo (or raw SQL); a query's
        batches run in a slot of the user's resource group, taken (after queueing if need
        be) when the first is read (by the client, or within DoGet for a quick answer),
        within the group's time limit. Metadata and EXPLAIN answers, computed already, take
        no slot."""
        schema, batches, _ = self.answer(principal, ticket, is_cancelled)
        return schema, batches

    def answer(
        self, principal: Principal, ticket: bytes, is_cancelled: Callable[[], bool]
    ) -> Answer:
        """``stream``, and whether its first batch is expected at once (``Answer.quick``)."""
        self._refuse_when_draining()
        slot = self.workload.new_slot(principal, "running", is_cancelled)
        schema, batches = self._stream(principal, ticket, slot)
        inner = self._in_slot(slot if slot.engine else None, batches)
        return Answer(
            schema,
            self._state.watchdog.expiring(inner, slot.group.query_timeout_seconds),
            slot.quick or not slot.engine,
        )

    def _stream(
        self, principal: Principal, ticket: bytes, slot: Slot
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Open the stream a ticket names; ``slot.engine`` is set for what runs a query."""
        relay = self.router.relay
        if relay is not None and ticket.startswith(TICKET_MAGIC):
            slot.engine = "node"
            return relay.open(principal, ticket)
        command = flightsql.decode(ticket)
        if isinstance(command, pb.TicketStatementQuery):
            waiting = self._tickets.take(principal.user, command.statement_handle)
            if waiting.principal != principal:  # the user signed in again with other roles
                raise HandleNotFound("unknown or expired ticket; run the statement again")
            if self.planner.is_current(waiting):
                planned = waiting  # nothing to plan: no planning slot taken
            else:  # re-plans: in a slot, like planning
                with self.workload.slot(principal, "planning", waiting.query.text):
                    planned = self.planner.current(waiting)
        elif isinstance(command, (str, pb.CommandStatementQuery)):
            planned = self._plan_command(principal, command)
        else:
            _refuse_writes(command)
            table = metadata.command_table(
                command, lambda: self.visible.products(principal), self._server_info
            )
            return table.schema, iter(table.to_batches())
        slot.statement = activity_text(planned.query.text)
        if planned.query.explain:
            finish = self._audit.begin(planned)
            table = explain.explanation(
                planned, show_hidden=self._operator_view, engine=self.router.describe(planned)
            )
            finish(StreamStats(rows=table.num_rows, bytes=table.nbytes), "ok", None)
            return table.schema, iter(table.to_batches())
        group = slot.group
        if (
            planned.timeout_seconds != group.query_timeout_seconds
            or planned.spill_limit_bytes != group.max_spill_bytes
        ):
            planned = replace(
                planned,
                timeout_seconds=group.query_timeout_seconds,
                spill_limit_bytes=group.max_spill_bytes,
            )
        executor = self._executor_for(planned)
        slot.engine, slot.heavy = executor.name, self.workload.is_heavy(planned.cost)
        slot.quick = (
            executor.name == EMBEDDED
            and planned.cost is not None
            and planned.cost.rows <= QUICK_ROWS
            and self.workload.has_room_now(slot)  # a query that queues sends its schema first
        )
        return self._audit.streamed(
            planned,
            lambda finish: executor.open(planned, slot.is_cancelled, finish),
            executor.name,
        )

    def _in_slot(
        self, slot: Slot | None, batches: Iterator[pa.RecordBatch]
    ) -> Generator[pa.RecordBatch, None, None]:
        with self.workload.holding(slot) if slot is not None else nullcontext():
            with self._active_lock:
                self._active += 1
            try:
                yield from batches
            finally:
                with self._active_lock:
                    self._active -= 1

    def _server_info(self) -> dict[int, SqlInfoValue]:
        """The SqlInfo this server knows of itself: DuckDB's keywords, its statement limit."""
        if self._keywords is None:
            self._keywords = list(self.snapshot.catalog.engine.keywords())
        return {
            pb.SQL_KEYWORDS: self._keywords,
            pb.SQL_MAX_STATEMENT_LENGTH: self._state.config.gateway.max_statement_bytes,
        }

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise ResourceExhausted(
                "the gateway is shutting down; retry on another instance or in a moment"
            )

    # -- health -----------------------------------------------------------------------

    def health(self, principal: Principal | None = None) -> dict:
        """The gateway's status, with products' health and node reachability as
        ``principal`` may see them (all of it for the operator, without one)."""
        status = "draining" if self.draining else "ok"
        engines = self.router.engine_health(operator=principal is None)
        return {
            "status": status,
            **self.visible.health(principal, self.nodes),
            **({"engines": engines} if engines else {}),
        }

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
        self.planner.bind(principal.user, handle, _batches(reader))
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
            self.planner.close(principal.user, closing.prepared_statement_handle)
            return []
        if action_type in sessions.ACTIONS:
            return [self._session_action(principal, action_type, body)]
        raise NotSupported(f"action {action_type!r} is not supported by this server")

    def _session_action(self, principal: Principal, action_type: str, body: bytes) -> bytes:
        """Flight's session actions: the catalog and schema a client chose, per login."""
        if action_type == sessions.ACTION_SET_SESSION_OPTIONS:
            request = flightsql.decode_message(body, pb.SetSessionOptionsRequest)
            return sessions.set_options(self.sessions, principal, request)
        if action_type == sessions.ACTION_GET_SESSION_OPTIONS:
            return sessions.get_options(self.sessions, principal)
        return sessions.close(self.sessions, principal)

    def _serialized(self, schema: pa.Schema) -> bytes:
        """``schema`` as Arrow IPC bytes, kept while the planner hands out the same schema
        object (a repeated statement's), taken only for that very object."""
        if len(schema) > WIDE_SCHEMA_FIELDS:
            return schema.serialize().to_pybytes()
        return self._schemas.get(schema, lambda: schema.serialize().to_pybytes())

    def _prepare(self, principal: Principal, text: str) -> bytes:
        self.planner.check_room(principal.user)  # before the work of planning
        with self.workload.slot(principal, "planning", text):
            schema = self.sessions.options(principal).schema
            handle, planned = self.planner.prepare(principal, text, schema)
            parameter_schema = self.planner.parameter_schema(planned)
        result = pb.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle,
            dataset_schema=self._serialized(planned.schema),
            parameter_schema=self._serialized(parameter_schema),
        )
        return flightsql.pack(result)


_SCHEMAS_KEPT = 256
#: the SQL text one user's unredeemed tickets may hold (past it, the oldest are dropped)
_TICKET_BYTES_PER_USER = 16 * 1024 * 1024


def _statement_text(command: _Statement) -> str:
    """What ``meshgate top`` shows of a statement being planned."""
    if isinstance(command, str):
        return command
    if isinstance(command, pb.CommandStatementQuery):
        return command.query
    return "(a prepared statement)"


def _refuse_writes(command: object) -> None:
    if isinstance(command, _WRITES):
        raise QueryRefused(_READ_ONLY_MESSAGE)


def _metadata_schema(command: object) -> pa.Schema:
    _refuse_writes(command)
    return metadata.command_schema(command)


def _flight_endpoint(endpoint: Endpoint) -> flight.FlightEndpoint:
    expires = pa.scalar(endpoint.expires, pa.timestamp("us", "UTC"))
    return flight.FlightEndpoint(endpoint.ticket, endpoint.locations, expiration_time=expires)


def _info(
    descriptor: flight.FlightDescriptor, schema: pa.Schema, ticket: bytes
) -> flight.FlightInfo:
    return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)


def _batches(reader: flight.MetadataRecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The record batches of a DoPut, read one at a time (a metadata-only message as an
    empty batch: it counts as a message)."""
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return
        yield (
            chunk.data
            if chunk.data is not None
            else pa.RecordBatch.from_pylist([], schema=reader.schema)
        )
