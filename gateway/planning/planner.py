"""The query pipeline: client text -> governed DuckDB SQL, one small step at a time.

Like sqlglot's optimizer, ``STEPS`` is a plain tuple of functions ``step(query, context)``
applied in order; each does one thing and can be tested alone. The syntax tree that
``parse_statement`` builds belongs to the pipeline: later steps change it in place rather
than copy it (copies were half of planning time), and ``plan`` never reuses an earlier
``Query``. The gateway's stateful planner around it (plan cache, re-planning, prepared
statements) is ``gateway.query.statements.StatementPlanner``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gateway.errors import QueryRefused
from gateway.planning.authorize import authorize
from gateway.planning.bounds import bound_collectors
from gateway.planning.generate import generate_sql
from gateway.planning.parse import parse_statement
from gateway.planning.query import PlanContext, Query, check_deadline
from gateway.planning.read_only import require_read_only
from gateway.planning.recursion import bound_recursion
from gateway.planning.resolve import resolve_products
from gateway.planning.secure import secure_sources
from gateway.planning.spark_sql import spark_semantics

Step = Callable[[Query, PlanContext], Query]

STEPS: tuple[Step, ...] = (
    parse_statement,
    require_read_only,
    bound_collectors,
    bound_recursion,
    resolve_products,
    authorize,
    secure_sources,
    generate_sql,
)
#: the steps for Spark: what the statement and its row filters use is checked to mean the
#: same on Spark before the sources are secured; no DuckDB SQL text (Spark's own is
#: written by ``gateway.planning.spark_sql.spark_sql`` once parameters are inlined)
SPARK_STEPS: tuple[Step, ...] = (*STEPS[:-2], spark_semantics, secure_sources)


def plan(text: str, context: PlanContext, steps: tuple[Step, ...] = STEPS) -> Query:
    """Run ``text`` through every step; raise a MeshgateError at the first refusal, or
    QueryFailed once planning has taken ``context.limits.max_planning_seconds`` (checked
    between steps and inside the long ones)."""
    seconds = context.limits.max_planning_seconds
    if seconds is not None:
        context = replace(context, deadline=context.clock() + seconds)
    query = Query(text=text)
    try:
        for step in steps:
            query = step(query, context)
            check_deadline(context)
    except RecursionError as exc:  # a tree too deep for some step: refuse, never crash
        raise QueryRefused("statement is too deeply nested to analyse") from exc
    return query
