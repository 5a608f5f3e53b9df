"""Step: bound the values that aggregates collect from many rows.

``list()``, ``string_agg()`` and the other ``policies.safe_sql.COLLECTORS`` build one value
from every row of a group. DuckDB's memory_limit bounds their state, but not what scalar
functions then build from the result (``repeat(string_agg(...), 20)`` allocates outside the
limit), so the size of a collected value must be bounded like the generating functions'.
No planning-time rule can know how many rows a group holds, so this step adds a guard that
the engine checks after aggregating and before anything reads the collected value: the
SELECT that computes the collector gets

    HAVING ... AND CASE WHEN count(*) > 10000 THEN error('<message>') ... ELSE TRUE END

(one WHEN per collector of that SELECT; ``count(*) OVER <the same window>`` in QUALIFY for
a window collector; the collector's FILTER and DISTINCT are kept, so the count is what it
collects). The projections are not
touched: column names stay what the user wrote. The message names the function, the limit
and the fix, and is the only engine error text passed to clients verbatim
(``gateway.engine.errors``). The guard sits where the user's aggregate sits, above the
secure subqueries: it counts only rows the user may see.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import QueryRefused
from gateway.planning.query import PlanContext, Query
from policies.safe_sql import (
    COLLECTORS,
    MAX_COLLECTED_VALUES,
    collector_limit_message,
    function_name,
)

#: Collectors whose result has one entry per distinct value, not per row.
_ONE_ENTRY_PER_DISTINCT_VALUE = frozenset({"histogram", "json_group_structure"})
#: Wrappers between a collector and the SELECT that computes it.
_WRAPPERS = (exp.Filter, exp.IgnoreNulls, exp.RespectNulls, exp.Window)


def bound_collectors(query: Query, context: PlanContext) -> Query:
    """Add a row-count guard for every collecting aggregate (see the module docstring)."""
    ast = query.ast  # the pipeline's own tree: changed in place (see gateway.planning.planner)
    assert ast is not None  # set by parse_statement, the first step
    collectors = [
        (node, COLLECTORS[name])
        for node in ast.find_all(exp.Func)
        if (name := function_name(node)) in COLLECTORS
    ]
    checks: dict[tuple[int, bool], tuple[exp.Select, list[exp.If]]] = {}
    for node, name in collectors:
        if name == "histogram" and len(node.expressions) > 1:
            continue  # histogram(x, bins): one entry per bin of a given list
        outer, filter_, window = _wrappers(node)
        select = _computing_select(outer, name)
        _, ifs = checks.setdefault((id(select), window is not None), (select, []))
        ifs.append(_check(_count(node, name, filter_, window), collector_limit_message(name)))
    for (_, windowed), (select, ifs) in checks.items():
        guard = exp.Case(ifs=ifs, default=exp.true())  # one flat CASE per clause, however many
        if windowed:
            select.qualify(guard, append=True, copy=False)
        else:
            select.having(guard, append=True, copy=False)
    return query


def _wrappers(node: exp.Func) -> tuple[exp.Expr, exp.Filter | None, exp.Window | None]:
    """The outermost of ``node``'s FILTER / IGNORE NULLS / OVER wrappers, its FILTER and
    its window."""
    outer: exp.Expr = node
    filter_: exp.Filter | None = None
    window: exp.Window | None = None
    while isinstance(outer.parent, _WRAPPERS) and outer.parent.this is outer:
        outer = outer.parent
        if isinstance(outer, exp.Filter):
            filter_ = outer
        elif isinstance(outer, exp.Window):
            window = outer
    return outer, filter_, window


def _computing_select(outer: exp.Expr, name: str) -> exp.Select:
    for ancestor in _ancestors(outer):
        if isinstance(ancestor, exp.Select):
            return ancestor
        if isinstance(ancestor, (exp.Pivot, exp.Query)):
            break
    raise QueryRefused(
        f"{name}() is allowed only in a SELECT list, HAVING, QUALIFY or ORDER BY (not in PIVOT "
        f"or a set operation's ORDER BY): it collects at most {MAX_COLLECTED_VALUES:,} values per "
        "group, which the gateway checks there"
    )


def _count(
    node: exp.Func, name: str, filter_: exp.Filter | None, window: exp.Window | None
) -> exp.Expr:
    """``count`` of what ``node`` collects: DISTINCT values if it collects distinct ones
    (or, like histogram, one entry per distinct value), under the same FILTER and window."""
    argument = node.this if isinstance(node.this, exp.Expression) else None
    if isinstance(node, exp.Anonymous):
        argument = node.expressions[0] if node.expressions else None
        if name in _ONE_ENTRY_PER_DISTINCT_VALUE and argument is not None:
            argument = exp.Distinct(expressions=[argument])
    if isinstance(argument, exp.Order):
        argument = argument.this
    if isinstance(argument, exp.Distinct):
        count: exp.Expr = exp.Count(
            this=exp.Distinct(expressions=[e.copy() for e in argument.expressions])
        )
    else:
        count = exp.Count(this=exp.Star())
    if filter_ is not None:
        count = exp.Filter(this=count, expression=filter_.expression.copy())
    if window is not None:
        over = window.copy()
        over.set("this", count)
        count = over
    return count


def _check(count: exp.Expr, message: str) -> exp.If:
    """``WHEN <count> > MAX_COLLECTED_VALUES THEN error(<message>)``."""
    too_many = exp.GT(this=count, expression=exp.Literal.number(MAX_COLLECTED_VALUES))
    fail = exp.Anonymous(this="error", expressions=[exp.Literal.string(message)])
    return exp.If(this=too_many, true=fail)


def _ancestors(node: exp.Expr):
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent
