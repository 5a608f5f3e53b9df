"""Mesh mode on the gateway side: domain nodes, sealed tickets, cross-domain fragments
(``NodeDirectory``, ``split_fragments``, ``run_fragments``); design: docs/mesh-federation.md."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Protocol, TypeVar

import duckdb
import pyarrow as pa
import structlog
from pyarrow import flight
from sqlglot import exp

from gateway.config import NodesSettings
from gateway.engine.database import Engine
from gateway.engine.streaming import StreamedTable
from gateway.errors import MeshgateError, QueryFailed, Unavailable, first_line
from gateway.memo import WeightedLRU, held_bytes
from gateway.mesh import dynamic, fragments
from gateway.mesh.actions import ACTION_ENDS, ACTION_HEALTH, ACTION_STATS
from gateway.mesh.ends import EndCollector, ReplicaSilent
from gateway.mesh.fragments import FederatedPlan, Fragment
from gateway.mesh.sizes import EstimateCache, SizeCache, measure_in_background
from gateway.mesh.tickets import KEY_SET_PREFIX, TicketSealer
from gateway.security.principal import Principal

log = structlog.get_logger("meshgate.federation")

_HEALTH_CACHE_SECONDS = 1.0
_WATCH_SECONDS = 0.1  # how often a query's fragment streams are looked at
_IDLE_SECONDS = 1.0  # a stream idle this long has its node's liveness checked (once a second)
_STOP_GRACE_SECONDS = 1.0  # after a cancel or the time limit, before streams are cut
_PLANS_KEPT = 256  # split plans kept per gateway
_PLANS_BYTES = 16 * 1024 * 1024  # ... and the SQL they hold, at most
_PLAN_SQL_BYTES = 64 * 1024  # a longer statement's plan is split each time
_MAX_ESTIMATE = 10**15  # rows: a stream's estimate for DuckDB's planner, at most

_T = TypeVar("_T")
_R = TypeVar("_R")


class Timeline:
    """When the steps of one federated query happened (ms from its start) and what its
    estimates cost: the ``federated_query`` log line's ``timeline``."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: dict[str, float] = {}
        self.estimates = 0
        self.estimate_seconds = 0.0
        self._lock = threading.Lock()

    def ms(self, at: float) -> float:
        return round((at - self.start) * 1000, 1)

    def mark(self, step: str) -> None:
        self.marks[step] = self.ms(time.monotonic())

    def timed(self, function: Callable[[str], _R]) -> Callable[[str], _R]:
        """``function`` (an estimate), its calls counted and timed."""

        def timed(sql: str) -> _R:
            began = time.monotonic()
            try:
                return function(sql)
            finally:
                with self._lock:
                    self.estimates += 1
                    self.estimate_seconds += time.monotonic() - began

        return timed

    def fields(self) -> dict[str, object]:
        return {
            **self.marks,
            "closed": self.ms(time.monotonic()),
            "estimates": self.estimates,
            "estimates_ms": round(self.estimate_seconds * 1000, 1),
        }


class NodeUnavailable(Unavailable):
    """No replica of a domain's node answered."""


def _stopped_streaming(domain: str) -> NodeUnavailable:
    return NodeUnavailable(f"domain {domain}'s node stopped while streaming; the query failed")


class FragmentStream:
    """One fragment's rows as they arrive from its node, counted as they pass; read once."""

    def __init__(
        self,
        fragment: Fragment,
        location: str,
        reader: flight.FlightStreamReader,
        failures: list[MeshgateError] | None = None,
    ) -> None:
        self.fragment = fragment
        self.location = location
        self.requested = time.monotonic()  # when its ticket was sent (set by the opener)
        self.schema = reader.schema
        self.rows = 0
        self.bytes = 0
        self.complete = False
        self.last_batch = time.monotonic()
        self.opened = self.last_batch  # when its first message (the schema) arrived
        self.ended: float | None = None  # when its last batch was read
        self._reader = reader
        self._failures = failures if failures is not None else []
        self._stopped = False

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The fragment's batches; a node failing mid-stream ends them with an error naming
        its domain (also recorded in ``failures``)."""
        try:
            for chunk in self._reader:
                self.last_batch = time.monotonic()
                self.rows += chunk.data.num_rows
                self.bytes += chunk.data.nbytes
                yield chunk.data
        except (pa.ArrowException, OSError) as exc:
            raise self._failed(exc) from exc
        self.complete = True
        self.ended = time.monotonic()

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches())

    def stop(self) -> None:
        """Cut the stream (the node sees the call cancelled); a read waiting on it ends."""
        if not self.complete and not self._stopped:
            self._stopped = True
            self._reader.cancel()

    def fail(self, error: MeshgateError) -> None:
        self._failures.append(error)

    def _failed(self, exc: BaseException) -> MeshgateError:
        domain = self.fragment.domain
        if self._stopped:  # cut by us (the query is over or failed elsewhere), not the node's doing
            return QueryFailed(f"the stream of domain {domain}'s fragment was stopped")
        if isinstance(exc, flight.FlightError):
            error: MeshgateError = _stopped_streaming(domain)
        else:  # the node reported an error of its own (its message is meant for clients)
            message = re.split(r"\. (?:Detail|gRPC client debug context)", first_line(exc))[0]
            error = QueryFailed(
                f"domain {domain}'s node could not run its part of the query: {message}"
            )
        self.fail(error)
        return error


class FragmentExecutor(Protocol):
    """Runs one fragment of a federated query and streams its (governed) rows."""

    def open_stream(
        self,
        fragment: Fragment,
        principal: Principal,
        decisions: Mapping[str, str] | None = None,
        failures: list[MeshgateError] | None = None,
    ) -> FragmentStream: ...


class NodeDirectory:
    """The node replicas of every node-served domain (a FragmentExecutor)."""

    def __init__(self, settings: NodesSettings) -> None:
        assert settings.ticket_key is not None  # mesh mode is on only with a ticket key
        self.sealer = TicketSealer(settings.ticket_key, settings.ticket_ttl_seconds)
        self._locations = {d: tuple(locs) for d, locs in settings.domains.items() if locs}
        self._domain_of = {loc: d for d, locs in self._locations.items() for loc in locs}
        self._timeout = settings.connect_timeout_seconds
        self.fragment_pushdown = settings.fragment_pushdown
        self.dynamic_filters = settings.dynamic_filters
        self.join_groups = settings.join_groups
        self.sizes = SizeCache()
        self.estimates = EstimateCache()
        #: split plans by governed SQL and column types (``split_fragments``), LRU
        self.plans: WeightedLRU[tuple[str, tuple], FederatedPlan] = WeightedLRU(
            _PLANS_BYTES, _PLANS_KEPT
        )
        self.plans_lock = threading.Lock()
        self._clients: dict[str, flight.FlightClient] = {}
        self._ends_clients: dict[str, flight.FlightClient] = {}
        self._checked: dict[str, tuple[float, bool]] = {}
        self._turns = {domain: itertools.count() for domain in self._locations}
        self._lock = threading.Lock()
        #: the end reports of queries whose clients fetch from the nodes
        self.ends = EndCollector(self.locations, self._ends_of)

    def serves(self, domain: str) -> bool:
        return domain in self._locations

    def locations(self, domain: str) -> tuple[str, ...]:
        return self._locations[domain]

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted(self._locations))

    def _client(self, location: str) -> flight.FlightClient:
        with self._lock:
            client = self._clients.get(location)
            if client is None:
                client = self._clients[location] = flight.FlightClient(location)
            return client

    def reachable_locations(self, domain: str) -> list[str]:
        """``domain``'s replicas that answered a health check "ok" within the last second,
        rotated by one at every call (round-robin: each query or endpoint starts at the
        next replica, so replicas share the load; the others stay listed as failover);
        NodeUnavailable (naming the domain) when none does."""
        now = time.monotonic()
        alive = []
        for location in self.locations(domain):
            checked = self._checked.get(location)
            if checked is None or now - checked[0] > _HEALTH_CACHE_SECONDS:
                try:  # a node that is stopping answers, but takes nothing new
                    checked = (now, self._action(location, ACTION_HEALTH)["status"] == "ok")
                except flight.FlightError:
                    checked = (now, False)
                self._checked[location] = checked
            if checked[1]:
                alive.append(location)
        if not alive:
            raise NodeUnavailable(
                f"domain {domain} is unavailable: none of its {len(self.locations(domain))} node(s) "
                "answered, or they are stopping; queries that do not touch it still work"
            )
        start = next(self._turns[domain]) % len(alive)
        return alive[start:] + alive[:start]

    def health(self, domain: str) -> list[dict]:
        """Each replica of ``domain``: reachable or not, and what it reports."""
        report = []
        for location in self.locations(domain):
            try:
                answer = self._action(location, ACTION_HEALTH)
                report.append({"location": location, "reachable": True, **answer})
            except flight.FlightError as exc:
                report.append({"location": location, "reachable": False, "error": first_line(exc)})
        return report

    def stats(self, location: str) -> dict:
        return self._action(location, ACTION_STATS)

    def _action(self, location: str, name: str) -> dict:
        """A node's ``health`` or ``stats`` answer, asked with a control ticket (nodes answer
        those actions to the gateway only)."""
        options = flight.FlightCallOptions(timeout=self._timeout)
        body = self.sealer.seal_control(self._domain_of[location], name)
        results = list(self._client(location).do_action(flight.Action(name, body), options))
        return json.loads(results[0].body.to_pybytes())

    def _ends_of(self, domain: str, location: str) -> Mapping[str, object]:
        """The end reports ``location`` keeps for this gateway process (``ends``, asked
        with a control ticket naming it); ReplicaSilent when it does not answer.

        Asked on a channel of its own, dropped when the call fails: polling a dead replica
        must not grow the reconnection backoff of the channel queries use, nor delay the
        first collection after it comes back."""
        options = flight.FlightCallOptions(timeout=self._timeout)
        body = self.sealer.seal_control(domain, ACTION_ENDS, self.ends.gateway)
        with self._lock:
            client = self._ends_clients.get(location)
            if client is None:
                client = self._ends_clients[location] = flight.FlightClient(location)
        try:
            results = list(client.do_action(flight.Action(ACTION_ENDS, body), options))
            return json.loads(results[0].body.to_pybytes())
        except (flight.FlightError, ValueError, IndexError) as exc:
            with self._lock:
                self._ends_clients.pop(location, None)
            client.close()
            gone = isinstance(exc, flight.FlightUnavailableError)  # refused: the process is gone
            raise ReplicaSilent(f"{location}: {first_line(exc)}", gone=gone) from exc

    def fetch(self, domain: str, sealed: bytes) -> flight.FlightStreamReader:
        """A reader of ``sealed``'s rows from the first replica of ``domain`` that answers
        (see ``start``)."""
        return self.start(domain, sealed)[1]

    def start(self, domain: str, sealed: bytes) -> tuple[str, flight.FlightStreamReader]:
        """The replica of ``domain`` that started streaming ``sealed``'s rows, and the reader.

        Replicas come from ``reachable_locations`` (health cached for a second, not one
        health call per fetch; a stream that started counts as an answer, so steady
        traffic asks for none); a replica that fails to start the stream is marked down
        and the next one is tried.
        """
        errors = []
        for location in self.reachable_locations(domain):
            try:
                reader = self._client(location).do_get(flight.Ticket(sealed))
                reader.schema  # noqa: B018 - the first message: the stream really started
                self._checked[location] = (time.monotonic(), True)  # as good as a health check
                return location, reader
            except flight.FlightUnauthenticatedError:
                raise
            except flight.FlightError as exc:
                self._checked[location] = (time.monotonic(), False)
                errors.append(f"{location}: {first_line(exc)}")
        log.warning("domain_unavailable", domain=domain, errors=errors)
        raise NodeUnavailable(
            f"domain {domain} is unavailable: none of its {len(self.locations(domain))} node(s) "
            "answered; queries that do not touch it still work"
        )

    def open_stream(
        self,
        fragment: Fragment,
        principal: Principal,
        decisions: Mapping[str, str] | None = None,
        failures: list[MeshgateError] | None = None,
    ) -> FragmentStream:
        """``fragment``'s rows, streaming from its domain's node (the node starts at once).
        ``decisions``: the policy fingerprint of each product the query was governed under
        (``gateway.mesh.tickets.decisions_of``); the node refuses the fragment if one changed."""
        requested = time.monotonic()
        sealed = self.sealer.seal(
            fragment.domain,
            fragment.sql,
            fragment.parameters,
            principal,
            fragment.products,
            decisions=decisions,
            key_sets=fragment.key_sets,
        )
        stream = FragmentStream(fragment, *self.start(fragment.domain, sealed), failures)
        stream.requested = requested
        return stream

    def fetch_table(
        self, fragment: Fragment, principal: Principal, decisions: Mapping[str, str] | None = None
    ) -> pa.Table:
        return self.open_stream(fragment, principal, decisions).read_all()

    def gone(self, location: str) -> bool:
        """Whether ``location`` refuses calls (its process is gone). A slow or erring answer
        is not gone: a stream from it fails by itself if it really is."""
        try:
            self._action(location, ACTION_HEALTH)
        except flight.FlightUnavailableError:
            self._checked[location] = (time.monotonic(), False)
            return True
        except flight.FlightError:
            return False
        return False


def inline_parameters(ast: exp.Expr, parameters: tuple[object, ...]) -> exp.Expr:
    """``ast`` with each ``$n`` (the parse step numbers every ``?``) replaced by a typed
    literal of parameter n, so that the query can be split into fragments."""
    return ast.transform(
        lambda node: (
            _literal(parameters[int(node.this) - 1]) if isinstance(node, exp.Placeholder) else node
        )
    )


def split_fragments(
    ast: exp.Expr, column_types: Mapping[str, Mapping[str, str]], nodes: NodeDirectory
) -> FederatedPlan:
    """``gateway.mesh.fragments.split_fragments`` for ``nodes``' domains and pushdown setting.

    Kept by the governed SQL (policy already applied, parameters inlined) and the products'
    column types: a dashboard's repeated statement is not split again (sqlglot's rewrite
    costs tens of milliseconds). The plan is immutable; a policy or schema change changes
    the key."""
    key = (
        ast.sql("duckdb"),
        tuple(sorted((p, tuple(sorted(c.items()))) for p, c in column_types.items())),
    )
    with nodes.plans_lock:
        plan = nodes.plans.get(key)
        if plan is not None:
            return plan
    plan = fragments.split_fragments(
        ast, column_types, frozenset(nodes.domains), nodes.fragment_pushdown, nodes.join_groups
    )
    if held_bytes(key[0]) > _PLAN_SQL_BYTES:
        return plan  # kept, it would hold several copies of a long statement
    weight = held_bytes(key[0]) + held_bytes(plan.final_sql)
    weight += sum(
        held_bytes(name) + held_bytes(kind) for _, pairs in key[1] for name, kind in pairs
    )
    weight += sum(held_bytes(part.sql) for part in (*plan.fragments, *plan.whole_products))
    with nodes.plans_lock:
        nodes.plans.put(key, plan, weight)
    return plan


def run_fragments(
    plan: FederatedPlan,
    nodes: NodeDirectory,
    principal: Principal,
    decisions: Mapping[str, str],
    schema_of: Callable[[str], pa.Schema],
    rows_of: Callable[[str], int | None] = lambda sql: None,
    is_cancelled: Callable[[], bool] = lambda: False,
    timeout_seconds: float = float("inf"),
) -> FragmentStreams:
    """Every fragment's stream, ready for ``stream_sql``, each started as soon as it can
    (docs/mesh-federation.md). A node that is down or fails meanwhile raises its error
    (NodeUnavailable naming the domain) and every other stream is cut."""
    timeline = Timeline()
    if plan.pushed_down:
        for product in plan.whole_products:
            if nodes.sizes.get((product.domain, product.sql)) is None:
                measure_in_background(nodes, product, principal, decisions, schema_of)
    failures: list[MeshgateError] = []
    unfiltered = {f.name: f.sql for f in plan.fragments}  # what DuckDB can estimate
    # planned once per fragment for both uses, and kept a minute (``EstimateCache``)
    rows_of = functools.cache(nodes.estimates.cached(timeline.timed(rows_of)))
    joins = dynamic.key_joins(plan) if plan.pushed_down and nodes.dynamic_filters else []
    involved = {j.probe for j in joins} | {j.build for j in joins}

    def opened(fragment: Fragment, whole: bool) -> _Started:
        stream = nodes.open_stream(fragment, principal, decisions, failures)
        if whole:
            return stream, stream.read_all(), ()
        table = _table(stream, plan, lambda _: rows_of(unfiltered[fragment.name]))
        return stream, table, ()

    futures: dict[str, Future[_Started]] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(plan.fragments))) as pool:
        for fragment in plan.fragments:
            if fragment.name not in involved:
                futures[fragment.name] = pool.submit(opened, fragment, False)
        try:
            order = dynamic.plan_order(plan, joins, rows_of) if joins else []
            timeline.mark("planned")
            keyed = _KeyedFragments(plan, order, futures, functools.cache(schema_of), opened)
            for name in [name for name, _ in order] + sorted(involved):
                if name not in futures:
                    futures[name] = pool.submit(keyed.run, name)
        except BaseException:
            for future in futures.values():
                future.cancel()  # one not started yet never opens
            _cut(list(futures.values()))
            raise
        started = _gather([futures[f.name] for f in plan.fragments], failures)
    timeline.mark("ready")
    streams = [stream for stream, _, _ in started]
    by_name = {s.fragment.name: table for s, table, _ in started}
    made = sorted((x for _, _, made in started for x in made), key=lambda x: x[0])
    applied = [a for _, a in made]  # as the builds' joins were listed
    return FragmentStreams(
        replace(plan, fragments=tuple(s.fragment for s in streams)),
        nodes,
        streams,
        by_name,
        failures,
        is_cancelled,
        timeout_seconds,
        applied,
        timeline,
    )


#: A started fragment: its stream, what the final query reads of it (rows fetched whole,
#: or the stream), and the dynamic filters it was sent (keyed by build order, for the log).
_Started = tuple[
    FragmentStream, pa.Table | StreamedTable, Sequence[tuple[tuple[int, int], dynamic.Applied]]
]


class _KeyedFragments:
    """The fragments dynamic filters involve: each waits for the builds (fetched whole)
    whose keys filter it, in the order ``dynamic.plan_order`` visits them, and starts."""

    def __init__(
        self,
        plan: FederatedPlan,
        order: list[tuple[str, list[dynamic.KeyJoin]]],
        futures: Mapping[str, Future[_Started]],
        schema_of: Callable[[str], pa.Schema],
        opened: Callable[[Fragment, bool], _Started],
    ) -> None:
        self._fragments = {f.name: f for f in plan.fragments}
        self._position = {name: index for index, (name, _) in enumerate(order)}
        self._order = order
        self._futures = futures
        self._schema_of = schema_of
        self._opened = opened

    def _filtered_by(self, name: str) -> list[tuple[int, str, list[tuple[int, dynamic.KeyJoin]]]]:
        """The builds visited before ``name`` whose keys filter it, in order, each with
        its joins to ``name`` (numbered among all its joins)."""
        before = self._position.get(name, len(self._order))
        return [
            (index, build, [(n, j) for n, j in enumerate(uses) if j.probe == name])
            for index, (build, uses) in enumerate(self._order[:before])
            if any(j.probe == name for j in uses)
        ]

    def run(self, name: str) -> _Started:
        fragment = self._fragments[name]
        predicates: dict[str, exp.Expr] = {}
        parameters: tuple[object, ...] = ()
        key_sets: dict[str, pa.Array] = {}
        made: list[tuple[tuple[int, int], dynamic.Applied]] = []
        builds = self._filtered_by(name)
        for _, _, uses in builds:  # known before the keys are: while the builds run
            for _, join in uses:
                self._schema_of(fragment.sql).field(join.probe_column)
        for index, build, uses in builds:
            table = self._futures[build].result()[1]
            assert isinstance(table, pa.Table)  # a build is fetched whole
            for number, join in uses:
                if join.probe_column in predicates:
                    continue
                if join.build_column == dynamic.ONLY_COLUMN and table.num_columns != 1:
                    continue
                keys = table.column(
                    0 if join.build_column == dynamic.ONLY_COLUMN else join.build_column
                )
                probe_type = self._schema_of(fragment.sql).field(join.probe_column).type
                key_set = f"{KEY_SET_PREFIX}{len(key_sets)}"
                made_filter = dynamic.key_predicate(
                    dynamic.probe_column(join.probe_column),
                    keys,
                    probe_type,
                    len(parameters) + 1,
                    key_set,
                )
                if made_filter is None:
                    continue
                predicates[join.probe_column] = made_filter.predicate
                parameters += made_filter.parameters
                if made_filter.key_set is not None:
                    key_sets[key_set] = made_filter.key_set
                products = ",".join(fragment.products)
                applied = dynamic.Applied(
                    products, join.probe_column, build, made_filter.kind, made_filter.distinct
                )
                made.append(((index, number), applied))
        if predicates:
            fragment = dynamic.filtered(fragment, predicates, parameters, key_sets)
        stream, table, _ = self._opened(fragment, name in self._position)
        return stream, table, made


def _finished(futures: Iterable[Future[_T]]) -> list[_T]:
    done = [f for f in futures if f.done() and not f.cancelled()]
    return [f.result() for f in done if f.exception() is None]


def _cut(futures: Sequence[Future[_Started]]) -> None:
    """Stop every fragment stream ``futures`` started: those open now at once (so the
    others end soon), then those still opening, once they are."""
    _stop_all([r[0] for r in _finished(futures)])
    wait(futures)
    _stop_all([r[0] for r in _finished(futures)])


def _gather(futures: Sequence[Future[_Started]], failures: list[MeshgateError]) -> list[_Started]:
    """The results of ``futures``. At the first error, the streams started so far are cut,
    so the others end soon; the error raised is the first node failure recorded, else the
    first error."""
    wait(futures, return_when=FIRST_EXCEPTION)
    if all(f.done() and f.exception() is None for f in futures):
        return [f.result() for f in futures]
    _cut(futures)
    errors = [error for f in futures if (error := f.exception()) is not None]
    raise failures[0] if failures else errors[0]


def _stop_all(streams: Sequence[FragmentStream]) -> None:
    for stream in streams:
        stream.stop()


def _table(
    stream: FragmentStream, plan: FederatedPlan, rows_of: Callable[[str], int | None]
) -> pa.Table | StreamedTable:
    if stream.fragment.name not in plan.read_once:
        return stream.read_all()  # the final query may read it twice, a stream reads once
    return StreamedTable(stream.reader(), rows_of(stream.fragment.sql))


def estimated_rows(engine: Engine, sql: str) -> int | None:
    """The rows DuckDB expects ``sql`` to return, planned (not run) on the gateway's engine:
    what embedded mode would plan the query with; None when it cannot tell."""
    try:
        with engine.cursor() as cursor:
            token = engine.watchdog.watch(
                engine, cursor, lambda: False, engine.settings.query_timeout_seconds
            )
            try:
                plan = json.loads(cursor.sql(sql).explain(format="json"))
            finally:
                engine.watchdog.release(token)
        return min(_plan_rows(plan[0]), _MAX_ESTIMATE)
    except (duckdb.Error, TypeError, ValueError, LookupError, AttributeError):
        return None


def _plan_rows(node: dict) -> int:
    """A plan node's estimated rows. One that shows none (a cross product) counts as the
    product of its inputs: an upper bound, and too many is the safe side for a stream (the
    planner then hashes the other side rather than hold the stream whole)."""
    shown = node.get("extra_info", {}).get("Estimated Cardinality")
    if shown is not None:
        return int(shown)
    rows = 1
    for child in node.get("children", ()):
        rows *= max(1, _plan_rows(child))
    return rows


class FragmentStreams:
    """The fragments of one federated query while it runs: ``tables`` for ``stream_sql``,
    which also gets this object as their ``TableSources``.

    Watched while DuckDB reads (one thread, ``watch``): a node that dies while its stream
    waits to be read fails the query at once (its stream would tell only when read); a
    cancel or the time limit also cuts the streams, which the engine interrupt cannot
    reach while a DuckDB thread waits on one."""

    def __init__(
        self,
        plan: FederatedPlan,
        nodes: NodeDirectory,
        streams: list[FragmentStream],
        tables: dict[str, pa.Table | StreamedTable],
        failures: list[MeshgateError],
        is_cancelled: Callable[[], bool],
        timeout_seconds: float,
        dynamic_filters: Sequence[dynamic.Applied] = (),
        timeline: Timeline | None = None,
    ) -> None:
        self.plan = plan
        self.timeline = timeline or Timeline()
        self.dynamic_filters = tuple(dynamic_filters)
        self.tables = tables
        self._nodes = nodes
        self._streams = streams
        self._failures = failures
        self._is_cancelled = is_cancelled
        self._deadline = time.monotonic() + timeout_seconds
        self._interrupt: Callable[[], None] | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def watch(self, interrupt: Callable[[], None]) -> None:
        self._interrupt = interrupt
        threading.Thread(target=self._watch, name="fragment-streams", daemon=True).start()

    def failure(self) -> MeshgateError | None:
        return self._failures[0] if self._failures else None

    def close(self) -> None:
        """Cut every stream not read to its end; never interrupt the cursor afterwards."""
        with self._lock:
            self._closed.set()
            for stream in self._streams:
                stream.stop()

    @property
    def bytes_moved(self) -> int:
        """The Arrow bytes the fragments moved so far (counted as their batches passed)."""
        return sum(s.bytes for s in self._streams)

    def log_fields(self) -> dict[str, object]:
        """The ``federated_query`` log fields: what each fragment moved (counted as its
        batches passed: ``complete`` says whether it was read to its end) against what
        moving the whole governed products would cost, measured when that is what moved
        (``fragment_pushdown = false``), otherwise estimated (null until known: see
        ``gateway.mesh.sizes``)."""
        moved = self.bytes_moved
        fields: dict[str, object] = {
            "pushed_down": self.plan.pushed_down,
            "fragments": [
                {
                    "domain": s.fragment.domain,
                    "products": list(s.fragment.products),
                    "kind": s.fragment.kind,
                    "rows": s.rows,
                    "bytes": s.bytes,
                    "complete": s.complete,
                    "streamed": isinstance(self.tables[s.fragment.name], StreamedTable),
                    "requested_ms": self.timeline.ms(s.requested),
                    "opened_ms": self.timeline.ms(s.opened),
                    "ended_ms": None if s.ended is None else self.timeline.ms(s.ended),
                }
                for s in self._streams
            ],
            "bytes_moved": moved,
            "rows_moved": sum(s.rows for s in self._streams),
            "dynamic_filters": [applied.fields() for applied in self.dynamic_filters],
            "timeline": self.timeline.fields(),
        }
        if self.plan.pushed_down and self.plan.whole_products:
            whole = [self._nodes.sizes.get((w.domain, w.sql)) for w in self.plan.whole_products]
            known = [size for size in whole if size is not None]
            fields["bytes_whole_products_estimated"] = (
                sum(known) if len(known) == len(whole) else None
            )
        else:
            fields["bytes_whole_products_measured"] = moved
        return fields

    def _watch(self) -> None:
        stop_at = None
        checked: dict[str, float] = {}
        while not self._closed.wait(_WATCH_SECONDS):
            now = time.monotonic()
            if stop_at is None and (self._cancelled() or now > self._deadline):
                stop_at = now + _STOP_GRACE_SECONDS  # the watchdog interrupts DuckDB first
            dead = self._dead_stream(now, checked)
            if dead is not None or (stop_at is not None and now >= stop_at):
                self._stop(dead)
                return

    def _cancelled(self) -> bool:
        try:
            return self._is_cancelled()
        except Exception:  # noqa: BLE001 - a context that cannot answer any more: the call is over
            return True

    def _dead_stream(self, now: float, checked: dict[str, float]) -> FragmentStream | None:
        """A stream idle for a second whose node is gone (each node asked once a second)."""
        for stream in self._streams:
            if stream.complete or now - stream.last_batch < _IDLE_SECONDS:
                continue
            if now - checked.get(stream.location, 0.0) < _IDLE_SECONDS:
                continue
            checked[stream.location] = now
            if self._nodes.gone(stream.location):
                return stream
        return None

    def _stop(self, dead: FragmentStream | None) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            if dead is not None:
                domain = dead.fragment.domain
                log.warning(
                    "domain_unavailable", domain=domain, location=dead.location, streaming=True
                )
                dead.fail(_stopped_streaming(domain))
            for stream in self._streams:
                stream.stop()
            if dead is not None and self._interrupt is not None:
                self._interrupt()


def _literal(value: object) -> exp.Expr:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):  # typed as DuckDB's Python binding types them
        return exp.Cast(this=exp.Literal.number(value), to=exp.DataType.build("BIGINT"))
    if isinstance(value, float):
        return exp.Cast(this=exp.Literal.number(repr(value)), to=exp.DataType.build("DOUBLE"))
    if isinstance(value, decimal.Decimal):
        _sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite: Arrow decimals hold no NaN or infinity
        scale = max(0, -exponent)
        precision = max(len(digits), scale + 1)
        return exp.Cast(
            this=exp.Literal.string(str(value)),
            to=exp.DataType.build(f"DECIMAL({min(precision, 38)}, {min(scale, 38)})"),
        )
    if isinstance(value, dt.datetime):
        return exp.Cast(
            this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("TIMESTAMP")
        )
    if isinstance(value, dt.date):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("DATE"))
    if isinstance(value, bytes):
        return exp.func("unhex", exp.Literal.string(value.hex()))
    return exp.Literal.string(str(value))
