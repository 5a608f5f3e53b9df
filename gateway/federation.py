"""Mesh mode on the gateway side: domain nodes, sealed tickets, cross-domain fragments.

- ``NodeDirectory`` knows each domain's node replicas, seals tickets for them and fetches
  a ticket's rows from the first replica that answers (failover in order).
- ``split_fragments`` turns a governed query that spans domains into one fragment per
  node-served product (only the columns the query needs, with the predicates that touch
  that product alone pushed down, by sqlglot's ``qualify``, ``pushdown_projections`` and
  ``pushdown_predicates`` rules; never the full ``optimize()``) and the final query that
  joins the fragments in the gateway's DuckDB. Policy is applied before splitting: every
  fragment is a secure subquery, already filtered and masked.

Where a fragment runs is chosen by ``executor_for``: today a ``FragmentExecutor`` is the
domain's node over Flight; for joins bigger than one machine, a Spark Connect executor
(sqlglot transpiles a fragment to Spark SQL) would implement the same protocol there.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.flight as flight
import structlog
from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.qualify import qualify

from gateway.config import NodesSettings
from gateway.engine import INTERNAL_CATALOG
from gateway.errors import Unavailable
from gateway.tickets import TicketSealer

log = structlog.get_logger("meshgate.federation")

_HEALTH_CACHE_SECONDS = 1.0


class NodeUnavailable(Unavailable):
    """No replica of a domain's node answered."""


@dataclass(frozen=True)
class Fragment:
    """One product's share of a cross-domain query, run on its domain's node."""

    name: str
    domain: str
    sql: str
    products: tuple[str, ...]


@dataclass(frozen=True)
class FederatedPlan:
    """Fragments for the nodes and the final SQL that combines them in the gateway."""

    fragments: tuple[Fragment, ...]
    final_sql: str
    pushed_down: bool


class FragmentExecutor(Protocol):
    """Runs one fragment of a federated query and returns its (governed) rows."""

    def fetch_table(self, fragment: Fragment, user: str, policy_version: int = 0) -> pa.Table: ...


class NodeDirectory:
    """The node replicas of every node-served domain (a FragmentExecutor)."""

    def __init__(self, settings: NodesSettings) -> None:
        self.sealer = TicketSealer(settings.ticket_key, settings.ticket_ttl_seconds)
        self._locations = {d: tuple(locs) for d, locs in settings.domains.items() if locs}
        self._timeout = settings.connect_timeout_seconds
        self._clients: dict[str, flight.FlightClient] = {}
        self._checked: dict[str, tuple[float, bool]] = {}
        self._turns = {domain: itertools.count() for domain in self._locations}
        self._lock = threading.Lock()

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
        """``domain``'s replicas that answered a health check within the last second,
        rotated by one at every call (round-robin: each query or endpoint starts at the
        next replica, so replicas share the load; the others stay listed as failover);
        NodeUnavailable (naming the domain) when none does."""
        now = time.monotonic()
        alive = []
        for location in self.locations(domain):
            checked = self._checked.get(location)
            if checked is None or now - checked[0] > _HEALTH_CACHE_SECONDS:
                try:
                    self._action(location, "health")
                    checked = (now, True)
                except flight.FlightError:
                    checked = (now, False)
                self._checked[location] = checked
            if checked[1]:
                alive.append(location)
        if not alive:
            raise NodeUnavailable(
                f"domain {domain} is unavailable: none of its {len(self.locations(domain))} node(s) "
                "answered; queries that do not touch it still work"
            )
        start = next(self._turns[domain]) % len(alive)
        return alive[start:] + alive[:start]

    def health(self, domain: str) -> list[dict]:
        """Each replica of ``domain``: reachable or not, and what it reports."""
        report = []
        for location in self.locations(domain):
            try:
                answer = self._action(location, "health")
                report.append({"location": location, "reachable": True, **answer})
            except flight.FlightError as exc:
                report.append({"location": location, "reachable": False, "error": str(exc).splitlines()[0]})
        return report

    def stats(self, location: str) -> dict:
        return self._action(location, "stats")

    def _action(self, location: str, name: str) -> dict:
        options = flight.FlightCallOptions(timeout=self._timeout)
        results = list(self._client(location).do_action(flight.Action(name, b""), options))
        return json.loads(results[0].body.to_pybytes())

    def fetch(self, domain: str, sealed: bytes) -> flight.FlightStreamReader:
        """A reader of ``sealed``'s rows from the first replica of ``domain`` that answers.

        Replicas come from ``reachable_locations`` (health cached for a second, not one
        health call per fetch); a replica that fails to start the stream is marked down
        and the next one is tried.
        """
        errors = []
        for location in self.reachable_locations(domain):
            try:
                reader = self._client(location).do_get(flight.Ticket(sealed))
                reader.schema  # noqa: B018 - the first message: the stream really started
                return reader
            except flight.FlightUnauthenticatedError:
                raise
            except flight.FlightError as exc:
                self._checked[location] = (time.monotonic(), False)
                errors.append(f"{location}: {str(exc).splitlines()[0]}")
        log.warning("domain_unavailable", domain=domain, errors=errors)
        raise NodeUnavailable(
            f"domain {domain} is unavailable: none of its {len(self.locations(domain))} node(s) "
            "answered; queries that do not touch it still work"
        )

    def fetch_table(self, fragment: Fragment, user: str, policy_version: int = 0) -> pa.Table:
        sealed = self.sealer.seal(
            fragment.domain, fragment.sql, (), user, fragment.products, policy_version=policy_version
        )
        reader = self.fetch(fragment.domain, sealed)
        try:
            return reader.read_all()
        except flight.FlightUnauthenticatedError:
            raise
        except flight.FlightError as exc:
            raise NodeUnavailable(
                f"domain {fragment.domain}'s node stopped while streaming; the query failed"
            ) from exc


def executor_for(fragment: Fragment, nodes: NodeDirectory) -> FragmentExecutor:
    """The seam where a fragment's executor is chosen (today: its domain's node)."""
    return nodes


def inline_parameters(ast: exp.Expression, parameters: tuple[object, ...]) -> exp.Expression:
    """``ast`` with each ``$n`` (the parse step numbers every ``?``) replaced by a typed
    literal of parameter n, so that the query can be split into fragments."""
    return ast.transform(
        lambda node: _literal(parameters[int(node.this) - 1]) if isinstance(node, exp.Placeholder) else node
    )


def split_fragments(
    ast: exp.Expression, column_types: Mapping[str, Mapping[str, str]], nodes: NodeDirectory
) -> FederatedPlan:
    """Split a governed query into node fragments and a final query (see module doc).

    ``column_types`` maps ``domain.product`` to its columns' DuckDB types.
    """
    schema: dict = {INTERNAL_CATALOG: {}}
    for key, columns in column_types.items():
        domain, product = key.split(".", 1)
        schema[INTERNAL_CATALOG].setdefault(domain, {})[product] = dict(columns)
    optimized, pushed = ast.copy(), True
    if any(ast.find_all(*_UNTRACKED_REFERENCES)):
        optimized, pushed = ast.copy(), False
        return _cut_fragments(optimized, nodes, pushed)
    try:
        optimized = qualify(optimized, schema=schema, dialect="duckdb", quote_identifiers=True)
        optimized = pushdown_projections(optimized)
        optimized = pushdown_predicates(optimized, dialect="duckdb")
    except (OptimizeError, SqlglotError, RecursionError, KeyError, ValueError):
        optimized, pushed = ast.copy(), False  # still correct: whole governed products move
    return _cut_fragments(optimized, nodes, pushed)


#: Column references that sqlglot's projection pushdown cannot see (``#3``, ``COLUMNS``,
#: ``*`` modifiers, lambdas): with them, whole governed products move, unpruned.
_UNTRACKED_REFERENCES = (exp.PositionalColumn, exp.Columns, exp.Lambda)


def _cut_fragments(optimized: exp.Expression, nodes: NodeDirectory, pushed: bool) -> FederatedPlan:
    fragments = []
    for subquery in list(optimized.find_all(exp.Subquery)):
        table = _sole_product_table(subquery)
        if table is None or not nodes.serves(table.db):
            continue
        name = f"__fragment_{len(fragments)}"
        fragments.append(Fragment(name, table.db, subquery.this.sql("duckdb"), (f"{table.db}.{table.name}",)))
        subquery.replace(exp.Table(this=exp.to_identifier(name, quoted=True), alias=subquery.args.get("alias")))
    return FederatedPlan(tuple(fragments), optimized.sql("duckdb"), pushed)


def _sole_product_table(subquery: exp.Subquery) -> exp.Table | None:
    """The product table a secure subquery reads, if it reads exactly one and nothing else."""
    select = subquery.this
    if not isinstance(select, exp.Select) or select.args.get("joins"):
        return None
    source = select.args.get("from_")
    table = source.this if source else None
    if not isinstance(table, exp.Table) or table.catalog != INTERNAL_CATALOG:
        return None
    if any(isinstance(node, exp.Subquery) for node in select.find_all(exp.Subquery)):
        return None
    return table


def _literal(value: object) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):  # typed as DuckDB's Python binding types them
        return exp.Cast(this=exp.Literal.number(value), to=exp.DataType.build("BIGINT"))
    if isinstance(value, float):
        return exp.Cast(this=exp.Literal.number(repr(value)), to=exp.DataType.build("DOUBLE"))
    if isinstance(value, decimal.Decimal):
        sign, digits, exponent = value.as_tuple()
        scale = max(0, -exponent)
        precision = max(len(digits), scale + 1)
        return exp.Cast(
            this=exp.Literal.string(str(value)),
            to=exp.DataType.build(f"DECIMAL({min(precision, 38)}, {min(scale, 38)})"),
        )
    if isinstance(value, dt.datetime):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("TIMESTAMP"))
    if isinstance(value, dt.date):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("DATE"))
    if isinstance(value, bytes):
        return exp.func("unhex", exp.Literal.string(value.hex()))
    return exp.Literal.string(str(value))
