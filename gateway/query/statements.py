"""The gateway's statement planner: statements planned for principals on the current mesh.

``gateway.planning.planner.plan`` is the pure step pipeline (text -> governed ``Query``);
``StatementPlanner`` is the stateful service around it: the plan cache, the result schema,
re-planning a plan the catalog or the policy outdated, prepared statements and their
parameters. Admission (the per-user limiter) and Flight SQL stay with the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pyarrow as pa

from gateway.audit.recorder import AuditRecorder
from gateway.catalog.state import MeshSnapshot, MeshState
from gateway.engine.arrow_types import schema_bytes
from gateway.engine.plan_cost import PlanCost, plan_cost
from gateway.engine.streaming import PlannedQuery, result_schema, result_schema_and_plan
from gateway.engine.visible_rows import VisibleRows
from gateway.errors import InvalidQuery, MeshgateError, QueryFailed
from gateway.memo import held_bytes
from gateway.planning.pivot import with_static_pivots
from gateway.planning.planner import SPARK_STEPS, plan
from gateway.planning.query import PlanContext, PlanLimits, Query, TargetSource
from gateway.planning.shapes import shape_sources
from gateway.planning.stand_ins import StandIn, stand_in_sql
from gateway.query import explain
from gateway.query.bound_cache import BoundCache, parameters_key
from gateway.query.handles import HandleStore
from gateway.query.plan_cache import CachedPlan, PlanCache, PlanKey, plan_key
from gateway.security.principal import Principal

if TYPE_CHECKING:
    from policies.engine import ProductAccess


@dataclass
class PreparedStatement:
    """A statement prepared by one user; parameters arrive later by DoPut."""

    text: str
    parameter_count: int
    parameters: tuple[object, ...] | None = None
    planned: PlannedQuery | None = None  # the prepare-time plan, reused while still current
    #: the session schema at prepare time: its unqualified names keep meaning the same
    default_schema: str | None = None
    #: the Arrow bytes of the bound row
    parameter_bytes: int = 0
    #: the result schema the client was told at prepare time (statements without parameters)
    schema: pa.Schema | None = None

    @property
    def kept_bytes(self) -> int:
        """What this statement keeps: its text, its plan's SQL (the plan shares the text),
        its bound row."""
        query = self.planned.query if self.planned is not None else None
        planned = held_bytes(query.sql) + held_bytes(query.display_sql) if query else 0
        return held_bytes(self.text) + planned + self.parameter_bytes


class StatementPlanner:
    """Plans statements for principals against the mesh's current snapshot."""

    def __init__(
        self,
        state: MeshState,
        audit: AuditRecorder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``audit`` records refusals; ``clock`` (monotonic seconds) ages prepared
        statements."""
        settings = state.config.gateway
        self._state = state
        self._audit = audit
        self._hash_key = state.config.governance.hash_key
        self._limits = PlanLimits(
            max_statement_bytes=settings.max_statement_bytes,
            max_planning_seconds=state.config.engine.query_timeout_seconds,
            max_recursion_depth=state.config.workload.max_recursion_depth,
        )
        self._plans = PlanCache()
        #: result schema and cost per (plan key, typed parameters), while the data holds
        self._bound: BoundCache[tuple[pa.Schema, PlanCost | None]] = BoundCache()
        #: parameter types per plan key (read off the products' shapes: the catalog's)
        self._parameter_types: BoundCache[pa.Schema] = BoundCache()
        self._visible_rows = VisibleRows()
        self._prepared: HandleStore[PreparedStatement] = HandleStore(
            "prepared statement",
            settings.ticket_ttl_seconds * 6,
            capacity=10_000,
            per_owner=settings.max_prepared_statements_per_user,
            full_message=_too_many_prepared,
            clock=clock,
            weigh=lambda prepared: prepared.kept_bytes,
            per_owner_bytes=PREPARED_BYTES_PER_USER,
            bytes_message=_too_many_prepared_bytes,
        )

    def context(
        self,
        principal: Principal,
        snapshot: MeshSnapshot | None = None,
        default_schema: str | None = None,
    ) -> PlanContext:
        """What the pipeline consults for ``principal`` (default: on the current snapshot),
        unqualified product names meaning products of ``default_schema`` when given."""
        snapshot = snapshot or self._state.current
        return PlanContext(
            principal,
            snapshot.catalog,
            snapshot.governor,
            limits=self._limits,
            hash_key=self._hash_key,
            default_schema=default_schema,
        )

    def plan(
        self,
        principal: Principal,
        text: str,
        parameters: Sequence[object] | None = (),
        keep_ast: bool = False,
        default_schema: str | None = None,
    ) -> PlannedQuery:
        """Run ``text`` through the pipeline (or take its cached plan) and compute its
        result schema; a refusal is audited.

        ``parameters=None`` plans with every parameter unbound (NULL), as at prepare time;
        ``keep_ast`` plans afresh and keeps the syntax tree (cached plans have none);
        ``default_schema``: the client's session schema, for unqualified product names.
        """
        started = time.monotonic()
        context = self.context(principal, default_schema=default_schema)
        key = plan_key(principal, text, default_schema)
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
            schema, cost = self._bound_schema(context, key, query, parameters, cached, started)
        except MeshgateError as exc:
            self._audit.refusal(principal, text, exc)
            raise
        if cached is None and not query.explain:
            self._plans.put(
                context.catalog,
                context.governor.version,
                key,
                CachedPlan(
                    query,
                    *(
                        (None, None)  # bound anew each time: by parameters, or by the data
                        if query.parameter_count or query.columns_from_data
                        else (schema, cost)
                    ),
                ),
            )
        return PlannedQuery(
            principal,
            context.catalog,
            query,
            query.product_keys,
            schema,
            tuple(parameters),
            context.governor.version,
            cost,
            default_schema=default_schema,
        )

    def _bound_schema(
        self,
        context: PlanContext,
        key: PlanKey,
        query: Query,
        parameters: Sequence[object],
        cached: CachedPlan | None,
        started: float,
    ) -> tuple[pa.Schema, PlanCost | None]:
        """``_result_schema``, or what it gave for the same statement, principal and typed
        parameters while the data it reads is unchanged (``gateway.query.bound_cache``); for
        products whose files cannot be versioned, the plan cache's (parameterless only)."""
        if query.explain or query.columns_from_data:
            return self._result_schema(context, query, parameters, started)
        versions = self._bound.versions(context.catalog, query.product_keys)
        if versions is None:
            if cached and cached.schema:
                return cached.schema, cached.cost
            return self._result_schema(context, query, parameters, started)
        version = context.governor.version
        bound_key = (key, parameters_key(parameters))
        known = self._bound.get(context.catalog, version, bound_key, versions)
        if known is not None:
            return known
        bound = self._result_schema(context, query, parameters, started)
        size = held_bytes(query.text) + held_bytes(bound_key[1])
        self._bound.put(
            context.catalog, version, bound_key, versions, bound, size, schema_bytes(bound[0])
        )
        return bound

    def _result_schema(
        self, context: PlanContext, query: Query, parameters: Sequence[object], started: float
    ) -> tuple[pa.Schema, PlanCost | None]:
        """The result schema and the estimated cost (``gateway.engine.plan_cost``), bound and
        planned by DuckDB in what is left of the planning time limit (for EXPLAIN: its
        schema, and the cost of the statement it explains)."""
        if query.explain == "policy":
            return explain.POLICY_SCHEMA, None
        limit = context.limits.max_planning_seconds
        remaining = None if limit is None else limit - (time.monotonic() - started)
        if remaining is not None and remaining <= 0:
            raise QueryFailed(f"planning the statement exceeded the time limit of {limit:g} s")
        assert query.sql is not None  # set by generate_sql, the last step
        if query.columns_from_data:  # a dynamic PIVOT: see gateway.planning.pivot
            schema = result_schema(
                context.catalog, query.sql, parameters, query.product_keys, remaining, pooled=False
            )
            _, plan_json = result_schema_and_plan(
                context.catalog,
                with_static_pivots(query.sql),
                parameters,
                query.product_keys,
                remaining,
            )
        else:
            schema, plan_json = result_schema_and_plan(
                context.catalog, query.sql, parameters, query.product_keys, remaining
            )
        if self._hash_key and any(self._hash_key in name for name in schema.names):
            raise InvalidQuery(
                "name every computed column with AS: its automatic name would expose governed SQL"
            )
        cost = plan_cost(plan_json)
        if any(access.row_filter is not None for access in query.accesses.values()):
            cost = replace(cost, rows=self._visible_cost(context, query, parameters, remaining))
        return explain.EXPLAIN_SCHEMA if query.explain else schema, cost

    def _visible_cost(
        self,
        context: PlanContext,
        query: Query,
        parameters: Sequence[object],
        timeout: float | None,
    ) -> float:
        """The rows ``query``'s plan is estimated to produce, estimated from the rows the
        user may see of each row-filtered product (``gateway.planning.stand_ins``), never
        from statistics that count hidden rows."""
        stand_ins = {}
        for product in query.products:
            row_filter = query.accesses[product.key].row_filter
            if row_filter is None:
                continue
            catalogued = context.catalog.product(product.domain, product.name)
            assert catalogued is not None  # resolved against this catalog
            version = self._bound.versions(context.catalog, (product.key,))
            rows = self._visible_rows.count(
                context.catalog, catalogued, row_filter, timeout, version
            )
            stand_ins[(product.domain, product.name)] = StandIn(
                rows, catalogued.column_types, row_filter.sql("duckdb")
            )
        assert query.sql is not None
        costed = with_static_pivots(query.sql) if query.columns_from_data else query.sql
        _, plan_json = result_schema_and_plan(
            context.catalog,
            stand_in_sql(costed, stand_ins),
            parameters,
            query.product_keys,
            timeout,
        )
        return plan_cost(plan_json).rows

    def is_current(self, planned: PlannedQuery) -> bool:
        """Whether ``planned`` was planned against the catalog and policy in force now."""
        snapshot = self._state.current
        return (
            planned.catalog is snapshot.catalog
            and planned.governor_version == snapshot.governor.version
        )

    def current(self, planned: PlannedQuery) -> PlannedQuery:
        """``planned`` again if the catalog or policy changed since it was planned: a ticket
        never outlives the rules it was granted under (refused if its schema changed)."""
        if self.is_current(planned):
            return planned
        replanned = self.plan(
            planned.principal,
            planned.query.text,
            planned.parameters,
            default_schema=planned.default_schema,
        )
        if replanned.schema != planned.schema:
            raise InvalidQuery(
                "the catalog or the policy changed since this query was planned; run it again"
            )
        return replanned

    def with_ast(self, planned: PlannedQuery) -> PlannedQuery:
        """``planned`` planned afresh, keeping its syntax tree (federation splits it)."""
        return self.plan(
            planned.principal,
            planned.query.text,
            planned.parameters,
            keep_ast=True,
            default_schema=planned.default_schema,
        )

    def plan_for_spark(self, planned: PlannedQuery, sources: Mapping[str, TargetSource]) -> Query:
        """``planned``'s statement governed for Spark (the same policy: masks and the
        barrier built for Spark, products read from ``sources``), as a syntax tree for the
        Spark executor to finish."""
        snapshot = self._state.current
        if (
            snapshot.catalog is not planned.catalog
            or snapshot.governor.version != planned.governor_version
        ):  # its fragments and result schema follow the policy it was planned under
            raise InvalidQuery("the policy changed since this query was planned; run it again")
        context = replace(
            self.context(planned.principal, snapshot, planned.default_schema),
            target="spark",
            sources=sources,
        )
        return plan(planned.query.text, context, SPARK_STEPS)

    def access_of(self, principal: Principal) -> Callable[[str], ProductAccess]:
        """The current policy's decision per product for ``principal`` (relay checks)."""
        snapshot = self._state.current
        subject = self.context(principal, snapshot).subject
        return lambda key: snapshot.governor.access(subject, key)

    # -- prepared statements ------------------------------------------------------------

    def check_room(self, user: str) -> None:
        """Refuse now (ResourceExhausted) if ``user`` may not prepare another statement."""
        self._prepared.check_room(user)

    def prepare(
        self, principal: Principal, text: str, default_schema: str | None = None
    ) -> tuple[bytes, PlannedQuery]:
        """Plan ``text`` with its parameters unbound and keep it: its handle and its plan
        (whose ``parameters`` are as many NULLs as the statement has parameters);
        ``default_schema`` as for ``plan``, kept with the statement."""
        planned = self.plan(principal, text, parameters=None, default_schema=default_schema)
        count = len(planned.parameters)
        reusable = None if count else _without_ast(planned)
        handle = self._prepared.put(
            principal.user,
            PreparedStatement(
                text,
                count,
                planned=reusable,
                default_schema=default_schema,
                schema=None if count else planned.schema,
            ),
        )
        return handle, planned

    def parameter_schema(self, planned: PlannedQuery) -> pa.Schema:
        """The parameters of a prepared statement, typed as DuckDB infers them from the
        governed SQL (``$1: BIGINT`` for ``order_id = ?``; null where it cannot tell).

        DuckDB describes a plan only when every scan in it can be described (a Parquet scan
        cannot): the statement is planned again over its products' shapes
        (``gateway.planning.shapes``), the same policy applied, and DuckDB reads the types
        off that plan."""
        count = len(planned.parameters)
        if not count:
            return _NO_PARAMETERS
        snapshot = self._state.current
        key = plan_key(planned.principal, planned.query.text, planned.default_schema)
        version = snapshot.governor.version
        known = self._parameter_types.get(snapshot.catalog, version, key, ())
        if known is not None:
            return known
        products = [
            product
            for key in planned.products
            for product in (snapshot.catalog.product(*key.split(".", 1)),)
            if product is not None
        ]
        context = replace(
            self.context(planned.principal, snapshot, planned.default_schema),
            sources=shape_sources(products),
        )
        try:
            shaped = plan(planned.query.text, context)
        except MeshgateError:  # e.g. the policy changed meanwhile: the types stay unknown
            return pa.schema([pa.field(f"${n}", pa.null()) for n in range(1, count + 1)])
        assert shaped.sql is not None  # set by generate_sql, the last step
        types = snapshot.catalog.engine.parameter_schema(shaped.sql, count)
        self._parameter_types.put(
            snapshot.catalog, version, key, (), types, held_bytes(key[0]), schema_bytes(types)
        )
        return types

    def prepared_plan(self, principal: Principal, handle: bytes) -> PlannedQuery | None:
        """The prepare-time plan of ``handle`` if it holds as it is (no parameters, the
        same principal, the catalog and policy unchanged): nothing to plan; else None."""
        reusable = _reusable_plan(self._prepared.get(principal.user, handle), principal)
        return reusable if reusable is not None and self.is_current(reusable) else None

    def plan_prepared(self, principal: Principal, handle: bytes) -> PlannedQuery:
        """The prepared statement behind ``handle``, planned with its bound parameters (its
        prepare-time plan while current, when it has none)."""
        prepared = self._prepared.get(principal.user, handle)
        reusable = _reusable_plan(prepared, principal)
        if reusable is not None:
            fresh = self.current(reusable)
            if fresh is not reusable:  # the catalog or policy changed: keep the new plan
                self._keep_plan(principal.user, handle, fresh)
            return fresh
        if prepared.parameters is None and prepared.parameter_count:
            raise InvalidQuery(
                f"the prepared statement has {prepared.parameter_count} parameter(s); bind them first"
            )
        planned = self.plan(
            principal,
            prepared.text,
            prepared.parameters or (),
            default_schema=prepared.default_schema,
        )
        if not prepared.parameter_count:  # its plan was dropped at a reload: keep the new one
            if prepared.schema is not None and planned.schema != prepared.schema:
                raise InvalidQuery(
                    "the catalog or the policy changed since this statement was prepared; "
                    "prepare it again"
                )
            self._keep_plan(principal.user, handle, planned)
        return planned

    def _keep_plan(self, user: str, handle: bytes, planned: PlannedQuery) -> None:
        """Keep ``planned`` (without its syntax tree) as ``handle``'s reusable plan, if it
        is still current when the store's lock is held: a reload's ``forget_stale_plans``
        either runs after (and drops it) or already swapped the snapshot (it is not kept).
        Not kept either when the statement was closed meanwhile or the user's statements
        are at their byte bound: it is planned again next time."""
        kept = _without_ast(planned)

        def with_plan(current: PreparedStatement) -> PreparedStatement:
            if not self.is_current(kept):
                return current
            return replace(current, planned=kept)

        self._prepared.update(user, handle, with_plan)

    def forget_stale_plans(self) -> None:
        """Drop the prepare-time plans that a reload made stale (planned again when next
        executed): an open statement never keeps a retired catalog alive."""

        def fresh(prepared: PreparedStatement) -> PreparedStatement:
            if prepared.planned is None or self.is_current(prepared.planned):
                return prepared
            return replace(prepared, planned=None)

        self._prepared.revise(fresh)

    def bind(self, user: str, handle: bytes, batches: Iterable[pa.RecordBatch]) -> None:
        """Bind the one row of parameters that ``batches`` carry to ``user``'s statement
        ``handle`` (read only once the handle is known, and only as far as the limits)."""
        prepared = self._prepared.get(user, handle)
        try:
            table = _one_bound_row(batches)
            if table.num_columns != prepared.parameter_count:
                raise InvalidQuery(
                    f"the statement has {prepared.parameter_count} parameter(s) but "
                    f"{table.num_columns} were bound"
                )
            values = _parameter_values(table)
        except InvalidQuery:
            if prepared.parameters is not None:  # never run with the values of an old bind
                unbound = replace(prepared, parameters=None, planned=None, parameter_bytes=0)
                self._prepared.replace(user, handle, unbound)
            raise
        size = table.get_total_buffer_size()
        bound = replace(prepared, parameters=values, planned=None, parameter_bytes=size)
        self._prepared.replace(user, handle, bound)

    def close(self, user: str, handle: bytes) -> None:
        """Forget ``user``'s prepared statement ``handle``."""
        self._prepared.discard(user, handle)


#: what one user's open prepared statements may hold (text, plans, bound rows)
PREPARED_BYTES_PER_USER = 64 * 1024 * 1024

#: the bytes one row of bound parameters may take (kept with the prepared statement, up to
#: ``max_prepared_statements_per_user`` of them, for as long as the statement lives)
MAX_BOUND_BYTES = 64 * 1024
#: the messages a bind may send (its row, and empty batches around it)
MAX_BIND_MESSAGES = 64


def _one_bound_row(batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """The single row of parameters in ``batches``: a client streaming more rows, bytes
    (the buffers a batch holds, whatever part of them it uses) or messages is refused at
    the first batch past the limit, before the rest of its stream is read."""
    kept: list[pa.RecordBatch] = []
    rows = size = 0
    for count, batch in enumerate(batches, start=1):
        rows += batch.num_rows
        size += batch.get_total_buffer_size()
        if count > MAX_BIND_MESSAGES:
            raise InvalidQuery(
                f"a bind may send at most {MAX_BIND_MESSAGES} batches (one row of parameters)"
            )
        if rows > 1:
            raise InvalidQuery(
                f"bind exactly one row of parameters per execution (got at least {rows})"
            )
        if size > MAX_BOUND_BYTES:
            raise InvalidQuery(
                f"the bound parameters take more than {MAX_BOUND_BYTES:,} bytes; at most "
                f"{MAX_BOUND_BYTES:,} may be bound to a statement"
            )
        if batch.num_rows:
            kept.append(batch)
    if not kept:
        raise InvalidQuery("bind exactly one row of parameters per execution (got 0)")
    return pa.Table.from_batches(kept)


#: the parameter schema of a statement without parameters: one object, whose IPC bytes
#: the service keeps (``SqlService._serialized``)
_NO_PARAMETERS = pa.schema([])


def _without_ast(planned: PlannedQuery) -> PlannedQuery:
    """``planned`` without its syntax tree, to be kept (a cached plan has none already)."""
    query = planned.query.without_ast()
    return planned if query is planned.query else replace(planned, query=query)


def _reusable_plan(prepared: PreparedStatement, principal: Principal) -> PlannedQuery | None:
    """``prepared``'s prepare-time plan if it needs no parameters and governed
    ``principal`` (a token may bring the same user back with other roles or attributes)."""
    planned = prepared.planned
    if planned is None or prepared.parameter_count or planned.principal != principal:
        return None
    return planned


def _too_many_prepared_bytes(user: str, limit: int) -> str:
    """The refusal of a user whose open prepared statements hold too much text."""
    return (
        f"resource exhausted: {user}'s open prepared statements would hold more than "
        f"{limit:,} bytes of SQL and parameters; close some (ClosePreparedStatement; in ADBC, "
        "close the statement or cursor) and try again"
    )


def _too_many_prepared(user: str, limit: int) -> str:
    """The refusal of a user at their limit of open prepared statements."""
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
