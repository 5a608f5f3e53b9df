"""Step: resolve every table reference to a catalogued product or to one exact CTE.

Every table node of the statement is accounted for, fail closed:
- qualified (``domain.product`` or ``mesh.domain.product``): must be a catalogued product;
- unqualified: must name a CTE visible at that point by SQL scoping (a CTE body sees the
  CTEs defined before it, and itself only under ``WITH RECURSIVE``; the main query sees
  them all; inner WITHs shadow outer ones). Every CTE is then renamed to a generated name
  and every reference bound to it, so DuckDB cannot bind a name differently from this
  step (to a file, a system view or a Python variable); anything else is refused;
- unqualified and no CTE of that name, when the client chose a schema (a session's
  ``PlanContext.default_schema``): the product of that name in that domain, qualified
  here, so it is one more qualified reference for the steps after (authorized the same
  way, refused with the same message as ``domain.product``).
"""

from __future__ import annotations

from bisect import bisect_left

from sqlglot import exp

from gateway.errors import UnknownObject
from gateway.planning.authorize import not_readable_message
from gateway.planning.naming import FLIGHT_SQL_CATALOG
from gateway.planning.query import PlanContext, Query, check_deadline

_CTE_PREFIX = "__meshgate_cte_"


def resolve_products(query: Query, context: PlanContext) -> Query:
    """Attach the products the statement reads; bind CTE references; refuse the rest."""
    ast = query.ast  # the pipeline's own tree: changed in place (see gateway.planning.planner)
    assert ast is not None  # set by parse_statement, the first step
    generated = _rename_ctes(ast)
    scopes = _CteScopes()
    products = {}
    for number, table in enumerate(list(ast.find_all(exp.Table))):
        if number % 1024 == 1023:
            check_deadline(context)
        if table.db or table.catalog:
            product = _product_for(table, context)
            products[product.key] = product
            continue
        cte = scopes.binding(table)
        if cte is None and context.default_schema:
            table.set("db", exp.to_identifier(_fold(context.default_schema)))
            product = _product_for(table, context)
            products[product.key] = product
            continue
        if cte is None:
            raise UnknownObject(_unqualified_message(table, context))
        table.set("this", exp.to_identifier(generated[id(cte)], quoted=True))
        if not table.args.get("alias"):
            table.set(
                "alias",
                exp.TableAlias(this=exp.to_identifier(cte.args["original_name"], quoted=True)),
            )
    _apply_generated_names(ast, generated)
    return query.evolve(ast=ast, products=tuple(products.values()))


def _rename_ctes(ast: exp.Expr) -> dict[int, str]:
    """Give every CTE a generated name (kept in ``original_name`` for binding)."""
    generated = {}
    for number, cte in enumerate(ast.find_all(exp.CTE)):
        cte.set("original_name", cte.alias)
        generated[id(cte)] = f"{_CTE_PREFIX}{number}"
    return generated


def _apply_generated_names(ast: exp.Expr, generated: dict[int, str]) -> None:
    for cte in ast.find_all(exp.CTE):
        alias = cte.args["alias"]
        alias.set("this", exp.to_identifier(generated[id(cte)], quoted=True))
        cte.set("original_name", None)


class _CteScopes:
    """Which CTE a table reference binds to, under SQL scoping rules, in time linear in the
    statement: each WITH's CTEs are indexed by folded name once, and the answer of every
    scope a lookup walks through is remembered (it does not depend on where the walk came
    from), so no reference scans a CTE list or walks a path another one walked."""

    def __init__(self) -> None:
        self._withs: dict[int, _WithIndex] = {}
        self._answers: dict[tuple[int, str], exp.CTE | None] = {}

    def binding(self, table: exp.Table) -> exp.CTE | None:
        """The CTE ``table`` refers to, or None."""
        name = _fold(table.name)
        walked: list[exp.Expr] = []
        child: exp.Expr = table
        node = table.parent
        found: exp.CTE | None = None
        while node is not None:
            if isinstance(node, exp.With):  # inside a CTE body: earlier CTEs, itself if recursive
                index = self._index(node)
                visible = index.position(child) + (1 if index.recursive else 0)
                found = index.last(name, before=visible)
                if found is not None:
                    break
                # the enclosing query's other CTEs are not visible: skip this WITH's owner
                if node.parent is None:
                    break
                child, node = node.parent, node.parent.parent
                continue
            key = (id(node), name)
            if key in self._answers:
                found = self._answers[key]
                break
            walked.append(node)
            with_ = node.args.get("with_")
            if isinstance(with_, exp.With) and child is not with_:
                found = self._index(with_).last(name)
                if found is not None:
                    break
            child, node = node, node.parent
        for scope in walked:
            self._answers[(id(scope), name)] = found
        return found

    def _index(self, with_: exp.With) -> _WithIndex:
        index = self._withs.get(id(with_))
        if index is None:
            index = self._withs[id(with_)] = _WithIndex(with_)
        return index


class _WithIndex:
    """The CTEs of one WITH by folded name, in order."""

    def __init__(self, with_: exp.With) -> None:
        self.ctes: list[exp.CTE] = list(with_.expressions)
        self.recursive = bool(with_.args.get("recursive"))
        self._positions = {id(cte): number for number, cte in enumerate(self.ctes)}
        self._by_name: dict[str, list[int]] = {}
        for number, cte in enumerate(self.ctes):
            name = _fold(cte.args.get("original_name") or cte.alias)
            self._by_name.setdefault(name, []).append(number)

    def position(self, cte: exp.Expr) -> int:
        return self._positions[id(cte)]

    def last(self, name: str, before: int | None = None) -> exp.CTE | None:
        """The last CTE called ``name`` (among the first ``before``, when given)."""
        positions = self._by_name.get(name)
        if not positions:
            return None
        at = len(positions) if before is None else bisect_left(positions, before)
        return self.ctes[positions[at - 1]] if at else None


def _fold(name: str) -> str:
    """Case-fold like SQL identifiers, ASCII letters only (no Unicode look-alikes)."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _unqualified_message(table: exp.Table, context: PlanContext) -> str:
    candidates = [
        p.key
        for p in context.catalog.products_named(_fold(table.name))
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
