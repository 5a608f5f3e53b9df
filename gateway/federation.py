"""Mesh mode on the gateway side: domain nodes, sealed tickets, cross-domain fragments.

- ``NodeDirectory`` knows each domain's node replicas, seals tickets for them and fetches
  a ticket's rows from the first replica that answers (failover in order).
- ``split_fragments`` turns a governed query that spans domains into fragments for the
  nodes (pruned product scans, whole single-domain subtrees, partial aggregates: see
  ``gateway.fragments``) and the final query that finishes them in the gateway's DuckDB.
  Policy is applied before splitting: every fragment is already filtered and masked.
- ``run_fragments`` fetches the fragments in parallel and reports the bytes moved against
  what moving the whole governed products would have cost.

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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import pyarrow as pa
import structlog
from pyarrow import flight
from sqlglot import exp, parse_one

from gateway import fragments
from gateway.config import NodesSettings
from gateway.errors import Unavailable
from gateway.fragments import FederatedPlan, Fragment
from gateway.tickets import TicketSealer

log = structlog.get_logger("meshgate.federation")

_HEALTH_CACHE_SECONDS = 1.0
_SIZE_CACHE_SECONDS = 60.0
_SIZE_CACHE_ENTRIES = 256
_SIZE_MEASURING = 4  # whole-product size estimates measured at once, at most


class NodeUnavailable(Unavailable):
    """No replica of a domain's node answered."""


class SizeCache:
    """Estimated sizes of whole governed products, by (domain, governed SQL), for a minute;
    and which estimates are being measured (so that each is measured once at a time)."""

    def __init__(self) -> None:
        self._sizes: dict[tuple[str, str], tuple[float, int]] = {}
        self._measuring: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> int | None:
        cached = self._sizes.get(key)
        return cached[1] if cached is not None and time.monotonic() - cached[0] < _SIZE_CACHE_SECONDS else None

    def put(self, key: tuple[str, str], size: int) -> None:
        if len(self._sizes) >= _SIZE_CACHE_ENTRIES:
            self._sizes.clear()
        self._sizes[key] = (time.monotonic(), size)

    def claim(self, key: tuple[str, str]) -> bool:
        """True (and the caller measures ``key``) unless it is known or being measured."""
        with self._lock:
            if self.get(key) is not None or key in self._measuring or len(self._measuring) >= _SIZE_MEASURING:
                return False
            self._measuring.add(key)
            return True

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._measuring.discard(key)


class FragmentExecutor(Protocol):
    """Runs one fragment of a federated query and returns its (governed) rows."""

    def fetch_table(self, fragment: Fragment, user: str, policy_version: int = 0) -> pa.Table: ...


class NodeDirectory:
    """The node replicas of every node-served domain (a FragmentExecutor)."""

    def __init__(self, settings: NodesSettings) -> None:
        self.sealer = TicketSealer(settings.ticket_key, settings.ticket_ttl_seconds)
        self._locations = {d: tuple(locs) for d, locs in settings.domains.items() if locs}
        self._timeout = settings.connect_timeout_seconds
        self.fragment_pushdown = settings.fragment_pushdown
        self.sizes = SizeCache()
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
    """``gateway.fragments.split_fragments`` for ``nodes``' domains and pushdown setting."""
    return fragments.split_fragments(ast, column_types, frozenset(nodes.domains), nodes.fragment_pushdown)


def run_fragments(
    plan: FederatedPlan, nodes: NodeDirectory, user: str, policy_version: int,
    schema_of: Callable[[str], pa.Schema],
) -> tuple[list[pa.Table], dict[str, object]]:
    """Every fragment's rows (fetched in parallel) and the ``federated_query`` log fields.

    ``bytes_moved`` is the Arrow size of the fragments. What moving the whole governed
    products would cost is measured when that is what moved (``fragment_pushdown = false``:
    ``bytes_whole_products_measured``), otherwise estimated (``bytes_whole_products_estimated``:
    rows counted by the node x Arrow widths of the governed columns, plus the string bytes
    the node sums; ``schema_of`` binds a product's governed SQL to learn its Arrow types).
    An estimate costs the node a scan of the product, so it never delays a query: one not
    yet known is measured in the background (kept a minute) and logged as null this time.
    """
    estimate = plan.pushed_down and bool(plan.whole_products)
    with ThreadPoolExecutor(max_workers=max(1, len(plan.fragments))) as pool:
        tables = list(pool.map(
            lambda f: executor_for(f, nodes).fetch_table(f, user, policy_version), plan.fragments
        ))
    moved = sum(t.nbytes for t in tables)
    fields: dict[str, object] = {
        "pushed_down": plan.pushed_down,
        "fragments": [{"domain": f.domain, "products": list(f.products), "kind": f.kind,
                       "rows": t.num_rows, "bytes": t.nbytes} for f, t in zip(plan.fragments, tables)],
        "bytes_moved": moved,
    }
    if estimate:
        whole = [nodes.sizes.get((w.domain, w.sql)) for w in plan.whole_products]
        for product, size in zip(plan.whole_products, whole):
            if size is None:
                _measure_in_background(nodes, product, user, policy_version, schema_of)
        fields["bytes_whole_products_estimated"] = None if None in whole else sum(whole)
    else:
        fields["bytes_whole_products_measured"] = moved
    return tables, fields


def _measure_in_background(
    nodes: NodeDirectory, product: Fragment, user: str, policy_version: int, schema_of: Callable[[str], pa.Schema]
) -> None:
    key = (product.domain, product.sql)
    if not nodes.sizes.claim(key):
        return

    def measure() -> None:
        try:
            _whole_size(nodes, product, user, policy_version, schema_of)
        finally:
            nodes.sizes.release(key)

    threading.Thread(target=measure, name="whole-product-size", daemon=True).start()


def _whole_size(
    nodes: NodeDirectory, product: Fragment, user: str, policy_version: int, schema_of: Callable[[str], pa.Schema]
) -> int | None:
    """Estimated Arrow bytes of one whole governed product (cached a minute); None when
    the node could not tell (the query itself is not affected)."""
    key = (product.domain, product.sql)
    cached = nodes.sizes.get(key)
    if cached is not None:
        return cached
    try:
        schema = schema_of(product.sql)
        query = Fragment(product.name, product.domain, _size_sql(product.sql, schema), product.products, "size")
        counts = nodes.fetch_table(query, user, policy_version).to_pylist()[0]
    except Exception as exc:  # noqa: BLE001 - an estimate for the log must never fail a query
        log.warning("whole_product_size_unknown", domain=product.domain, error=str(exc).splitlines()[0])
        return None
    rows = int(counts["rows"])
    fixed = sum(_fixed_width(f.type) for f in schema)
    size = rows * fixed + -(-rows // 8) * len(schema) + int(counts["varbytes"] or 0)
    nodes.sizes.put(key, size)
    return size


def _size_sql(sql: str, schema: pa.Schema) -> str:
    """Rows of a governed product and the bytes of its variable-width values (strings,
    blobs; any other non-fixed type by its text length)."""
    varying = [_value_bytes(f) for f in schema if _fixed_width(f.type) == 0 and not pa.types.is_boolean(f.type)]
    total = exp.Sum(this=exp.Add(this=varying[0], expression=exp.Literal.number(4)))
    for term in varying[1:]:
        total = exp.Add(this=total, expression=exp.Sum(this=exp.Add(this=term, expression=exp.Literal.number(4))))
    select = exp.select(
        exp.alias_(exp.Count(this=exp.Star(), big_int=True), "rows", quoted=True),
        exp.alias_(total if varying else exp.Literal.number(0), "varbytes", quoted=True),
    ).from_(exp.Subquery(this=parse_one(sql, dialect="duckdb"), alias=exp.TableAlias(this=exp.to_identifier("p"))))
    return select.sql("duckdb")


def _fixed_width(data_type: pa.DataType) -> int:
    try:
        return max(0, data_type.bit_width // 8)
    except ValueError:
        return 0


def _value_bytes(field: pa.Field) -> exp.Expression:
    """Bytes of one value of a variable-width column: a string's or blob's own length,
    any other type's text length (an approximation)."""
    column = exp.column(field.name, quoted=True)
    if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
        return exp.func("octet_length", column)
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        return exp.func("strlen", column)
    return exp.func("strlen", exp.cast(column, "VARCHAR"))


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
        _sign, digits, exponent = value.as_tuple()
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
