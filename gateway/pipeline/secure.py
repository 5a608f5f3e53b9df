"""Step: replace every product reference by a secure subquery, then generate the SQL.

``sales.orders AS o`` becomes ``(SELECT <visible columns, masked> FROM memory.sales.orders
WHERE <row filter>) AS o``. Masks and filters sit underneath everything the user wrote,
so joins, aggregates, windows, predicates, ``COLUMNS(*)``, ``#n`` and whole-row
references only ever see filtered, masked values, and denied columns do not exist.
"""

from __future__ import annotations

from functools import lru_cache

from sqlglot import exp

from gateway.engine import product_table
from gateway.errors import QueryRefused
from gateway.pipeline.query import PlanContext, Query
from policies.engine import ProductAccess

#: What the display SQL shows in place of the hash key.
HASH_KEY_MARKER = "<hash key>"
_CARRIED_TABLE_ARGS = ("pivots", "sample", "laterals", "joins")
_REFUSED_TABLE_ARGS = ("version", "system_time", "hints", "changes", "when", "partition", "indexed")


def governed_columns(
    access: ProductAccess, column_types: dict[str, str], typed_nulls: bool = False
) -> list[exp.Expression]:
    """The visible columns, masked where a mask applies; with ``typed_nulls`` each column
    is a NULL of its type instead (to learn the result types without reading data)."""
    projections: list[exp.Expression] = []
    for column in access.visible_columns:
        data_type = duckdb_type(column_types[column.name])
        value = (
            exp.Cast(this=exp.Null(), to=data_type.copy())
            if typed_nulls
            else exp.column(column.name, quoted=True)
        )
        if column.mask is not None:
            value = column.mask.build(value, data_type)
        if column.mask is not None or typed_nulls:
            projections.append(exp.alias_(value, column.name, quoted=True))
        else:
            projections.append(value)
    return projections


def secure_subquery(
    domain: str, name: str, access: ProductAccess, column_types: dict[str, str]
) -> exp.Select:
    """The filtered, masked SELECT standing in for one product."""
    projections = governed_columns(access, column_types)
    select = exp.select(*projections, copy=False).from_(product_table(domain, name), copy=False)
    if access.row_filter is not None:
        select = select.where(access.row_filter.copy(), copy=False)
    return select


def _name_subquery_columns(selects: list[exp.Select]) -> None:
    """Alias every unaliased output column that contains a subquery with the user's own
    text: DuckDB names such a column after its SQL, which after rewriting would be the
    governed SQL (masks and the hash key)."""
    for select in selects:
        projections = select.expressions
        named = [_named_if_subquery(projection) for projection in projections]
        if any(new is not old for new, old in zip(named, projections)):
            select.set("expressions", named)


def _named_if_subquery(projection: exp.Expression) -> exp.Expression:
    """``projection`` aliased by its own text if it contains a subquery. Not copied: the
    table references inside it are the ones ``secure_sources`` replaces."""
    if isinstance(projection, (exp.Alias, exp.Star, exp.Column)):
        return projection
    if projection.find(exp.Query, exp.Subquery, exp.Exists) is None:
        return projection
    name = projection.sql(dialect="duckdb")
    return exp.alias_(projection, name[:255], quoted=True, copy=False)


def _user_nodes(ast: exp.Expression) -> tuple[list[exp.Select], list[exp.Table], list[exp.Column]]:
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
    ast = query.ast  # the pipeline's own tree: changed in place (see gateway.pipeline)
    selects, tables, db_columns = _user_nodes(ast)
    _name_subquery_columns(selects)
    products = {p.key: p for p in query.products}
    unaliased: set[tuple[str, str]] = set()
    for table in tables:
        product = products[f"{table.db.lower()}.{table.name.lower()}"]
        for arg in _REFUSED_TABLE_ARGS:
            if table.args.get(arg):
                raise QueryRefused(f"{arg.upper()} on a product reference is not supported")
        alias = table.args.get("alias")
        if alias is None:
            alias = exp.TableAlias(this=exp.to_identifier(product.name))
            unaliased.add((product.domain, product.name))
        select = secure_subquery(
            product.domain, product.name, query.accesses[product.key], product.column_types
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


@lru_cache(maxsize=4096)
def duckdb_type(name: str) -> exp.DataType:
    """The parsed DuckDB type ``name``, shared: copy it before putting it in a tree."""
    return exp.DataType.build(name, dialect="duckdb")


def generate_sql(query: Query, context: PlanContext) -> Query:
    """Render the final AST as DuckDB SQL (the only text the engine runs) and a display
    copy for EXPLAIN, errors and audit, in which every occurrence of the hash key is
    redacted (the display text is never run)."""
    sql = query.ast.sql(dialect="duckdb", comments=False, copy=False)  # the tree is ours
    key = context.hash_key
    display = sql.replace(key, HASH_KEY_MARKER) if key else sql
    return query.evolve(sql=sql, display_sql=display)
