"""Step: bound the iterations of recursive CTEs.

``WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r)`` never ends on its
own. Every ``UNION ALL`` recursive CTE gets a hidden depth column, 0 in its anchor and
one more per iteration, and its recursive part fails with a constant message once the
depth reaches ``[workload] max_recursion_depth``::

    WITH RECURSIVE "<hidden>"(n, depth) AS (
        SELECT 1, 0 UNION ALL
        SELECT n + 1, r.depth + 1 FROM "<hidden>" AS r
        WHERE CASE WHEN r.depth >= 1000 THEN error('<message>') ELSE TRUE END),
    r AS (SELECT * EXCLUDE (depth) FROM "<hidden>")

so the statement sees ``r`` as written. A ``UNION`` (distinct) recursion ends when an
iteration finds nothing new, which a depth column would defeat: it is left to the
resource group's time limit. On Spark the step does nothing: Spark has its own bound.
"""

from __future__ import annotations

import re

from sqlglot import exp

from gateway.errors import QueryRefused
from gateway.planning.query import PlanContext, Query

_DEPTH = "__meshgate_depth"
_HIDDEN_PREFIX = "__meshgate_recursive_"
_MESSAGE = (
    "a recursive query exceeded {limit:,} iterations (the limit, [workload] "
    "max_recursion_depth); add a condition that ends the recursion"
)
_MESSAGE_PATTERN = re.compile(
    re.escape(_MESSAGE).replace(re.escape("{limit:,}"), r"[0-9][0-9,]*") + r"\Z"
)


def recursion_limit_message(limit: int) -> str:
    """The error a bounded recursive CTE raises past ``limit`` iterations."""
    return _MESSAGE.format(limit=limit)


def is_recursion_limit_message(text: str) -> bool:
    """True for exactly the texts ``recursion_limit_message`` makes (digits, no user text)."""
    return _MESSAGE_PATTERN.match(text) is not None


def bound_recursion(query: Query, context: PlanContext) -> Query:
    """Bound every ``UNION ALL`` recursive CTE (see the module docstring)."""
    ast = query.ast  # the pipeline's own tree: changed in place
    assert ast is not None  # set by parse_statement, the first step
    if context.target == "spark":
        return query  # Spark bounds recursion itself (spark.sql.cteRecursionLevelLimit)
    limit = context.limits.max_recursion_depth
    number = 0
    for with_ in list(ast.find_all(exp.With)):
        if not with_.args.get("recursive"):
            continue
        for cte in list(with_.expressions):
            if _bound(with_, cte, limit, f"{_HIDDEN_PREFIX}{number}"):
                number += 1
    return query


def _bound(with_: exp.With, cte: exp.CTE, limit: int, hidden: str) -> bool:
    body = cte.this
    if not isinstance(body, exp.Union) or body.args.get("distinct"):
        return False
    name = cte.args["alias"].this
    step = body.expression
    references = [
        table
        for table in step.find_all(exp.Table)
        if not table.args.get("db") and _same_name(table.this, name)
    ]
    if not references:
        return False  # a UNION ALL under WITH RECURSIVE that does not recurse
    if not isinstance(step, exp.Select) or len(references) != 1:
        raise QueryRefused(
            f"recursive CTE {name.name}: its recursive part must be one SELECT that reads "
            f"{name.name} once"
        )
    reference = references[0]
    qualifier = reference.alias_or_name
    reference.set("this", exp.to_identifier(hidden, quoted=True))
    if not reference.args.get("alias"):
        reference.set("alias", exp.TableAlias(this=name.copy()))
    for anchor in _selects(body.this):
        anchor.select(exp.alias_(exp.Literal.number(0), _DEPTH, quoted=True), copy=False)
    depth = exp.column(_DEPTH, table=qualifier, quoted=True)
    step.select(
        exp.alias_(exp.Add(this=depth, expression=exp.Literal.number(1)), _DEPTH, quoted=True),
        copy=False,
    )
    if step.args.get("group"):
        step.group_by(depth.copy(), copy=False)
    guard = exp.Case(
        ifs=[
            exp.If(
                this=exp.GTE(this=depth.copy(), expression=exp.Literal.number(limit)),
                true=exp.Anonymous(
                    this="error",
                    expressions=[exp.Literal.string(recursion_limit_message(limit))],
                ),
            )
        ],
        default=exp.true(),
    )
    step.where(guard, copy=False)
    alias = cte.args["alias"]
    if alias.columns:
        alias.append("columns", exp.to_identifier(_DEPTH, quoted=True))
    alias.set("this", exp.to_identifier(hidden, quoted=True))
    visible = exp.CTE(
        this=exp.select(exp.Star(except_=[exp.column(_DEPTH, quoted=True)])).from_(
            exp.table_(hidden, quoted=True)
        ),
        alias=exp.TableAlias(this=name.copy()),
    )
    with_.set("expressions", _after(with_.expressions, cte, visible))
    return True


def _selects(node: exp.Expr) -> list[exp.Select]:
    """The SELECTs of a (possibly nested) set operation, or ``node`` itself."""
    if isinstance(node, exp.SetOperation):
        return [*_selects(node.this), *_selects(node.expression)]
    if isinstance(node, exp.Subquery):
        return _selects(node.this)
    if isinstance(node, exp.Select):
        return [node]
    raise QueryRefused("the anchor of a recursive CTE must be a SELECT")


def _same_name(a: exp.Expr, b: exp.Identifier) -> bool:
    """DuckDB matches names without regard to case, quoted or not."""
    return isinstance(a, exp.Identifier) and a.name.lower() == b.name.lower()


def _after(items: list[exp.CTE], anchor: exp.CTE, new: exp.CTE) -> list[exp.CTE]:
    index = next(i for i, item in enumerate(items) if item is anchor)
    return [*items[: index + 1], new, *items[index + 1 :]]
