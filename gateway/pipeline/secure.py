"""Step: replace every product reference by a secure subquery, then generate the SQL.

``sales.orders AS o`` becomes ``(SELECT <visible columns, masked> FROM memory.sales.orders
WHERE <row filter>) AS o``. Masks and filters sit underneath everything the user wrote,
so joins, aggregates, windows, predicates, ``COLUMNS(*)``, ``#n`` and whole-row
references only ever see filtered, masked values, and denied columns do not exist.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.engine import product_table
from gateway.errors import QueryRefused
from gateway.pipeline.query import PlanContext, Query
from policies.engine import ProductAccess

_CARRIED_TABLE_ARGS = ("pivots", "sample", "laterals", "joins")
_REFUSED_TABLE_ARGS = ("version", "system_time", "hints", "changes", "when", "partition", "indexed")


def governed_columns(
    access: ProductAccess, column_types: dict[str, str], typed_nulls: bool = False
) -> list[exp.Expression]:
    """The visible columns, masked where a mask applies; with ``typed_nulls`` each column
    is a NULL of its type instead (to learn the result types without reading data)."""
    projections: list[exp.Expression] = []
    for column in access.visible_columns:
        data_type = exp.DataType.build(column_types[column.name], dialect="duckdb")
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
    select = exp.select(*projections).from_(product_table(domain, name))
    if access.row_filter is not None:
        select = select.where(access.row_filter.copy())
    return select


def _name_subquery_columns(ast: exp.Expression) -> None:
    """Alias every unaliased output column that contains a subquery with the user's own
    text: DuckDB names such a column after its SQL, which after rewriting would be the
    governed SQL (masks and the hash key)."""
    for select in ast.find_all(exp.Select):
        for index, projection in enumerate(select.expressions):
            if isinstance(projection, (exp.Alias, exp.Star, exp.Column)):
                continue
            if projection.find(exp.Query, exp.Subquery, exp.Exists) is None:
                continue
            name = projection.sql(dialect="duckdb")
            select.expressions[index] = exp.alias_(projection, name[:255], quoted=True)


def secure_sources(query: Query, context: PlanContext) -> Query:
    """Swap product tables for secure subqueries and normalise column qualifiers."""
    ast = query.ast.copy()
    _name_subquery_columns(ast)
    products = {p.key: p for p in query.products}
    unaliased: set[tuple[str, str]] = set()
    for table in list(ast.find_all(exp.Table)):
        if not table.db:
            continue  # a CTE reference; real product references are always qualified
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
    if unaliased:
        for column in ast.find_all(exp.Column):
            if column.args.get("db") and (column.db.lower(), column.table.lower()) in unaliased:
                column.set("db", None)
                column.set("catalog", None)
    return query.evolve(ast=ast)


def generate_sql(query: Query, context: PlanContext) -> Query:
    """Render the final AST as DuckDB SQL (the only text the engine runs) and a display
    copy in which the hash key is replaced by a marker (for EXPLAIN, errors and audit)."""
    sql = query.ast.sql(dialect="duckdb", comments=False)
    display = sql
    key = context.hash_key
    if key:
        shown = query.ast.transform(
            lambda node: exp.Literal.string("<hash key>")
            if isinstance(node, exp.Literal) and node.is_string and node.this == key
            else node
        )
        display = shown.sql(dialect="duckdb", comments=False)
    return query.evolve(sql=sql, display_sql=display)
