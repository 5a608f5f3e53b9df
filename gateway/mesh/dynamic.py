"""Dynamic filtering (Trino's name): a small join side's keys sent with the big side's
fragment, never beside a product's row filter; design and governance:
docs/mesh-federation.md."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from gateway.mesh.fragments import FederatedPlan, Fragment
from gateway.mesh.join_groups import select_conjuncts, select_sources
from gateway.planning.barrier import add_barrier
from gateway.planning.naming import INTERNAL_CATALOG

#: A build side fetched first when DuckDB expects at most this many rows of it...
BUILD_MAX_ROWS = 100_000
#: ... and the probe side at least this many times more. A fragment an earlier build's
#: keys filter may be a build up to this many times bigger (estimated unfiltered; q5:
#: Asia's customers, filtered by its nations' keys, filter orders).
MIN_RATIO = 2
FILTERED_BUILD_FACTOR = 4
#: Distinct keys sent as an IN list at most; more are sent as their range.
IN_MAX_KEYS = 100_000
#: A build column standing for the build fragment's one column (``SELECT *`` of it).
ONLY_COLUMN = "*"
_WRAPPER = "__dynamic"
_GOVERNED = "__governed"


@dataclass(frozen=True)
class KeyJoin:
    """``probe.probe_column = build.build_column`` between two fragments of the final query."""

    probe: str
    probe_column: str
    build: str
    build_column: str


@dataclass(frozen=True)
class Applied:
    """A dynamic filter sent with a probe fragment, for the ``federated_query`` log line."""

    probe: str
    column: str
    build: str
    kind: str  # "in", "range" or "empty"
    keys: int

    def fields(self) -> dict[str, object]:
        return {
            "probe": self.probe,
            "column": self.column,
            "build": self.build,
            "kind": self.kind,
            "keys": self.keys,
        }


def key_joins(plan: FederatedPlan) -> list[KeyJoin]:
    """Every join of a fragment column with another fragment's column that may filter
    the first (see module doc): equi-joins both ways round, then, through the columns a
    SELECT equates, ``x = outer.y`` in a correlated subquery (it only ever meets the
    outer fragment's values) and ``x IN (SELECT y FROM fragment ...)``."""
    names = {f.name for f in plan.fragments}
    tree = sqlglot.parse_one(plan.final_sql, read="duckdb")
    reads = Counter(t.name for t in tree.find_all(exp.Table) if _fragment_name(t, names))
    joins: list[KeyJoin] = []
    #: per SELECT (outer ones first): the builds each of its columns' values are among
    constrained: dict[int, dict[tuple[str, str], list[tuple[str, str]]]] = {}
    for select in tree.find_all(exp.Select):
        sources = _inner_sources(select, names)
        if not sources:
            continue
        classes = _Classes()
        builds: list[tuple[tuple[str, str], tuple[str, str]]] = []  # (own column, build)
        for conjunct in select_conjuncts(select):
            if isinstance(conjunct, exp.EQ) and _columns(conjunct):
                left, right = conjunct.this, conjunct.expression
                a, b = (left.table, left.name), (right.table, right.name)
                if a[0] in sources and b[0] in sources:
                    classes.join(a, b)
                for own, other in ((a, b), (b, a)):
                    if own[0] not in sources or other[0] in sources:
                        continue
                    outer = _outer_fragment(select, other[0], names)
                    if outer is not None:
                        builds.append((own, (outer, other[1])))
                    # the outer rows that matter passed their SELECT's key joins: so do
                    # the values ``own`` meets (q20: lineitem gets part's keys)
                    enclosing = _outer_select(select, other[0])
                    if enclosing is not None:
                        kept = constrained.get(id(enclosing), {}).get(other, [])
                        builds += [(own, build) for build in kept]
            elif isinstance(conjunct, exp.In) and isinstance(conjunct.this, exp.Column):
                build = _subquery_column(conjunct.args.get("query"), names)
                column = conjunct.this
                if build is not None and column.table in sources:
                    builds.append(((column.table, column.name), build))
        builds += [(a, (sources[b[0]], b[1])) for a, b in classes.pairs()]
        columns = constrained.setdefault(id(select), {})
        for own, (fragment, fragment_column) in builds:
            for member in classes.members(own):
                columns.setdefault(member, []).append((fragment, fragment_column))
                probe = sources.get(member[0])
                if probe is not None and probe != fragment and reads[probe] == 1:
                    joins.append(KeyJoin(probe, member[1], fragment, fragment_column))
    return list(dict.fromkeys(joins))


class _Classes:
    """Columns a SELECT's inner-join conjuncts equate (union-find)."""

    def __init__(self) -> None:
        self._parent: dict[tuple[str, str], tuple[str, str]] = {}
        self._pairs: list[tuple[tuple[str, str], tuple[str, str]]] = []

    def _root(self, column: tuple[str, str]) -> tuple[str, str]:
        while (parent := self._parent.setdefault(column, column)) != column:
            column = parent
        return column

    def join(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        self._pairs += [(a, b), (b, a)]
        self._parent[self._root(a)] = self._root(b)

    def pairs(self) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        return self._pairs

    def members(self, column: tuple[str, str]) -> list[tuple[str, str]]:
        root = self._root(column)
        return [column] + [c for c in list(self._parent) if c != column and self._root(c) == root]


def _columns(eq: exp.EQ) -> bool:
    return isinstance(eq.this, exp.Column) and isinstance(eq.expression, exp.Column)


def _outer_select(select: exp.Select, alias: str) -> exp.Select | None:
    """The nearest enclosing SELECT that reads a source as ``alias``."""
    outer = select.parent_select
    while outer is not None:
        if any(source.alias_or_name == alias for source in select_sources(outer)):
            return outer
        outer = outer.parent_select
    return None


def _outer_fragment(select: exp.Select, alias: str, names: set[str]) -> str | None:
    """The fragment an enclosing SELECT reads as ``alias`` (the nearest that names it)."""
    outer = _outer_select(select, alias)
    if outer is None:
        return None
    source = next(s for s in select_sources(outer) if s.alias_or_name == alias)
    return source.name if isinstance(source, exp.Table) and _fragment_name(source, names) else None


def _subquery_column(query: exp.Expr | None, names: set[str]) -> tuple[str, str] | None:
    """(fragment, column) when ``query`` selects one column straight from a fragment: its
    values are among that fragment's, whatever else the subquery does."""
    if isinstance(query, exp.Subquery):
        query = query.this
    if not isinstance(query, exp.Select) or len(query.expressions) != 1:
        return None
    column = query.expressions[0].unalias()
    if isinstance(column, exp.Star) and len(sources := select_sources(query)) == 1:
        source = sources[0]  # a subquery cut out whole: the fragment's one column
        if isinstance(source, exp.Table) and _fragment_name(source, names):
            return source.name, ONLY_COLUMN
        return None
    if not isinstance(column, exp.Column):
        return None
    for source in select_sources(query):
        if source.alias_or_name == column.table:
            if isinstance(source, exp.Table) and _fragment_name(source, names):
                return source.name, column.name
            return None
    return None


def plan_order(
    plan: FederatedPlan, joins: list[KeyJoin], rows_of: Callable[[str], int | None]
) -> list[tuple[str, list[KeyJoin]]]:
    """The builds to fetch first, smallest estimate first, each with the joins whose
    probes its keys filter (estimates of the unfiltered fragments)."""
    sql = {f.name: f.sql for f in plan.fragments}
    involved = {j.probe for j in joins} | {j.build for j in joins}
    estimates = {name: rows_of(sql[name]) for name in sorted(involved)}
    order: list[tuple[str, list[KeyJoin]]] = []
    for name in sorted(involved, key=lambda n: (estimates[n] is None, estimates[n] or 0, n)):
        rows = estimates[name]
        keyed = any(j.probe == name for _, uses in order for j in uses)
        if rows is None or rows > BUILD_MAX_ROWS * (FILTERED_BUILD_FACTOR if keyed else 1):
            continue
        if not keyed and _whole_product(sql[name]):
            continue  # its keys are all of a product's: waiting for them buys nothing
        uses = [
            j
            for j in joins
            if j.build == name
            and (probe_rows := estimates[j.probe]) is not None
            and probe_rows >= MIN_RATIO * max(rows, 1)
        ]
        if uses:
            order.append((name, uses))
    return order


def _whole_product(sql: str) -> bool:
    """Whether fragment ``sql`` returns every row of one product, unfiltered (no row
    filter, no predicate): a join on its keys drops only rows without a match, which
    its keys would not drop either (q8: every nation, then every supplier)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    if len(list(tree.find_all(exp.Table))) != 1:
        return False
    shaping = (
        exp.Where,
        exp.Join,
        exp.Group,
        exp.Having,
        exp.Limit,
        exp.Offset,
        exp.Qualify,
        exp.TableSample,
    )
    return not any(tree.find(kind) for kind in shaping) and not any(
        select.args.get("distinct") for select in tree.find_all(exp.Select)
    )


class KeyFilter(NamedTuple):
    """A dynamic filter on a probe column: its predicate, the ``$n`` parameters it binds,
    the key set it reads (kind ``in``), its kind and the number of distinct keys."""

    predicate: exp.Expr
    parameters: tuple[object, ...]
    key_set: pa.Array | None
    kind: str
    distinct: int


def key_predicate(
    column: exp.Column,
    keys: pa.ChunkedArray,
    probe_type: pa.DataType,
    number: int,
    key_set: str,
) -> KeyFilter | None:
    """The filter keeping rows whose ``column`` (of ``probe_type``) is among ``keys``:
    parameters from ``$number`` on, its key set the node's table named ``key_set``; None
    when the types are not ones sent (integers of one signedness, strings, dates).

    Kinds: ``in``, a semi-join on the keys, which travel as Arrow and the node registers
    as a table (DuckDB hash-joins it, where binding a list parameter costs it a value
    conversion per key); ``range`` beyond ``IN_MAX_KEYS``; ``empty``, FALSE, when there
    is no key."""
    element = _list_type(keys.type, probe_type)
    if element is None:
        return None
    distinct = pc.unique(keys.drop_null())
    if len(distinct) == 0:
        return KeyFilter(exp.false(), (), None, "empty", 0)
    if len(distinct) <= IN_MAX_KEYS:
        key = exp.cast(exp.column("key", quoted=True), exp.DataType.build(element))
        semi = exp.select(exp.alias_(key, "key")).from_(exp.to_table(key_set, quoted=True))
        return KeyFilter(
            exp.In(this=column, query=semi.subquery()), (), distinct, "in", len(distinct)
        )
    low, high = pc.min_max(distinct).values()
    between = exp.Between(
        this=column,
        low=exp.cast(exp.Placeholder(this=str(number)), element),
        high=exp.cast(exp.Placeholder(this=str(number + 1)), element),
    )
    return KeyFilter(between, (low.as_py(), high.as_py()), None, "range", len(distinct))


def _list_type(build: pa.DataType, probe: pa.DataType) -> str | None:
    """The DuckDB type the keys are bound as: the wider of two integer types of one
    signedness (so the probe column is never cast down), VARCHAR, DATE; else None."""
    if pa.types.is_integer(build) and pa.types.is_integer(probe):
        if pa.types.is_signed_integer(build) != pa.types.is_signed_integer(probe):
            return None
        width = max(build.bit_width, probe.bit_width)
        signed = pa.types.is_signed_integer(build)
        return _INTEGERS[(signed, width)]
    strings = (pa.types.is_string, pa.types.is_large_string)
    if any(f(build) for f in strings) and any(f(probe) for f in strings):
        return "VARCHAR"
    if pa.types.is_date32(build) and pa.types.is_date32(probe):
        return "DATE"
    return None


_INTEGERS = {
    (True, 8): "TINYINT",
    (True, 16): "SMALLINT",
    (True, 32): "INTEGER",
    (True, 64): "BIGINT",
    (False, 8): "UTINYINT",
    (False, 16): "USMALLINT",
    (False, 32): "UINTEGER",
    (False, 64): "UBIGINT",
}


def filtered(
    fragment: Fragment,
    predicates: Mapping[str, exp.Expr],
    parameters: tuple[object, ...],
    key_sets: Mapping[str, pa.Array],
) -> Fragment:
    """``fragment`` returning only the rows that pass ``predicates`` (by output column,
    read through ``probe_column``; binding ``parameters``, reading ``key_sets``),
    behind a barrier unless every filtered column is a bare product column (module doc)."""
    inner = sqlglot.parse_one(fragment.sql, read="duckdb")
    assert isinstance(inner, exp.Query)
    if not all(_bare(inner, column) for column in predicates):
        inner = add_barrier(exp.select(exp.Star()).from_(inner.subquery(_GOVERNED)))
    else:
        predicates = {c: p for c, p in predicates.items() if not _sunk(inner, c, p)}
        if not predicates:
            return replace(
                fragment, sql=inner.sql("duckdb"), parameters=parameters, key_sets=key_sets
            )
    wrapper = exp.select(exp.Star()).from_(inner.subquery(_WRAPPER)).where(*predicates.values())
    return replace(fragment, sql=wrapper.sql("duckdb"), parameters=parameters, key_sets=key_sets)


def _sunk(query: exp.Query, name: str, predicate: exp.Expr) -> bool:
    """Put ``predicate`` on output column ``name`` of ``query`` (a bare product column)
    into the WHERE of the deepest SELECT that still reads governed rows (never the
    product's own, beside its row filter) where it keeps the same rows: DuckDB does not
    move a semi-join below an aggregate, nor always into a join's inputs. True when done."""
    found = _sink_target(query, name)
    column = probe_column(name)
    if found is None or not any(c == column for c in predicate.find_all(exp.Column)):
        return False
    select, target = found
    moved = predicate.copy().transform(lambda n: target.copy() if n == column else n)
    select.where(moved, copy=False)
    return True


def _sink_target(query: exp.Expr, name: str) -> tuple[exp.Select, exp.Column] | None:
    """The deepest SELECT below ``query`` whose WHERE may filter output column ``name``,
    and the column it reads there: each SELECT on the way maps a row to a row (or a
    group, whose key ``name`` is), and reads the column from a subquery."""
    if not isinstance(query, exp.Select) or not _row_preserving(query):
        return None
    projection = next((p for p in query.expressions if p.alias_or_name == name), None)
    target = projection.unalias() if projection is not None else None
    if not isinstance(target, exp.Column) or not target.table:
        return None
    group = query.args.get("group")
    if group is not None and not any(target == key for key in group.expressions):
        return None
    if group is None and any(p.find(exp.AggFunc) for p in query.expressions):
        return None
    source = next((s for s in select_sources(query) if s.alias_or_name == target.table), None)
    if isinstance(source, exp.Table) or source is None:
        return None  # the product itself: its row filter is here, keys do not go beside it
    if not isinstance(source, exp.Subquery):
        return None
    if not _inner_joins(query):  # a source on an outer join's side keeps unmatched rows
        return query, target
    return _sink_target(source.this, target.name) or (query, target)


def _inner_joins(select: exp.Select) -> bool:
    return all(
        not (j.args.get("side") or j.args.get("method") or j.args.get("using"))
        and (j.args.get("kind") or "INNER") in ("INNER", "CROSS")
        for j in select.args.get("joins") or ()
    )


def _row_preserving(select: exp.Select) -> bool:
    """A SELECT whose WHERE may take a filter on its output rows: no DISTINCT, window,
    LIMIT/OFFSET (a barrier), QUALIFY, sample, set-returning or grouping-set clause."""
    if any(select.args.get(a) for a in ("distinct", "limit", "offset", "qualify", "sample")):
        return False
    if any(select.args.get(a) for a in ("laterals", "pivots", "connect", "prewhere")):
        return False
    group = select.args.get("group")
    if group is not None and any(
        group.args.get(a) for a in ("rollup", "cube", "grouping_sets", "totals", "all")
    ):
        return False
    return not any(p.find(exp.Window) for p in select.expressions)


def probe_column(name: str) -> exp.Column:
    """The probe fragment's output column ``name``, as ``filtered``'s predicates read it."""
    return exp.column(name, table=_WRAPPER, quoted=True)


def _bare(query: exp.Query, name: str) -> bool:
    """Whether output column ``name`` of ``query`` is a product column as stored."""
    if not isinstance(query, exp.Select):
        return False
    projection = next((p for p in query.expressions if p.alias_or_name == name), None)
    target = projection.unalias() if projection is not None else None
    if not isinstance(target, exp.Column):
        return False
    for source in select_sources(query):
        if source.alias_or_name != target.table:
            continue
        if isinstance(source, exp.Table):
            return source.catalog == INTERNAL_CATALOG and not source.args.get("joins")
        if isinstance(source, exp.Subquery) and isinstance(source.this, exp.Query):
            return _bare(source.this, target.name)
    return False


def _fragment_name(table: exp.Table, names: set[str]) -> bool:
    return not table.args.get("db") and table.name in names


def _inner_sources(select: exp.Select, names: set[str]) -> dict[str, str]:
    """Alias -> fragment name of ``select``'s fragment sources; empty unless every join is
    a plain inner or cross join."""
    if not _inner_joins(select):
        return {}
    sources = {}
    for source in select_sources(select):
        if (
            isinstance(source, exp.Table)
            and _fragment_name(source, names)
            and not any(source.args.get(a) for a in ("joins", "pivots", "sample", "laterals"))
        ):
            sources[source.alias_or_name] = source.name
    return sources
