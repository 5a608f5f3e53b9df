"""Same-domain joins (and their domain's correlated subqueries) inside a cross-domain
query, grouped so that they run on their node; why it is exact: docs/mesh-federation.md."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlglot import exp

from gateway.planning.naming import INTERNAL_CATALOG

_PLAIN_KINDS = (None, "", "INNER", "CROSS")
_SOURCE_EXTRAS = ("pivots", "sample", "laterals", "joins")
#: SELECT clauses under which the projections or duplicates decide which rows come out.
ROW_SHAPING = ("distinct", "group", "having", "qualify", "windows", "limit", "offset")
#: What in a projection decides how many rows a SELECT yields: aggregates (one row
#: whatever the rows), windows, set-returning functions (``unnest([])`` yields none) and
#: unknown functions (which might return a set).
_COUNTING = (
    exp.AggFunc,
    exp.Window,
    exp.Unnest,
    exp.Explode,  # DuckDB's unnest; posexplode and the like derive from it
    exp.ExplodeOuter,
    exp.Inline,
    exp.GenerateSeries,
    exp.GenerateDateArray,
    exp.GenerateTimestampArray,
    exp.Anonymous,
)


def projections_count_rows(query: exp.Select) -> bool:
    """Whether a projection of ``query`` may decide how many rows it yields (see
    ``_COUNTING``): if so, they may be neither replaced (``SELECT 1``) nor dropped (a
    semi join) without changing an ``EXISTS`` over it."""
    return any(projection.find(*_COUNTING) for projection in query.expressions)


def secure_table(query: exp.Expr) -> exp.Table | None:
    """The product table a secure subquery reads, if ``query`` is one (one product, no
    joins, no nested query)."""
    if not isinstance(query, exp.Select) or query.args.get("joins"):
        return None
    source = query.args.get("from_")
    table = source.this if source else None
    if not isinstance(table, exp.Table) or table.catalog != INTERNAL_CATALOG:
        return None
    if any(node is not query for node in query.find_all(exp.Query)):
        return None
    return table


def group_same_domain_joins(tree: exp.Expr, served: frozenset[str]) -> exp.Expr:
    """``tree`` (qualified, predicates pushed down) with each SELECT's connected same-domain
    secure subqueries grouped into one derived table (see module doc)."""
    for select in list(tree.find_all(exp.Select)):
        _group(select, served)
    return tree


def _group(select: exp.Select, served: frozenset[str]) -> None:
    sources = plain_sources(select)
    if sources is None:
        return
    domains = {alias: _served_domain(source, served) for alias, source in sources.items()}
    conjuncts = list(select_conjuncts(select))
    if any(isinstance(c, exp.Column) for c in conjuncts):
        return  # a bare boolean column would be replaced under the list's feet
    groups: list[tuple[set[str], list[exp.Expr]]] = []
    for group in _connected(conjuncts, domains):
        domain = domains[next(iter(group))]
        assert domain is not None  # only served secure subqueries are grouped
        carried = [c for c in conjuncts if _carried(c, group, domain)]
        if (
            (len(group) > 1 or carried)
            and len(group) < len(sources)
            and _private(select, group, sources, carried)
        ):
            groups.append((group, carried))
    if not groups:
        return
    kept = list(conjuncts)
    replacements: dict[str, exp.Subquery] = {}
    dropped: set[str] = set()
    taken = {alias.lower() for alias in sources}
    for number, (group, carried) in enumerate(groups):
        moved = [c for c in kept if _only_reads(c, group) or any(c is k for k in carried)]
        kept = [c for c in kept if not any(c is m for m in moved)]
        name = _fresh(f"__joined_{number}", taken)
        members = [alias for alias in sources if alias in group]
        replacements[members[0]] = _derived_table(select, name, members, sources, moved)
        dropped.update(members[1:])
    _rebuild(select, sources, replacements, dropped, kept)


def plain_sources(select: exp.Select) -> dict[str, exp.Expr] | None:
    """The SELECT's sources by alias, in order, when every join is a plain inner or cross
    join; None otherwise."""
    source = select.args.get("from_")
    joins = select.args.get("joins") or []
    if source is None or not joins or select.args.get("laterals"):
        return None
    for join in joins:
        if (
            join.args.get("using")
            or join.args.get("method")
            or join.args.get("side")
            or join.args.get("match_condition")
            or join.args.get("kind") not in _PLAIN_KINDS
        ):
            return None
    sources: dict[str, exp.Expr] = {}
    for item in [source.this, *(join.this for join in joins)]:
        alias = item.alias_or_name
        if (
            not isinstance(item, (exp.Subquery, exp.Table))
            or not alias
            or alias in sources
            or any(item.args.get(extra) for extra in _SOURCE_EXTRAS)
        ):
            return None
        sources[alias] = item
    return sources


def _served_domain(source: exp.Expr, served: frozenset[str]) -> str | None:
    if not isinstance(source, exp.Subquery):
        return None
    table = secure_table(source.this)
    return table.db if table is not None and table.db in served else None


def select_sources(select: exp.Select) -> list[exp.Expr]:
    """``select``'s FROM source and its joins' sources, in order (whatever the join kind)."""
    source = select.args.get("from_")
    return ([source.this] if source else []) + [j.this for j in select.args.get("joins") or ()]


def select_conjuncts(select: exp.Select) -> Iterator[exp.Expr]:
    """Every condition of ``select``'s WHERE and of its joins' ON, split at AND (through
    parentheses): the tree's own nodes."""
    conditions = [select.args.get("where")] + [
        j.args.get("on") for j in select.args.get("joins") or ()
    ]
    for condition in conditions:
        if condition is not None:
            node = condition.this if isinstance(condition, exp.Where) else condition
            yield from _flat_and(node)


def _flat_and(node: exp.Expr) -> Iterator[exp.Expr]:
    node = node.unnest()
    if isinstance(node, exp.And):
        for part in node.flatten():
            yield from _flat_and(part)
    else:
        yield node


def _connected(conjuncts: list[exp.Expr], domains: dict[str, str | None]) -> Iterator[set[str]]:
    """Sets of same-domain secure subqueries joined by equality conditions."""
    parent = {alias: alias for alias, domain in domains.items() if domain}

    def root(alias: str) -> str:
        while parent[alias] != alias:
            alias = parent[alias]
        return alias

    for conjunct in conjuncts:
        if not isinstance(conjunct, exp.EQ) or conjunct.find(exp.Query):
            continue
        left, right = _aliases(conjunct.left), _aliases(conjunct.right)
        if len(left) != 1 or len(right) != 1 or left == right:
            continue
        (a,), (b,) = left, right
        if a in parent and b in parent and domains[a] == domains[b]:
            parent[root(a)] = root(b)
    components: dict[str, set[str]] = {}
    for alias in parent:
        components.setdefault(root(alias), set()).add(alias)
    yield from components.values()


def _aliases(node: exp.Expr) -> set[str]:
    return {column.table for column in node.find_all(exp.Column)}


def _only_reads(conjunct: exp.Expr, group: set[str]) -> bool:
    aliases = _aliases(conjunct)
    return bool(aliases) and aliases <= group and not conjunct.find(exp.Query, exp.Window)


def _carried(conjunct: exp.Expr, group: set[str], domain: str) -> bool:
    """A condition with a subquery that may move into ``group`` (see module doc): every
    table it reads is a product of ``domain`` (or a CTE it defines), and its columns that
    are not bound inside it read members of ``group`` only."""
    if not conjunct.find(exp.Query) or conjunct.find(exp.Window):
        return False
    local = {cte.alias_or_name for cte in conjunct.find_all(exp.CTE)}
    for table in conjunct.find_all(exp.Table):
        if table.catalog == INTERNAL_CATALOG:
            if table.db != domain:
                return False
        elif table.db or table.name not in local:
            return False
    free = {
        column.table for column in conjunct.find_all(exp.Column) if not _bound(column, conjunct)
    }
    return bool(free) and free <= group


def _bound(column: exp.Column, conjunct: exp.Expr) -> bool:
    """Whether a SELECT inside ``conjunct`` defines the source ``column`` names."""
    node = column.parent
    while node is not None and node is not conjunct:
        if isinstance(node, exp.Select) and column.table in _source_names(node):
            return True
        node = node.parent
    return False


def _source_names(select: exp.Select) -> set[str]:
    items = select_sources(select) + list(select.args.get("laterals") or [])
    return {item.alias_or_name for item in items}


def _private(
    select: exp.Select,
    group: set[str],
    sources: dict[str, exp.Expr],
    carried: Sequence[exp.Expr] = (),
) -> bool:
    """No nested query names a source like a group member, and no other source reads one
    (DuckDB's implicit lateral joins). Queries of ``carried`` conditions move into the
    group whole, their bindings with them."""
    for alias, source in sources.items():
        if alias not in group and _aliases(source) & group:
            return False
    members = [sources[alias] for alias in group] + list(carried)
    for column in select.find_all(exp.Column):
        if column.db in group and not any(_within(column, member) for member in members):
            return False  # ``alias.struct_column.field``: a reference the rename cannot follow
    for query in select.find_all(exp.Query):
        if query is select or any(_within(query, member) for member in members):
            continue
        names = {t.alias_or_name for t in query.find_all(exp.Table, exp.Subquery)}
        names |= {cte.alias_or_name for cte in query.find_all(exp.CTE)}
        if names & group:
            return False
    return True


def _within(node: exp.Expr, ancestor: exp.Expr) -> bool:
    current: exp.Expr | None = node
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


def _derived_table(
    select: exp.Select,
    name: str,
    members: list[str],
    sources: dict[str, exp.Expr],
    moved: list[exp.Expr],
) -> exp.Subquery:
    """The derived table ``name`` joining ``members`` on ``moved``; every column of a
    member that the rest of ``select`` reads is renamed to come out of it."""
    outputs: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    member_nodes = [sources[alias] for alias in members]
    for column in list(select.find_all(exp.Column)):
        if column.table not in members or any(_within(column, n) for n in member_nodes):
            continue
        if any(_within(column, condition) for condition in moved):
            continue
        key = (column.table, column.name)
        if key not in outputs:
            outputs[key] = _fresh(f"{column.table}_{column.name}", taken)
        renamed = exp.column(outputs[key], table=name, quoted=True)
        renamed.type = column.type
        column.replace(renamed)
    projections = [
        exp.alias_(exp.column(column, table=alias, quoted=True), output, quoted=True)
        for (alias, column), output in outputs.items()
    ] or [exp.alias_(exp.Literal.number(1), "__one", quoted=True)]
    inner = exp.Select(expressions=projections)
    inner.set("from_", exp.From(this=member_nodes[0].copy()))
    names = {alias.lower() for alias in members}
    semis: list[exp.Join] = []
    kept: list[exp.Expr] = []
    for condition in moved:
        join = _semi_join(condition, names)
        if join is None:
            kept.append(condition)
        else:
            semis.append(join)
    kind = "CROSS" if semis else None  # explicit: a comma would bind looser than SEMI JOIN
    inner.set("joins", [exp.Join(this=n.copy(), kind=kind) for n in member_nodes[1:]] + semis)
    if kept:
        inner.set("where", exp.Where(this=exp.and_(*(c.copy() for c in kept))))
    return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(name, quoted=True)))


def _semi_join(condition: exp.Expr, taken: set[str]) -> exp.Join | None:
    """``EXISTS (SELECT ... FROM s WHERE c)`` as ``SEMI JOIN s ON c``, ``NOT EXISTS`` as
    ``ANTI JOIN``: the same rows (a semi or anti join keeps a row by whether any row of
    ``s`` meets ``c``, NULL counting as no), and DuckDB plans an inequality in ``c``
    (q21's ``l2.l_suppkey <> l1.l_suppkey``) as a join condition rather than a correlated
    subquery. Only for one aliased source not named like one in ``taken`` (which it joins),
    with a WHERE of no subquery, nothing that shapes rows (``projections_count_rows``
    among them); ``taken`` gains its name."""
    kind, node = "SEMI", condition.unnest()
    if isinstance(node, exp.Not):
        kind, node = "ANTI", node.this.unnest()
    query = node.this if isinstance(node, exp.Exists) else None
    if not isinstance(query, exp.Select) or any(
        query.args.get(arg) for arg in (*ROW_SHAPING, "with_", "joins", "laterals", "order")
    ):
        return None
    if projections_count_rows(query):
        return None
    source = query.args["from_"].this if query.args.get("from_") else None
    where = query.args.get("where")
    if (
        not isinstance(source, (exp.Subquery, exp.Table))
        or not source.alias_or_name
        or source.alias_or_name.lower() in taken
        or any(source.args.get(extra) for extra in _SOURCE_EXTRAS)
        or (where is not None and where.find(exp.Query))
    ):
        return None
    taken.add(source.alias_or_name.lower())
    on = where.this.copy() if where is not None else exp.true()
    return exp.Join(this=source.copy(), kind=kind, on=on)


def _rebuild(
    select: exp.Select,
    sources: dict[str, exp.Expr],
    replacements: dict[str, exp.Subquery],
    dropped: set[str],
    kept: list[exp.Expr],
) -> None:
    """Sources in their order (a group where its first member was), cross-joined, with the
    conditions that did not move in the WHERE."""
    ordered = [
        replacements.get(alias, source) for alias, source in sources.items() if alias not in dropped
    ]
    select.set("from_", exp.From(this=ordered[0]))
    select.set("joins", [exp.Join(this=source) for source in ordered[1:]])
    select.set("where", exp.Where(this=exp.and_(*kept)) if kept else None)


def _fresh(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{name}_{number}"
    taken.add(candidate.lower())
    return candidate
