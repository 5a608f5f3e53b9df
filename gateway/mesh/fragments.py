"""Cutting a governed cross-domain query into node fragments and a final gateway query
(``split_fragments``); the steps, and why each is exact: docs/mesh-federation.md."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TypeVar

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from gateway.mesh.disjunctions import add_implied_predicates
from gateway.mesh.join_groups import (
    ROW_SHAPING,
    group_same_domain_joins,
    plain_sources,
    projections_count_rows,
    secure_table,
    select_conjuncts,
    select_sources,
)
from gateway.planning.naming import INTERNAL_CATALOG
from gateway.planning.pivot import names_columns_from_data

#: Column references that sqlglot's projection pushdown cannot see (``#3``, ``COLUMNS``,
#: ``*`` modifiers, lambdas): with them, whole governed products move, unpruned.
_UNTRACKED_REFERENCES = (exp.PositionalColumn, exp.Columns, exp.Lambda)

_PARTIAL_PREFIX = "__meshgate_partial_"
_EXACT_AVG_TYPES = exp.DataType.INTEGER_TYPES - {
    exp.DataType.Type.BIT,
    exp.DataType.Type.INT128,
    exp.DataType.Type.UINT128,
    exp.DataType.Type.INT256,
    exp.DataType.Type.UINT256,
}
_EXACT_SUM_TYPES = exp.DataType.INTEGER_TYPES - {exp.DataType.Type.BIT} | {
    exp.DataType.Type.DECIMAL
}
_VOLATILE = (exp.Rand, exp.Randn, exp.Uuid, exp.Anonymous)
_N = TypeVar("_N", bound=exp.Expr)


@dataclass(frozen=True)
class Fragment:
    """One domain's share of a cross-domain query, run on its domain's node.

    ``kind``: ``product`` (one secure subquery), ``subtree`` (a query over the domain's
    products) or ``partial_aggregate`` (pre-aggregated for the gateway to finish)."""

    name: str
    domain: str
    sql: str
    products: tuple[str, ...]
    kind: str = "product"
    #: Values of the SQL's ``$n`` (a dynamic filter's key range: ``gateway.mesh.dynamic``).
    parameters: tuple[object, ...] = ()
    #: Key sets of dynamic filters the SQL reads, by table name (``KEY_SET_PREFIX``).
    key_sets: Mapping[str, pa.Array] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class FederatedPlan:
    """Fragments for the nodes, the final SQL that combines them in the gateway, and the
    whole governed products (what would move without pushdown, for the bytes report)."""

    fragments: tuple[Fragment, ...]
    final_sql: str
    pushed_down: bool
    whole_products: tuple[Fragment, ...] = ()
    #: Fragments the final query reads at most once (see ``read_once``): they may stream.
    read_once: frozenset[str] = frozenset()


@dataclass
class _Cut:
    """A fragment while the plan is being built (its SELECT may still be wrapped)."""

    name: str
    domain: str
    query: exp.Query
    products: tuple[str, ...]
    kind: str

    def freeze(self) -> Fragment:
        return Fragment(self.name, self.domain, self.query.sql("duckdb"), self.products, self.kind)


@dataclass
class _Splitter:
    served: frozenset[str]
    cuts: dict[str, _Cut] = field(default_factory=dict)

    def cut(self, query: exp.Query, domain: str, products: tuple[str, ...]) -> exp.Table:
        name = f"__fragment_{len(self.cuts)}"
        kind = "product" if secure_table(query) is not None else "subtree"
        self.cuts[name] = _Cut(name, domain, query, products, kind)
        return exp.Table(this=exp.to_identifier(name, quoted=True))


def split_fragments(
    ast: exp.Expr,
    column_types: Mapping[str, Mapping[str, str]],
    served: frozenset[str],
    pushdown: bool = True,
    group_joins: bool = True,
) -> FederatedPlan:
    """Split a governed query into node fragments and a final query (see module doc).

    ``column_types`` maps ``domain.product`` to its columns' DuckDB types; ``served`` are
    the domains that have nodes.
    """
    whole = _whole_products(ast, served)
    if not pushdown or any(ast.find_all(*_UNTRACKED_REFERENCES)):
        return _unpruned(ast, served, whole)
    try:
        tree = _prune(ast.copy(), _schema(column_types))
    except (OptimizeError, SqlglotError, RecursionError, KeyError, ValueError):
        return _unpruned(ast, served, whole)  # still correct: whole governed products move
    _sink_subquery_filters(tree, served)
    splitter = _Splitter(served)
    if group_joins:
        group_same_domain_joins(tree, served)
    _cut_subtrees(tree, splitter, root=True)
    _semi_join_distinct(tree, splitter.cuts)
    for select in list(tree.find_all(exp.Select)):
        _pre_aggregate(select, splitter.cuts)
    fragments = tuple(cut.freeze() for cut in splitter.cuts.values())
    return FederatedPlan(fragments, tree.sql("duckdb"), True, whole, read_once(tree, splitter.cuts))


def read_once(tree: exp.Expr, names: Iterable[str]) -> frozenset[str]:
    """The fragment ``names`` that the final query ``tree`` reads at most once.

    Conservative: a fragment named at one place is still read again when that place is in
    a CTE referenced more than once (DuckDB may inline it at each reference) or in a CTE
    referenced from such a place; with a recursive CTE anywhere, every fragment counts as
    read repeatedly (its recursive member runs once per iteration), and so with a dynamic
    PIVOT (DuckDB reads its source for the values, then to pivot). Names are compared
    case-insensitively across scopes, which can only overcount. A fragment read more
    than once is materialised rather than streamed; DuckDB itself refuses to scan a
    consumed stream twice, so a case missed here fails loudly, never silently short.
    """
    if names_columns_from_data(tree) or any(
        with_.args.get("recursive") for with_ in tree.find_all(exp.With)
    ):
        return frozenset()
    references: dict[str, list[exp.Table]] = defaultdict(list)
    for table in tree.find_all(exp.Table):
        if not table.args.get("db"):
            references[table.name.lower()].append(table)

    visiting: set[str] = set()

    @cache
    def runs(name: str) -> int:
        if name in visiting:  # a name seen again inside itself (shadowing): count it as many
            return 2
        visiting.add(name)
        try:
            return sum(_runs_at(table, runs) for table in references[name])
        finally:
            visiting.discard(name)

    return frozenset(name for name in names if runs(name.lower()) <= 1)


def _runs_at(node: exp.Expr, runs) -> int:
    """How often the query runs the place of ``node``: the product of the runs of the
    CTEs around it."""
    total = 1
    ancestor = node.parent
    while ancestor is not None:
        if isinstance(ancestor, exp.CTE):
            total *= runs(ancestor.alias_or_name.lower())
        ancestor = ancestor.parent
    return total


def _schema(column_types: Mapping[str, Mapping[str, str]]) -> dict:
    schema: dict = {INTERNAL_CATALOG: {}}
    for key, columns in column_types.items():
        domain, product = key.split(".", 1)
        schema[INTERNAL_CATALOG].setdefault(domain, {})[product] = dict(columns)
    return schema


def _prune(tree: exp.Expr, schema: dict) -> exp.Expr:
    """Qualify, drop unused columns, push single-source predicates down (with those
    implied by ORs across sources: ``gateway.mesh.disjunctions``), type the tree.

    sqlglot keeps every projection holding an unknown function (it might return a set), so
    masks (``system.main.*`` calls) stand aside as plain columns while projections are
    pruned, and come back before predicates are pushed (a predicate on a masked column must
    see the masked value). An ``EXISTS`` reads no column of its subquery's projections
    (``_exists_selects_one``), which sqlglot would otherwise keep whole."""
    _exists_selects_one(tree)
    tree = qualify(tree, schema=schema, dialect="duckdb", quote_identifiers=True)
    masks = _set_masks_aside(tree)
    tree = pushdown_projections(tree)
    for alias, mask in masks:
        alias.set("this", mask)
    tree = pushdown_predicates(add_implied_predicates(tree), dialect="duckdb")
    masks = _set_masks_aside(tree)  # again: a column read by pushed predicates only goes
    tree = pushdown_projections(tree)
    for alias, mask in masks:
        alias.set("this", mask)
    return annotate_types(tree, schema=schema, dialect="duckdb")


def _exists_selects_one(tree: exp.Expr) -> None:
    """``EXISTS (SELECT * FROM t WHERE ...)`` as ``EXISTS (SELECT 1 FROM t WHERE ...)``
    when its projections cannot change how many rows it has (no DISTINCT, GROUP BY, HAVING
    or QUALIFY; no ORDER BY that could name a projection; no aggregate, window,
    set-returning or unknown function in one: ``projections_count_rows``): the same rows,
    no column kept for them."""
    for exists in tree.find_all(exp.Exists):
        query = exists.this
        if (
            isinstance(query, exp.Select)
            and not any(query.args.get(arg) for arg in (*ROW_SHAPING, "order"))
            and not projections_count_rows(query)
        ):
            query.set("expressions", [exp.Literal.number(1)])


def _set_masks_aside(tree: exp.Expr) -> list[tuple[exp.Alias, exp.Expr]]:
    masks = []
    for select in tree.find_all(exp.Select):
        table = secure_table(select)
        if table is None:
            continue
        for projection in select.expressions:
            if isinstance(projection, exp.Alias) and not isinstance(projection.this, exp.Column):
                masks.append((projection, projection.this))
                projection.set(
                    "this", exp.column(projection.alias, table=table.alias_or_name, quoted=True)
                )
    return masks


def _unpruned(ast: exp.Expr, served: frozenset[str], whole: tuple[Fragment, ...]) -> FederatedPlan:
    tree = ast.copy()
    splitter = _Splitter(served)
    for subquery in list(tree.find_all(exp.Subquery)):
        table = secure_table(subquery.this)
        if table is not None and table.db in served:
            subquery.replace(
                _as_source(splitter.cut(subquery.this, table.db, (_key(table),)), subquery)
            )
    fragments = tuple(cut.freeze() for cut in splitter.cuts.values())
    return FederatedPlan(
        fragments, tree.sql("duckdb"), False, whole, read_once(tree, splitter.cuts)
    )


def _whole_products(ast: exp.Expr, served: frozenset[str]) -> tuple[Fragment, ...]:
    """Every secure subquery of a served domain, as it would move without pushdown."""
    whole: list[Fragment] = []
    for subquery in ast.find_all(exp.Subquery):
        table = secure_table(subquery.this)
        if table is not None and table.db in served:
            whole.append(
                Fragment(
                    f"__whole_{len(whole)}", table.db, subquery.this.sql("duckdb"), (_key(table),)
                )
            )
    return tuple(whole)


# --------------------------------------------------------------------------- 1. subtrees


def _cut_subtrees(node: exp.Expr, splitter: _Splitter, root: bool = False) -> None:
    """Cut, top-down, every maximal closed single-domain subtree (see module doc)."""
    if not root and isinstance(node, exp.Query) and _cuttable_position(node):
        domain = _sole_domain(node, splitter.served)
        if domain is not None:
            _replace_with_fragment(node, splitter.cut(node, domain, _products(node)))
            return
    for child in list(node.iter_expressions()):
        _cut_subtrees(child, splitter)


def _sink_subquery_filters(tree: exp.Expr, served: frozenset[str]) -> None:
    """A condition on one derived table that compares it with a closed subquery of the same
    domain moves into that table, so that both travel as one fragment (q15: the revenue
    per supplier and its maximum are computed on the orders node, which returns the best
    supplier's row, not every supplier's revenue and, apart, their maximum).

    Only where every join is a plain inner or cross join (no outer, semi, anti, ASOF,
    POSITIONAL, NATURAL or USING join, no lateral): the condition then filters the table's
    rows (after their products' row filters, which are inside it) exactly as it filtered
    the joined rows."""
    for select in list(tree.find_all(exp.Select)):
        sources = plain_sources(select)  # plain inner and cross joins only
        derived = {
            alias: source
            for alias, source in (sources or {}).items()
            if isinstance(source, exp.Subquery) and _plain_derived(source)
        }
        for condition in list(select_conjuncts(select)) if derived else ():
            target = _sinkable_into(condition, derived, served)
            if target is not None:
                _filter_source(target, condition.copy())
                condition.replace(exp.true())


def _plain_derived(source: exp.Subquery) -> bool:
    """A derived table of the user's (not a product's secure subquery, whose conditions
    join groups and dynamic filters read) without column aliases, whose projections name
    its columns, each once."""
    if not isinstance(source.this, exp.Query):
        return False
    alias = source.args.get("alias")
    names = source.this.named_selects
    return (
        secure_table(source.this) is None
        and alias is not None
        and not alias.columns
        and bool(names)
        and all(name and name != "*" for name in names)
        and len(set(names)) == len(names)
    )


def _sinkable_into(
    condition: exp.Expr, derived: Mapping[str, exp.Subquery], served: frozenset[str]
) -> exp.Subquery | None:
    """The derived table that ``condition`` may move into, if any (see
    ``_sink_subquery_filters``)."""
    outside = list(condition.walk(prune=lambda node: isinstance(node, exp.Query)))
    subqueries = [node for node in outside if isinstance(node, exp.Query)]
    if not subqueries or any(isinstance(node, _VOLATILE) for node in outside):
        return None
    tables = {node.table for node in outside if isinstance(node, exp.Column)}
    if len(tables) != 1 or (source := derived.get(tables.pop())) is None:
        return None
    domain = _sole_domain(source.this, served)
    if domain is None or any(_sole_domain(query, served) != domain for query in subqueries):
        return None
    return source


def _filter_source(source: exp.Subquery, condition: exp.Expr) -> None:
    """``(q) AS a`` becomes ``(SELECT a.c1, ... FROM (q) AS a WHERE condition) AS a``."""
    alias = source.alias_or_name
    query = source.this
    columns = [exp.column(name, alias, quoted=True) for name in query.named_selects]
    inner = exp.Subquery(
        this=query, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
    )
    source.set("this", exp.select(*columns).from_(inner).where(condition))


def _cuttable_position(query: exp.Query) -> bool:
    parent = query.parent
    if isinstance(parent, exp.Subquery):
        return isinstance(parent.parent, (exp.From, exp.Join)) or _is_expression_subquery(parent)
    return isinstance(parent, (exp.CTE, exp.SetOperation))


def _is_expression_subquery(subquery: exp.Subquery) -> bool:
    """A scalar, IN, EXISTS, ANY/ALL subquery (not a FROM source, not a parenthesised body)."""
    return not isinstance(
        subquery.parent, (exp.From, exp.Join, exp.SetOperation, exp.Subquery, exp.CTE)
    )


def _replace_with_fragment(query: exp.Query, table: exp.Table) -> None:
    parent = query.parent
    if isinstance(parent, exp.Subquery) and isinstance(parent.parent, (exp.From, exp.Join)):
        parent.replace(_as_source(table, parent))
    else:  # CTE body, subquery expression, set-operation branch: same columns, same rows
        query.replace(exp.select(exp.Star()).from_(table))


def _as_source(table: exp.Table, subquery: exp.Subquery) -> exp.Table:
    for arg in ("alias", "pivots", "sample", "laterals", "joins"):
        if subquery.args.get(arg):
            table.set(arg, subquery.args[arg])
    return table


def _sole_domain(query: exp.Query, served: frozenset[str]) -> str | None:
    """The one served domain whose products ``query`` reads, if it is closed over them."""
    tables = list(query.find_all(exp.Table))
    products = [t for t in tables if t.catalog == INTERNAL_CATALOG]
    domains = {t.db for t in products}
    if len(domains) != 1 or (domain := domains.pop()) not in served:
        return None
    local_ctes = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    if any(t.catalog != INTERNAL_CATALOG and (t.db or t.name not in local_ctes) for t in tables):
        return None
    return domain if _is_closed(query) else None


def _is_closed(query: exp.Query) -> bool:
    """No column of ``query`` refers to a source outside it (no correlation)."""
    try:
        scopes = traverse_scope(query.copy())
    except (OptimizeError, SqlglotError):
        return False
    for scope in scopes:
        visible = set()
        ancestor: Scope | None = scope
        while ancestor is not None:
            visible |= set(ancestor.sources) | set(ancestor.selected_sources)
            ancestor = ancestor.parent
        if any(column.table and column.table not in visible for column in scope.columns):
            return False
    return True


def _products(query: exp.Query) -> tuple[str, ...]:
    return tuple(
        sorted({_key(t) for t in query.find_all(exp.Table) if t.catalog == INTERNAL_CATALOG})
    )


def _key(table: exp.Table) -> str:
    return f"{table.db}.{table.name}"


def _semi_join_distinct(tree: exp.Expr, cuts: Mapping[str, _Cut]) -> None:
    """Fragments read only as the one source of an ``EXISTS`` or ``IN`` subquery return
    their distinct rows (see module doc)."""
    references: dict[str, list[exp.Table]] = defaultdict(list)
    for table in tree.find_all(exp.Table):
        if not table.args.get("db") and table.name in cuts:
            references[table.name].append(table)
    for name, tables in references.items():
        cut = cuts[name]
        if len(tables) != 1 or not _semi_join_source(tables[0]):
            continue
        query = cut.query
        if isinstance(query, exp.Select) and (
            query.args.get("distinct") or query.args.get("group")
        ):
            continue  # distinct already
        names = query.named_selects
        columns: list[exp.Expr] = [exp.Star()]
        if names and all(names) and len(set(names)) == len(names):
            columns = [exp.column(n, table=name, quoted=True).as_(n, quoted=True) for n in names]
        alias = exp.TableAlias(this=exp.to_identifier(name, quoted=True))
        cut.query = exp.select(*columns).distinct().from_(exp.Subquery(this=query, alias=alias))
        cut.kind = "subtree"


def _semi_join_source(table: exp.Table) -> bool:
    """``table`` is the one source of an ``EXISTS`` body or ``IN`` subquery whose answer
    depends on the set of its rows only (no aggregate, window, LIMIT, volatile function)."""
    select = table.parent.parent if isinstance(table.parent, exp.From) else None
    if (
        not isinstance(select, exp.Select)
        or select.args.get("joins")
        or select.args.get("laterals")
    ):
        return False
    if any(table.args.get(arg) for arg in ("pivots", "sample", "laterals", "joins")):
        return False
    parent = select.parent
    semi = isinstance(parent, exp.Exists) or (
        isinstance(parent, exp.Subquery)
        and isinstance(parent.parent, exp.In)
        and parent.arg_key == "query"
    )
    return (
        semi
        and not any(select.args.get(arg) for arg in ROW_SHAPING)
        and not select.find(exp.AggFunc, exp.Window, *_VOLATILE)
    )


# --------------------------------------------------------------------------- 2. partial aggregates


def _pre_aggregate(select: exp.Select, cuts: Mapping[str, _Cut]) -> bool:
    """Push a partial aggregate into one fragment source of ``select`` when exact (see
    module doc); True when rewritten."""
    if not _aggregates_cleanly(select):
        return False
    sources = _sources(select)
    if sources is None:
        return False
    aggregates = list(_own(select, exp.AggFunc))
    candidates = [
        (position, source, cut)
        for position, source in enumerate(sources)
        if isinstance(source, exp.Table) and (cut := cuts.get(source.name)) is not None
    ]
    # a join run on a node first: its rows are the many ones
    candidates.sort(key=lambda candidate: not candidate[2].query.args.get("joins"))
    for position, source, cut in candidates:
        alias = source.alias_or_name
        if cut.kind == "partial_aggregate" or _referenced_elsewhere(sources, position, alias):
            continue
        split = _plan_partials(aggregates, alias)
        if split is None or not (
            _preserved(select, position)
            or (_null_supplying(select, position) and all(_ignores_nulls(a, alias) for a in split))
        ):
            continue
        _rewrite(select, cut, alias, aggregates)
        return True
    return False


def _aggregates_cleanly(select: exp.Select) -> bool:
    """A grouped or aggregating SELECT with nothing that pre-aggregation could change."""
    group = select.args.get("group")
    if group is None and not any(_own(select, exp.AggFunc)):
        return False
    if group is not None and (
        group.args.get("all") or group.find(exp.Rollup, exp.Cube, exp.GroupingSets)
    ):
        return False
    if select.args.get("qualify") or select.args.get("laterals") or select.args.get("windows"):
        return False
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on"):
        return False
    return not any(_own(select, exp.Window, exp.Query, *_VOLATILE))


def _sources(select: exp.Select) -> list[exp.Expr] | None:
    """FROM and JOIN sources of ``select``, or None when a join is not plain (SEMI, ASOF,
    NATURAL, USING, ...)."""
    source = select.args.get("from_")
    if source is None:
        return None
    sources = [source.this]
    for join in select.args.get("joins") or ():
        if (
            join.args.get("method")
            or join.args.get("using")
            or join.args.get("kind") not in (None, "", "INNER", "OUTER", "CROSS")
        ):
            return None
        sources.append(join.this)
    if any(s.args.get(arg) for s in sources for arg in ("pivots", "sample", "laterals", "joins")):
        return None
    return sources


def _preserved(select: exp.Select, position: int) -> bool:
    """The source at ``position`` keeps every row through every join (never NULL-extended)."""
    joins = select.args.get("joins") or []
    if position and (joins[position - 1].args.get("side") or "") != "":
        return False
    return all(
        (join.args.get("side") or "") in ("", "LEFT") for join in joins[max(0, position - 1) :]
    )


def _null_supplying(select: exp.Select, position: int) -> bool:
    """The source at ``position`` is the right side of a LEFT join and no later join
    NULL-extends it again: its rows are kept or NULL-extended by that join only."""
    joins = select.args.get("joins") or []
    return (
        position > 0
        and joins[position - 1].args.get("side") == "LEFT"
        and all((join.args.get("side") or "") in ("", "LEFT") for join in joins[position:])
    )


def _ignores_nulls(aggregate: exp.AggFunc, alias: str) -> bool:
    """An aggregate of one column of ``alias``: a row NULL-extended by a LEFT join adds
    nothing to it, so neither does its missing partial (COUNT(*) would count it)."""
    argument = aggregate.this
    return isinstance(argument, exp.Column) and argument.table == alias


def _referenced_elsewhere(sources: list[exp.Expr], position: int, alias: str) -> bool:
    """Another source reads the fragment's columns (DuckDB's implicit lateral joins)."""
    return any(
        column.table == alias
        for i, s in enumerate(sources)
        if i != position
        for column in s.find_all(exp.Column)
    )


def _plan_partials(aggregates: list[exp.AggFunc], alias: str) -> list[exp.AggFunc] | None:
    """The aggregates to split into partials over ``alias``, or None when one is not exact."""
    split: list[exp.AggFunc] = []
    for aggregate in aggregates:
        tables = {column.table for column in aggregate.find_all(exp.Column)}
        if isinstance(aggregate, (exp.Min, exp.Max)) and not isinstance(
            aggregate.parent, exp.Filter
        ):
            if tables and tables <= {alias}:
                split.append(aggregate)
            continue  # MIN/MAX over other sources ignore duplicates: kept as they are
        if not _decomposable(aggregate) or not tables <= {alias}:
            return None
        split.append(aggregate)
    return split


def _decomposable(aggregate: exp.AggFunc) -> bool:
    if not isinstance(aggregate, (exp.Sum, exp.Count, exp.Avg)) or isinstance(
        aggregate.parent, exp.Filter
    ):
        return False
    argument = aggregate.this
    if (
        isinstance(argument, (exp.Distinct, exp.Order))
        or len(list(aggregate.iter_expressions())) != 1
    ):
        return False
    if isinstance(aggregate, exp.Count):
        return True
    allowed = _EXACT_SUM_TYPES if isinstance(aggregate, exp.Sum) else _EXACT_AVG_TYPES
    return argument.type is not None and argument.type.this in allowed


def _rewrite(select: exp.Select, cut: _Cut, alias: str, aggregates: list[exp.AggFunc]) -> None:
    """Wrap the fragment in its partial aggregate; finish each aggregate in ``select``."""
    partials: dict[str, str] = {}

    def partial(function: exp.Expr) -> exp.Column:
        key = function.sql("duckdb")
        if key not in partials:
            partials[key] = f"{_PARTIAL_PREFIX}{len(partials)}"
            projections.append(exp.alias_(function, partials[key], quoted=True))
        return exp.column(partials[key], table=alias, quoted=True)

    projections: list[exp.Expr] = []
    finals = {id(a): _finish(a.copy(), partial) for a in _plan_partials(aggregates, alias) or ()}
    keys = _key_columns(select, alias, finals)
    for aggregate in list(_own(select, exp.AggFunc)):
        if id(aggregate) in finals:
            aggregate.replace(finals[id(aggregate)])
    grouped = [exp.column(name, table=alias, quoted=True) for name in keys]
    wrapped = exp.select(
        *(exp.alias_(c.copy(), c.name, quoted=True) for c in grouped), *projections
    ).from_(
        exp.Subquery(
            this=cut.query, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
        )
    )
    if grouped:
        wrapped = wrapped.group_by(*grouped)
    else:  # one row even over no rows: keep the join empty when the fragment is
        wrapped = wrapped.having(
            exp.GT(this=exp.Count(this=exp.Star(), big_int=True), expression=exp.Literal.number(0))
        )
    cut.query, cut.kind = wrapped, "partial_aggregate"


def _finish(aggregate: exp.AggFunc, partial) -> exp.Expr:
    """The gateway's aggregate of the node's partials, typed as the original."""
    argument = aggregate.this
    if isinstance(aggregate, exp.Count):
        counted = partial(exp.Count(this=argument, big_int=True))
        return exp.cast(
            exp.Coalesce(this=exp.Sum(this=counted), expressions=[exp.Literal.number(0)]), "BIGINT"
        )
    if isinstance(aggregate, exp.Avg):
        total = exp.cast(exp.Sum(this=partial(exp.Sum(this=argument.copy()))), "DOUBLE")
        count = exp.cast(
            exp.Sum(this=partial(exp.Count(this=argument.copy(), big_int=True))), "DOUBLE"
        )
        return exp.Paren(
            this=exp.Div(
                this=total, expression=exp.Nullif(this=count, expression=exp.Literal.number(0))
            )
        )
    return aggregate.__class__(this=partial(aggregate.__class__(this=argument)))


def _key_columns(select: exp.Select, alias: str, finals: Mapping[int, exp.Expr]) -> list[str]:
    """Names of the fragment's columns ``select`` reads outside the split aggregates."""
    names: dict[str, None] = {}
    for column in _own(select, exp.Column):
        if column.table == alias and not any(
            id(a) in finals for a in _agg_ancestors(column, select)
        ):
            names[column.name] = None
    return list(names)


def _agg_ancestors(node: exp.Expr, stop: exp.Expr) -> Iterator[exp.Expr]:
    ancestor = node.parent
    while ancestor is not None and ancestor is not stop:
        if isinstance(ancestor, exp.AggFunc):
            yield ancestor
        ancestor = ancestor.parent


def _own(select: exp.Select, *types: type[_N]) -> Iterator[_N]:
    """Nodes of ``types`` in ``select`` itself: not inside its FROM/JOIN sources nor WITH."""
    sources = {id(s) for s in select_sources(select)} | {id(select.args.get("with_"))}
    stack = [child for child in select.iter_expressions() if id(child) not in sources]
    while stack:
        node = stack.pop()
        if isinstance(node, types):
            yield node
        stack.extend(child for child in node.iter_expressions() if id(child) not in sources)
