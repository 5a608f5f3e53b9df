"""Executors: where a planned query runs, behind one small protocol, chosen by a router.

- ``EmbeddedExecutor``: the gateway's own hardened DuckDB (``gateway.engine``).
- ``NodeExecutor``: one domain's node (mesh mode). It can also *place* the query
  (``endpoints``): sealed tickets located at the node's replicas, split into partition
  endpoints for a row-wise scan, so rows flow node -> client; ``open`` relays them instead.
- ``FederatedExecutor``: a query spanning domains: fragments from the nodes, finished in
  the gateway's DuckDB (``gateway.mesh.federation``).

``Router`` is built once from the config and picks one executor per planned query. An
engine beside the gateway's (Spark through Spark Connect, ``gateway.spark``) is a routed
executor: the queries its route takes go there first, in mesh mode too (a cross-domain
query then runs on Spark instead of being finished in the gateway, and its DuckDB-file
products come from their nodes as governed fragments). Executors know nothing of Flight
SQL (checked by ``lint-imports``): the Flight layer turns an ``Endpoint`` into a
``FlightEndpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeGuard, runtime_checkable

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from gateway.audit.recorder import Finish, Opened
from gateway.config import NodesSettings
from gateway.engine.streaming import (
    PlannedQuery,
    StreamStats,
    closed_outcome,
    stream_batches,
    stream_sql,
)
from gateway.errors import AuthenticationError, HandleNotFound, InvalidQuery, MeshgateError
from gateway.mesh.federation import (
    NodeDirectory,
    NodeUnavailable,
    estimated_rows,
    inline_parameters,
    run_fragments,
    split_fragments,
)
from gateway.mesh.partitions import partition_sqls
from gateway.mesh.tickets import (
    AuditTag,
    NodeTicket,
    TicketError,
    decisions_of,
    stale_products,
)
from gateway.security.principal import Principal

if TYPE_CHECKING:
    from gateway.engine.watchdog import Watchdog
    from policies.engine import ProductAccess

log = structlog.get_logger("meshgate.service")


class Executor(Protocol):
    """Runs a planned (governed) query and streams its Arrow batches."""

    name: str  # for logs and tests: "embedded", "node", "federated", ...

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Finish | None = None,
    ) -> Opened:
        """The result schema and its batches; ``on_finish`` is called when they end
        (whatever happened, once iteration started). Batches should be lazy."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """Where a client fetches part of a result: an opaque ticket, the locations that
    serve it, and when the ticket expires."""

    ticket: bytes
    locations: list[str]
    expires: datetime


@runtime_checkable
class Placing(Protocol):
    """An executor that can hand the client endpoints to fetch from directly."""

    node: str  # recorded in the audit's begin record

    def endpoints(self, planned: PlannedQuery, query_id: str, finish: Finish) -> list[Endpoint]:
        """The endpoints of ``planned``, whose audit record ``query_id`` gets its end
        (``finish``) once where they are served reported it."""
        ...


def is_placing(executor: object) -> TypeGuard[Placing]:
    """``isinstance(executor, Placing)``, without the cost of a runtime protocol check
    (which walks the protocol's members on every call): the same two attributes."""
    return hasattr(executor, "node") and callable(getattr(executor, "endpoints", None))


#: the name of ``EmbeddedExecutor``
EMBEDDED = "embedded"


class EmbeddedExecutor:
    """The gateway's own DuckDB."""

    name = EMBEDDED

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Finish | None = None,
    ) -> Opened:
        """``planned`` executed on its catalog's engine (see ``stream_batches``)."""
        return planned.schema, stream_batches(planned, is_cancelled, on_finish)


AccessOf = Callable[[Principal], Callable[[str], "ProductAccess"]]
"""The policy decision in force now, per product, for a principal."""


class NodeRelay:
    """Proxy mode: streams a sealed node ticket's rows through the gateway."""

    def __init__(self, nodes: NodeDirectory, access_of: AccessOf) -> None:
        self.nodes = nodes
        self._access_of = access_of

    def open(self, principal: Principal, sealed: bytes) -> Opened:
        """Open ``sealed`` for ``principal`` (refused if foreign, tampered, expired or
        stale under the current policy) and stream it from its domain's node."""
        try:
            ticket = self.nodes.sealer.open(sealed)
        except TicketError as exc:
            raise AuthenticationError(f"ticket refused: {exc}") from exc
        if ticket.user != principal.user:
            raise HandleNotFound("unknown or expired ticket; run the statement again")
        try:
            # the node checks again, with its own copy of the policy
            if stale_products(ticket, self._access_of(principal)):
                raise InvalidQuery("the policy changed since this query was planned; run it again")
            reader = self.nodes.fetch(ticket.domain, sealed)
        except MeshgateError as exc:
            self._failed(ticket, exc)
            raise
        return reader.schema, _relayed(reader, ticket.domain, lambda exc: self._failed(ticket, exc))

    def _failed(self, ticket: NodeTicket, exc: MeshgateError) -> None:
        """The relay failed ``ticket``: its query's end record says so (the node, which did
        not serve it or stopped, cannot)."""
        if ticket.audit is not None:
            self.nodes.ends.failed(ticket.audit, ticket.domain, exc.client_message)


class NodeExecutor:
    """One domain's node: sealed tickets for its replicas, or relayed through the gateway."""

    name = "node"

    def __init__(self, domain: str, relay: NodeRelay, split_endpoints: int = 1) -> None:
        self.node = domain
        self._relay = relay
        self._nodes = relay.nodes
        self._split = split_endpoints

    def seal(
        self, planned: PlannedQuery, sql: str | None = None, audit: AuditTag | None = None
    ) -> bytes:
        """A ticket for this domain's node to run ``sql`` (default: ``planned``'s SQL);
        ``audit``: the node reports its end (``gateway.mesh.ends``)."""
        return self._nodes.sealer.seal(
            self.node,
            sql or planned.sql,
            planned.parameters,
            planned.principal,
            planned.products,
            decisions=decisions_of(planned.query.accesses, planned.products),
            audit=audit,
        )

    def endpoints(self, planned: PlannedQuery, query_id: str, finish: Finish) -> list[Endpoint]:
        """Rows flow from the node straight to the client (replicas rotated per endpoint);
        a row-wise scan of one product is split into partition endpoints the client fetches
        in parallel (``gateway.mesh.partitions``). Each ticket carries the audit tag of
        ``query_id``: the node reports each endpoint's end, and ``finish`` records the
        query's once all are in (``gateway.mesh.ends``)."""
        ttl = self._nodes.sealer.ttl_seconds
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        sqls = partition_sqls(planned, self._split) or (planned.sql,)
        ends = self._nodes.ends
        endpoints = [
            Endpoint(
                self.seal(planned, sql, ends.tag(query_id, part, len(sqls))),
                self._nodes.reachable_locations(self.node),
                expires,
            )
            for part, sql in enumerate(sqls)
        ]
        ends.expect(query_id, self.node, len(sqls), finish, ttl)
        return endpoints

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Finish | None = None,
    ) -> Opened:
        """Relayed through the gateway (the ticket is sealed and fetched now), counted."""
        _, batches = self._relay.open(planned.principal, self.seal(planned))
        engine = planned.catalog.engine
        limit = planned.time_limit(engine.settings.query_timeout_seconds)
        return planned.schema, _finishing(
            _conformed(batches, planned.schema), on_finish, engine.watchdog, limit
        )


class FederatedExecutor:
    """A query spanning domains: fragments from the nodes, finished in the gateway."""

    name = "federated"

    def __init__(
        self, nodes: NodeDirectory, with_ast: Callable[[PlannedQuery], PlannedQuery]
    ) -> None:
        """``with_ast``: ``planned`` planned again keeping its syntax tree (a waiting
        ticket keeps none)."""
        self._nodes = nodes
        self._with_ast = with_ast

    def open(
        self,
        planned: PlannedQuery,
        is_cancelled: Callable[[], bool],
        on_finish: Finish | None = None,
    ) -> Opened:
        """The federated batches, lazily: nothing runs before the first is asked for."""
        return planned.schema, self._batches(planned, is_cancelled, on_finish)

    def _batches(
        self, planned: PlannedQuery, is_cancelled: Callable[[], bool], finish: Finish | None
    ) -> Iterator[pa.RecordBatch]:
        if planned.query.ast is None:
            planned = self._with_ast(planned)
        assert planned.query.ast is not None  # kept by the planning just above
        products = {p.key: p for p in planned.query.products}
        plan_ = split_fragments(
            inline_parameters(planned.query.ast, planned.parameters),
            {key: products[key].column_types for key in planned.products},
            self._nodes,
        )
        user = planned.principal.user
        engine = planned.catalog.engine
        streams = run_fragments(
            plan_,
            self._nodes,
            planned.principal,
            decisions_of(planned.query.accesses, planned.products),
            engine.result_schema,
            lambda sql: estimated_rows(engine, sql),
            is_cancelled,
            planned.time_limit(engine.settings.query_timeout_seconds),
        )

        def finished(stats: StreamStats, outcome: str, error: str | None) -> None:
            stats.moved_bytes = streams.bytes_moved  # final: closed before the query ends
            if finish is not None:
                finish(stats, outcome, error)

        try:
            yield from stream_sql(
                engine,
                plan_.final_sql,
                (),
                planned.schema,
                is_cancelled,
                finished,
                tables=streams.tables,
                sources=streams,
                timeout=planned.timeout_seconds,
                user=user,
                products=list(planned.products),
                federated=True,
            )
        finally:  # the fragments streamed with the query: their figures are known now
            streams.close()
            log.info("federated_query", user=user, **streams.log_fields())


class Route(Protocol):
    """Which engine a query goes to ("spark", "duckdb", ...), and why."""

    @property
    def engine(self) -> str: ...

    @property
    def reason(self) -> str: ...


class RoutedExecutor(Executor, Protocol):
    """An executor that decides, per query, whether it takes it (an engine beside the
    gateway's, such as Spark: ``gateway.spark``)."""

    def route(self, planned: PlannedQuery) -> Route: ...

    def reads(self, planned: PlannedQuery) -> str | None:
        """Where the engine gets products of ``planned`` from when it is not where they
        lie (for EXPLAIN: in mesh mode, fragments from the nodes), or None."""
        ...

    def health(self, operator: bool = False) -> str:
        """Whether the engine answers ("reachable" or "unreachable"; the operator also
        sees where it runs)."""
        ...


class Router:
    """Chooses the executor of each planned query; built once at start-up."""

    def __init__(
        self,
        embedded: Executor,
        by_domain: Mapping[str, Executor] | None = None,
        federated: Executor | None = None,
        relay: NodeRelay | None = None,
        engine: RoutedExecutor | None = None,
    ) -> None:
        """``by_domain``: the executor answering a query on that domain alone;
        ``federated``: for a query that reads a ``by_domain`` domain and another one;
        ``engine``: an engine that takes the queries its route gives it, before all others."""
        self.embedded = embedded
        self.by_domain = dict(by_domain or {})
        self.federated = federated
        self.relay = relay
        self.engine = engine

    @classmethod
    def from_config(
        cls,
        settings: NodesSettings,
        access_of: AccessOf,
        with_ast: Callable[[PlannedQuery], PlannedQuery],
        engine: Callable[[NodeDirectory | None], RoutedExecutor] | None = None,
    ) -> Router:
        """Embedded only, or (mesh mode: node domains and a ticket key) one node executor
        per node-served domain and a federated executor; ``engine`` builds the engine
        beside them (Spark), given the node directory in mesh mode."""
        if not (settings.domains and settings.ticket_key):
            return cls(EmbeddedExecutor(), engine=engine(None) if engine else None)
        nodes = NodeDirectory(settings)
        relay = NodeRelay(nodes, access_of)
        by_domain = {d: NodeExecutor(d, relay, settings.split_endpoints) for d in nodes.domains}
        return cls(
            EmbeddedExecutor(),
            by_domain,
            FederatedExecutor(nodes, with_ast),
            relay,
            engine(nodes) if engine else None,
        )

    @property
    def nodes(self) -> NodeDirectory | None:
        """The node directory in mesh mode (health, ``meshgate products``), else None."""
        return self.relay.nodes if self.relay is not None else None

    def executor_for(self, planned: PlannedQuery) -> Executor:
        """EXPLAIN runs embedded; a query the engine's route takes goes there (whatever
        domains it reads: the engine gets node-served products from their nodes); a query
        on one node-served domain goes to its executor; one reading a node-served domain
        and others is federated; the rest is embedded."""
        if planned.query.explain:
            return self.embedded
        if self.engine is not None and self.engine.route(planned).engine == self.engine.name:
            return self.engine
        domains = {key.split(".", 1)[0] for key in planned.products}
        only = self.by_domain.get(next(iter(domains))) if len(domains) == 1 else None
        if only is not None:
            return only
        if self.federated is not None and any(d in self.by_domain for d in domains):
            return self.federated
        return self.embedded

    def engine_health(self, operator: bool = False) -> dict[str, str]:
        """The engine beside the gateway's, by name, and whether it answers (for health)."""
        if self.engine is None:
            return {}
        return {self.engine.name: self.engine.health(operator)}

    def describe(self, planned: PlannedQuery) -> str:
        """Which engine runs ``planned`` (an EXPLAIN: the statement it explains), why, and
        (for the engine beside the gateway's, in mesh mode) which products it gets from
        their nodes."""
        as_run = replace(planned, query=planned.query.evolve(explain=None))
        executor = self.executor_for(as_run)
        name = _ENGINE_NAMES.get(executor.name, executor.name)
        if self.engine is None:
            return name
        described = f"{name}: {self.engine.route(as_run).reason}"
        reads = self.engine.reads(as_run) if executor is self.engine else None
        return f"{described}; {reads}" if reads else described


_ENGINE_NAMES = {
    "embedded": "duckdb (the gateway's own)",
    "node": "duckdb (the domain's node)",
    "federated": "duckdb (federated: fragments from the nodes, joined in the gateway)",
}


def _relayed(
    reader: flight.FlightStreamReader,
    domain: str,
    failed: Callable[[MeshgateError], None] = lambda exc: None,
) -> Iterator[pa.RecordBatch]:
    try:
        for chunk in reader:
            yield chunk.data
    except flight.FlightError as exc:
        error = NodeUnavailable(f"domain {domain}'s node stopped while streaming; the query failed")
        failed(error)
        raise error from exc


def _finishing(
    batches: Iterator[pa.RecordBatch], finish: Finish | None, watchdog: Watchdog, limit: float
) -> Iterator[pa.RecordBatch]:
    """Relayed batches, counted, with ``finish`` called at the end whatever happened
    (``limit``: the query's time limit, for ``closed_outcome``)."""
    stats: StreamStats = StreamStats()
    outcome: str = "ok"
    error: str | None = None
    try:
        for batch in batches:
            stats.rows += batch.num_rows
            stats.bytes += batch.nbytes
            yield batch
    except GeneratorExit:
        outcome, error = closed_outcome(watchdog, limit)
        raise
    except MeshgateError as exc:
        outcome, error = "error", exc.client_message
        raise
    finally:
        if finish is not None:
            finish(stats, outcome, error)


def _conformed(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield (
            batch
            if batch.schema == schema
            else pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        )
