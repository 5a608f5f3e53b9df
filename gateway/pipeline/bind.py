"""Step: point every product reference at the engine's internal view of that product.

The user's name for the table stays usable as a qualifier: ``sales.orders.amount`` and
``orders.amount`` both keep working after the reference becomes ``memory.sales.orders``.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.engine import product_table
from gateway.pipeline.query import PlanContext, Query


def bind_sources(query: Query, context: PlanContext) -> Query:
    """Replace product tables by their internal views and normalise column qualifiers."""
    ast = query.ast.copy()
    product_by_name = {p.key: p for p in query.products}
    renamed: set[tuple[str, str]] = set()
    for table in list(ast.find_all(exp.Table)):
        key = f"{table.db.lower()}.{table.name.lower()}"
        product = product_by_name.get(key)
        if product is None or not table.db:
            continue
        alias = table.alias or product.name
        if not table.alias:
            renamed.add((product.domain, product.name))
        replacement = product_table(product.domain, product.name)
        replacement.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        for key_name in ("joins", "laterals", "pivots", "hints", "version", "sample"):
            if table.args.get(key_name):
                replacement.set(key_name, table.args[key_name])
        table.replace(replacement)
    if renamed:
        for column in ast.find_all(exp.Column):
            if column.args.get("db") and (column.db.lower(), column.table.lower()) in renamed:
                column.set("db", None)
                column.set("catalog", None)
    return query.evolve(ast=ast)


def generate_sql(query: Query, context: PlanContext) -> Query:
    """Render the final AST as DuckDB SQL: the only text the engine ever runs."""
    return query.evolve(sql=query.ast.sql(dialect="duckdb"))
