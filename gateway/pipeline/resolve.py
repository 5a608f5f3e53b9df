"""Step: resolve every table reference to a catalogued product or to one exact CTE.

Every table node of the statement is accounted for, fail closed:
- qualified (``domain.product`` or ``mesh.domain.product``): must be a catalogued product;
- unqualified: must name a CTE visible at that point by SQL scoping (a CTE body sees the
  CTEs defined before it, and itself only under ``WITH RECURSIVE``; the main query sees
  them all; inner WITHs shadow outer ones). Every CTE is then renamed to a generated name
  and every reference bound to it, so DuckDB cannot bind a name differently from this
  step (to a file, a system view or a Python variable); anything else is refused.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import UnknownObject
from gateway.pipeline.authorize import not_readable_message
from gateway.pipeline.query import PlanContext, Query

FLIGHT_SQL_CATALOG = "mesh"
_CTE_PREFIX = "__meshgate_cte_"


def resolve_products(query: Query, context: PlanContext) -> Query:
    """Attach the products the statement reads; bind CTE references; refuse the rest."""
    ast = query.ast  # the pipeline's own tree: changed in place (see gateway.pipeline)
    generated = _rename_ctes(ast)
    products = {}
    for table in list(ast.find_all(exp.Table)):
        if table.db or table.catalog:
            product = _product_for(table, context)
            products[product.key] = product
            continue
        cte = _binding_cte(table)
        if cte is None:
            raise UnknownObject(_unqualified_message(table, context))
        table.set("this", exp.to_identifier(generated[id(cte)], quoted=True))
        if not table.args.get("alias"):
            table.set("alias", exp.TableAlias(this=exp.to_identifier(cte.args["original_name"], quoted=True)))
    _apply_generated_names(ast, generated)
    return query.evolve(ast=ast, products=tuple(products.values()))


def _rename_ctes(ast: exp.Expression) -> dict[int, str]:
    """Give every CTE a generated name (kept in ``original_name`` for binding)."""
    generated = {}
    for number, cte in enumerate(ast.find_all(exp.CTE)):
        cte.set("original_name", cte.alias)
        generated[id(cte)] = f"{_CTE_PREFIX}{number}"
    return generated


def _apply_generated_names(ast: exp.Expression, generated: dict[int, str]) -> None:
    for cte in ast.find_all(exp.CTE):
        alias = cte.args["alias"]
        alias.set("this", exp.to_identifier(generated[id(cte)], quoted=True))
        cte.set("original_name", None)


def _binding_cte(table: exp.Table) -> exp.CTE | None:
    """The CTE ``table`` refers to under SQL scoping rules, or None."""
    name = _fold(table.name)
    child: exp.Expression = table
    node = table.parent
    while node is not None:
        with_ = node.args.get("with_") if not isinstance(node, exp.With) else None
        if isinstance(with_, exp.With) and child is not with_:
            found = _match(with_.expressions, name)
            if found is not None:
                return found
        if isinstance(node, exp.With):
            ctes = node.expressions
            if child in ctes:  # inside a CTE body: earlier CTEs, itself only if recursive
                position = ctes.index(child)
                visible = ctes[: position + 1] if node.args.get("recursive") else ctes[:position]
                found = _match(visible, name)
                if found is not None:
                    return found
                # the enclosing query's other CTEs are not visible: skip this WITH's owner
                child, node = node.parent, node.parent.parent if node.parent else None
                continue
        child, node = node, node.parent
    return None


def _match(ctes: list[exp.CTE], name: str) -> exp.CTE | None:
    for cte in reversed(ctes):
        if _fold(cte.args.get("original_name") or cte.alias) == name:
            return cte
    return None


def _fold(name: str) -> str:
    """Case-fold like SQL identifiers, ASCII letters only (no Unicode look-alikes)."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _unqualified_message(table: exp.Table, context: PlanContext) -> str:
    candidates = [
        p.key for p in context.catalog.products_named(_fold(table.name))
        if context.governor.may_read(context.subject, p.key)
    ]
    hint = f"; did you mean {' or '.join(candidates)}?" if candidates else ""
    return f"unknown product {table.name!r}: address products as <domain>.<product>{hint}"


def _product_for(table: exp.Table, context: PlanContext):
    name = _fold(table.name)
    domain = _fold(table.db)
    catalog_name = _fold(table.catalog)
    if catalog_name and catalog_name != FLIGHT_SQL_CATALOG:
        raise UnknownObject(
            f"unknown catalog {table.catalog!r}; products live in catalog "
            f"{FLIGHT_SQL_CATALOG!r} (or leave it out: SELECT * FROM domain.product)"
        )
    product = context.catalog.product(domain, name) if domain else None
    if product is None:
        raise UnknownObject(not_readable_message(f"{domain}.{name}"))
    return product
