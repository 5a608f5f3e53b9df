"""Step: resolve every table reference to a catalogued product or a CTE in scope.

Every table node of the statement is accounted for, fail closed:
- qualified (``domain.product`` or ``mesh.domain.product``): must be a catalogued product;
- unqualified: must name a CTE of an enclosing ``WITH`` (what DuckDB binds it to first);
  anything else (a bare name, a quoted file path, a Python variable) is refused, so a
  CTE can neither hide a product read nor be used to reach a file.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import UnknownObject
from gateway.pipeline.authorize import not_readable_message
from gateway.pipeline.query import PlanContext, Query

FLIGHT_SQL_CATALOG = "mesh"


def resolve_products(query: Query, context: PlanContext) -> Query:
    """Attach the products the statement reads; unknown names get a clear error."""
    products = {}
    for table in query.ast.find_all(exp.Table):
        if not table.db and not table.catalog:
            if _names_cte_in_scope(table):
                continue
            raise UnknownObject(_unqualified_message(table, context))
        product = _product_for(table, context)
        products[product.key] = product
    return query.evolve(products=tuple(products.values()))


def _names_cte_in_scope(table: exp.Table) -> bool:
    """True when an enclosing WITH defines a CTE named like ``table``."""
    name = table.name.lower()
    node: exp.Expression | None = table.parent
    while node is not None:
        with_ = node.args.get("with_") if isinstance(node, exp.Expression) else None
        if isinstance(with_, exp.With) and any(cte.alias.lower() == name for cte in with_.expressions):
            return True
        node = node.parent
    return False


def _unqualified_message(table: exp.Table, context: PlanContext) -> str:
    candidates = [
        p.key for p in context.catalog.products_named(table.name.lower())
        if context.governor.may_read(context.subject, p.key)
    ]
    hint = f"; did you mean {' or '.join(candidates)}?" if candidates else ""
    return f"unknown product {table.name!r}: address products as <domain>.<product>{hint}"


def _product_for(table: exp.Table, context: PlanContext):
    name = table.name.lower()
    domain = table.db.lower()
    catalog_name = table.catalog.lower()
    if catalog_name and catalog_name != FLIGHT_SQL_CATALOG:
        raise UnknownObject(
            f"unknown catalog {table.catalog!r}; products live in catalog "
            f"{FLIGHT_SQL_CATALOG!r} (or leave it out: SELECT * FROM domain.product)"
        )
    product = context.catalog.product(domain, name) if domain else None
    if product is None:
        raise UnknownObject(not_readable_message(f"{domain}.{name}"))
    return product
