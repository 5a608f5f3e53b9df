"""Step: resolve every real table reference to a catalogued product.

``traverse_scope`` tells a real table from a CTE or a derived table, so a CTE named like
a product can neither hide a product read nor be mistaken for one. Any table node that
the scopes do not account for is refused (fail closed).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.scope import Scope, traverse_scope

from gateway.errors import QueryRefused, UnknownObject
from gateway.pipeline.authorize import not_readable_message
from gateway.pipeline.query import PlanContext, Query

FLIGHT_SQL_CATALOG = "mesh"


def resolve_products(query: Query, context: PlanContext) -> Query:
    """Attach the products the statement reads; unknown names get a clear error."""
    ast = query.ast
    try:
        scopes = traverse_scope(ast)
    except (OptimizeError, RecursionError) as exc:
        raise QueryRefused(f"cannot analyse the statement's table references: {exc}") from exc
    real_tables: dict[int, exp.Table] = {}
    cte_references: set[int] = set()
    for scope in scopes:
        _collect_sources(scope, real_tables, cte_references)
    for table in ast.find_all(exp.Table):
        if id(table) not in real_tables and id(table) not in cte_references:
            raise QueryRefused(f"unsupported table reference {table.sql('duckdb')!r}")
    products = []
    for table in real_tables.values():
        products.append(_product_for(table, context))
    return query.evolve(products=tuple(products))


def _collect_sources(scope: Scope, real: dict[int, exp.Table], ctes: set[int]) -> None:
    for source in scope.sources.values():
        if isinstance(source, exp.Table):
            real[id(source)] = source
    for table in scope.tables:
        if id(table) in real:
            continue
        if table.db or table.catalog:
            real[id(table)] = table
        else:
            ctes.add(id(table))


def _product_for(table: exp.Table, context: PlanContext):
    catalog = context.catalog
    name = table.name.lower()
    domain = table.db.lower()
    catalog_name = table.catalog.lower()
    if catalog_name and catalog_name != FLIGHT_SQL_CATALOG:
        raise UnknownObject(
            f"unknown catalog {table.catalog!r} in {table.sql('duckdb')}; products live in "
            f"catalog {FLIGHT_SQL_CATALOG!r} (or leave it out: SELECT * FROM domain.product)"
        )
    if not domain:
        candidates = [
            p.key for p in catalog.products_named(name)
            if context.governor.may_read(context.subject, p.key)
        ]
        hint = f"; did you mean {' or '.join(candidates)}?" if candidates else ""
        raise UnknownObject(
            f"unknown product {table.name!r}: address products as <domain>.<product>{hint}"
        )
    product = catalog.product(domain, name)
    if product is None:
        raise UnknownObject(not_readable_message(f"{domain}.{name}"))
    return product
