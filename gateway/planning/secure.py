"""Step: replace every product reference by a secure subquery.

``sales.orders AS o`` becomes ``(SELECT <visible columns, masked> FROM memory.sales.orders
WHERE <row filter>) AS o``. Masks and filters sit underneath everything the user wrote,
so joins, aggregates, windows, predicates, ``COLUMNS(*)``, ``#n`` and whole-row
references only ever see filtered, masked values, and denied columns do not exist. The
one product of a statement that its user sees whole reads its view directly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.errors import QueryRefused
from gateway.planning.barrier import (
    ProductColumns,
    Resolver,
    add_barrier,
    leakproof_conjuncts,
    needs_barrier,
    remove_conjuncts,
)
from gateway.planning.naming import product_table
from gateway.planning.query import PlanContext, Query
from policies.engine import ProductAccess
from policies.errors import PolicyExpressionError
from policies.rules import CompiledMask

if TYPE_CHECKING:
    from gateway.catalog.catalog import Product

_CARRIED_TABLE_ARGS = ("pivots", "sample", "laterals", "joins")
#: what a product reference may carry; anything else (time travel, hints, ``ONLY``, ``WITH
#: ORDINALITY``, ...) is refused, whether the product is read whole or through its subquery
_KEPT_TABLE_ARGS = frozenset({"this", "db", "catalog", "alias", *_CARRIED_TABLE_ARGS})
#: how an error names a refused table argument (others: the argument's name, upper case)
_CLAUSES = {
    "when": "AT (time travel)",
    "version": "a table version (time travel)",
    "system_time": "FOR SYSTEM_TIME",
    "ordinality": "WITH ORDINALITY",
    "rows_from": "ROWS FROM",
    "indexed": "INDEXED BY",
    "hints": "a table hint",
}


def governed_columns(
    access: ProductAccess,
    column_types: dict[str, str],
    typed_nulls: bool = False,
    target: str = "duckdb",
    product: str = "",
) -> list[exp.Expr]:
    """The visible columns, masked where a mask applies (as ``target`` computes it); with
    ``typed_nulls`` each column is a NULL of its type instead (to learn the result types
    without reading data). A mask ``target`` cannot compute exactly refuses the query."""
    projections: list[exp.Expr] = []
    for column in access.visible_columns:
        data_type = duckdb_type(column_types[column.name])
        value: exp.Expr = (
            exp.Cast(this=exp.Null(), to=data_type.copy())
            if typed_nulls
            else exp.column(column.name, quoted=True)
        )
        if column.mask is not None:
            value = _masked(column.mask, value, data_type, target, f"{product}.{column.name}")
        if column.mask is not None or typed_nulls:
            projections.append(exp.alias_(value, column.name, quoted=True))
        else:
            projections.append(value)
    return projections


def _masked(
    mask: CompiledMask, value: exp.Expr, data_type: exp.DataType, target: str, column: str
) -> exp.Expr:
    if target != "spark":
        return mask.build(value, data_type)
    if mask.build_spark is None:
        raise QueryRefused(
            f"the mask {mask.spec!r} on {column} has no exact Spark equivalent; this query "
            "cannot run on Spark"
        )
    try:
        return mask.build_spark(value, data_type)
    except PolicyExpressionError as exc:
        raise QueryRefused(f"{exc} ({column}); this query cannot run on Spark") from exc


def secure_subquery(
    domain: str,
    name: str,
    access: ProductAccess,
    column_types: dict[str, str],
    leakproof: list[exp.Expr] | None = None,
    barrier: bool = False,
    target: str = "duckdb",
    source: exp.Expr | None = None,
) -> exp.Select:
    """The filtered, masked SELECT standing in for one product, reading ``source`` (the
    engine's own view by default); with ``barrier``, behind ``target``'s security barrier,
    with ``leakproof`` user conjuncts beside the row filter (see
    ``gateway.planning.barrier``)."""
    projections = governed_columns(access, column_types, target=target, product=f"{domain}.{name}")
    table = source.copy() if source is not None else product_table(domain, name)
    select = exp.select(*projections, copy=False).from_(table, copy=False)
    conditions = [access.row_filter.copy()] if access.row_filter is not None else []
    conditions += leakproof or []
    if conditions:
        select = select.where(exp.and_(*conditions, copy=False), copy=False)
    return add_barrier(select, target) if barrier else select


def _judged_columns(access: ProductAccess, column_types: dict[str, str]) -> ProductColumns:
    """What predicates on a product reference may be judged on: its unmasked visible
    columns with their types, and every visible column's name."""
    visible = access.visible_columns
    unmasked = {c.name.lower(): (c.name, column_types[c.name]) for c in visible if c.mask is None}
    return unmasked, frozenset(c.name for c in visible)


def _name_subquery_columns(selects: list[exp.Select]) -> None:
    """Alias every unaliased output column that contains a subquery with the user's own
    text: DuckDB names such a column after its SQL, which after rewriting would be the
    governed SQL (masks and the hash key)."""
    for select in selects:
        projections = select.expressions
        named = [_named_if_subquery(projection) for projection in projections]
        if any(new is not old for new, old in zip(named, projections, strict=True)):
            select.set("expressions", named)


def _named_if_subquery(projection: exp.Expr) -> exp.Expr:
    """``projection`` aliased by its own text if it contains a subquery. Not copied: the
    table references inside it are the ones ``secure_sources`` replaces."""
    if isinstance(projection, (exp.Alias, exp.Star, exp.Column)):
        return projection
    if projection.find(exp.Query, exp.Subquery, exp.Exists) is None:
        return projection
    name = projection.sql(dialect="duckdb")
    return exp.alias_(projection, name[:255], quoted=True, copy=False)


def _user_nodes(ast: exp.Expr) -> tuple[list[exp.Select], list[exp.Table], list[exp.Column]]:
    """The SELECTs, qualified table references and db-qualified columns the user wrote,
    in one walk of the tree."""
    selects: list[exp.Select] = []
    tables: list[exp.Table] = []
    columns: list[exp.Column] = []
    for node in ast.walk():
        if isinstance(node, exp.Select):
            selects.append(node)
        elif isinstance(node, exp.Table):
            if node.db:  # unqualified: a CTE reference; products are always qualified
                tables.append(node)
        elif isinstance(node, exp.Column) and node.args.get("db"):
            columns.append(node)
    return selects, tables, columns


def secure_sources(query: Query, context: PlanContext) -> Query:
    """Swap product tables for secure subqueries and normalise column qualifiers."""
    ast = query.ast  # the pipeline's own tree: changed in place (see gateway.planning.planner)
    assert ast is not None  # set by parse_statement, the first step
    selects, tables, db_columns = _user_nodes(ast)
    _name_subquery_columns(selects)
    products = {p.key: p for p in query.products}
    product_of = {id(t): products[f"{t.db.lower()}.{t.name.lower()}"] for t in tables}
    resolver = Resolver(
        {
            id(t): _judged_columns(query.accesses[p.key], p.column_types)
            for t in tables
            for p in (product_of[id(t)],)
        },
        _derived_columns,
    )
    # A product without a row filter hides no row: nothing can run on a row it may not
    # see, so only row-filtered products go behind the barrier (DuckDB plans the rest freely).
    barrier = needs_barrier(selects, resolver)
    guarded = {
        id(t)
        for t in tables
        if barrier and query.accesses[product_of[id(t)].key].row_filter is not None
    }
    pushed: dict[int, list[exp.Expr]] = {}
    if guarded:
        from_where: list[tuple[exp.Select, list[exp.Expr]]] = []
        for table in tables:
            if id(table) not in guarded or _governed_already(context, product_of[id(table)].key):
                continue  # unguarded, or a governed fragment: its predicates run above it anyway
            pushed[id(table)], originals = leakproof_conjuncts(table, resolver)
            if originals:  # only from the WHERE of the SELECT whose FROM or JOIN names it
                owner = table.parent.parent if table.parent is not None else None
                assert isinstance(owner, exp.Select)
                from_where.append((owner, originals))
        for select, originals in from_where:
            remove_conjuncts(select, originals)
    unaliased: set[tuple[str, str]] = set()
    # One product read whole goes unwrapped (see _sees_whole); only a statement of one
    # product reference, for the DuckDB engine: mesh federation cuts at secure subqueries.
    single = len(tables) == 1 and context.target == "duckdb"
    for table in tables:
        product = product_of[id(table)]
        for arg, value in table.args.items():
            if arg not in _KEPT_TABLE_ARGS and value not in (None, False, [], ""):
                clause = _CLAUSES.get(arg, arg.upper())
                raise QueryRefused(f"{clause} on a product reference is not supported")
        alias = table.args.get("alias")
        if alias is None:
            alias = exp.TableAlias(this=exp.to_identifier(product.name))
            unaliased.add((product.domain, product.name))
        source = context.sources.get(product.key)
        direct: exp.Expr | None = None
        if source is not None and _governed_already(context, product.key):
            direct = source.table  # filtered and masked already
        elif single and source is None and _sees_whole(query.accesses[product.key], product, table):
            direct = product_table(product.domain, product.name)
        if direct is not None:
            for part in ("this", "db", "catalog"):
                value = direct.args.get(part)
                table.set(part, value.copy() if value is not None else None)
            table.set("alias", alias)
            continue
        select = secure_subquery(
            product.domain,
            product.name,
            query.accesses[product.key],
            product.column_types,
            pushed.get(id(table), []),
            id(table) in guarded,
            context.target,
            source.table if source is not None else None,
        )
        subquery = exp.Subquery(this=select, alias=alias)
        for arg in _CARRIED_TABLE_ARGS:
            if table.args.get(arg):
                subquery.set(arg, table.args[arg])
        table.replace(subquery)
    for column in db_columns:
        if (column.db.lower(), column.table.lower()) in unaliased:
            column.set("db", None)
            column.set("catalog", None)
    return query.evolve(ast=ast)


def _sees_whole(access: ProductAccess, product: Product, table: exp.Table) -> bool:
    """Whether ``table``'s secure subquery would be the product's view as it is: no row
    filter, every column visible and unmasked, in the view's order, and nothing carried
    (a sample, a pivot). The view is then read directly: the subquery would hide nothing
    and costs DuckDB a bind (about 0.2 ms)."""
    if access.row_filter is not None or any(table.args.get(a) for a in _CARRIED_TABLE_ARGS):
        return False
    columns = access.columns
    whole = all(c.visible and c.mask is None for c in columns)
    return whole and [c.name for c in columns] == list(product.column_types)


def _governed_already(context: PlanContext, key: str) -> bool:
    source = context.sources.get(key)
    return source is not None and source.governed


def _derived_columns(source: exp.Expr) -> frozenset[str] | None:
    """The output column names of a derived table, or None when they are not evident."""
    alias = source.args.get("alias")
    if isinstance(alias, exp.TableAlias) and alias.columns:
        return frozenset(c.name for c in alias.columns)
    if isinstance(source, exp.Subquery) and isinstance(source.this, exp.Select):
        projections = source.this.expressions
        if any(
            isinstance(p, exp.Star) or (isinstance(p, exp.Column) and p.is_star)
            for p in projections
        ):
            return None
        return frozenset(p.alias_or_name for p in projections)
    return None


@lru_cache(maxsize=4096)
def duckdb_type(name: str) -> exp.DataType:
    """The parsed DuckDB type ``name``, shared: copy it before putting it in a tree."""
    return exp.DataType.build(name, dialect="duckdb")
