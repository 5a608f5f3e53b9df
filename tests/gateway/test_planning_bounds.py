"""Planning cost is bounded by the statement's size (issue 11, point 6): CTE resolution is
near-linear, oversized trees are refused right after parsing, planning has a deadline, and
the statement size limit is the configured one."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.planning import make_context

from gateway.catalog.catalog import Catalog, load_catalog
from gateway.config import EngineSettings, GatewaySettings
from gateway.errors import QueryFailed, QueryRefused
from gateway.planning.parse import parse_statement
from gateway.planning.planner import STEPS, plan
from gateway.planning.query import PlanContext, PlanLimits, Query
from gateway.planning.read_only import require_read_only
from gateway.planning.resolve import resolve_products


@pytest.fixture(scope="module")
def catalog(demo_mesh: Path) -> Iterator[Catalog]:
    catalog = load_catalog(demo_mesh, EngineSettings())
    yield catalog
    catalog.engine.close()


@pytest.fixture(scope="module")
def context(catalog: Catalog) -> PlanContext:
    return make_context(catalog)


def many_ctes(ctes: int, references: int) -> str:
    """The shape of dave's statement: many CTEs, many references to the first."""
    bodies = ["a AS (SELECT 1 AS x)"] + [f"c{i} AS (SELECT 1)" for i in range(1, ctes)]
    return "WITH " + ", ".join(bodies) + " SELECT 1 AS one FROM " + ", ".join(["a"] * references)


def calls_to_resolve(context: PlanContext, sql: str) -> int:
    """Python function calls made by the resolve step for ``sql``: a count, not a time."""
    query = require_read_only(parse_statement(Query(text=sql), context), context)
    count = 0

    def profile(frame, event, arg) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        resolve_products(query, context)
    finally:
        sys.setprofile(None)
    return count


def test_cte_resolution_is_near_linear_in_references_and_ctes(context: PlanContext) -> None:
    """Was O(references x CTEs): 6,500 CTEs and 35,000 references took 73-133 s."""
    small = calls_to_resolve(context, many_ctes(200, 1_000))
    large = calls_to_resolve(context, many_ctes(800, 4_000))
    assert large < 6 * small, f"4x the statement made {large / small:.1f}x the work"


def test_cte_scoping_is_unchanged(context: PlanContext, catalog: Catalog) -> None:
    """Later CTEs shadow nothing earlier; a CTE sees only the ones before it; an inner WITH
    shadows an outer one; names fold case."""
    sql = (
        "WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS x FROM A), "
        "c AS (WITH a AS (SELECT 10 AS x) SELECT x FROM a) "
        "SELECT (SELECT x FROM b) AS b, (SELECT x FROM c) AS c, (SELECT x FROM a) AS a"
    )
    query = plan(sql, context)
    with catalog.engine.cursor() as cursor:
        assert cursor.sql(query.sql).fetchall() == [(2, 10, 1)]
    with pytest.raises(Exception, match="unknown product 'b'"):
        plan("WITH a AS (SELECT x FROM b), b AS (SELECT 1 AS x) SELECT * FROM a", context)


def test_a_tree_past_the_node_limit_is_refused_after_parsing(context: PlanContext) -> None:
    limits = dataclasses.replace(context.limits, max_tree_nodes=5_000)
    small = dataclasses.replace(context, limits=limits)
    reached: list[str] = []

    def spy(step):
        def run(query, ctx):
            reached.append(step.__name__)
            return step(query, ctx)

        return run

    with pytest.raises(QueryRefused) as caught:
        plan(many_ctes(100, 2_000), small, steps=tuple(spy(s) for s in STEPS))
    assert reached == ["parse_statement"]
    assert "5,000" in str(caught.value) and "syntax tree" in str(caught.value)


@pytest.mark.slow
def test_the_default_node_limit_refuses_daves_statement(context: PlanContext) -> None:
    sql = many_ctes(6_500, 35_000)
    assert len(sql.encode()) <= context.limits.max_statement_bytes
    with pytest.raises(QueryRefused, match="syntax tree"):
        plan(sql, context)


def test_planning_stops_at_its_deadline(context: PlanContext) -> None:
    """A cooperative check between steps: a step that overruns stops the rest."""
    limits = dataclasses.replace(context.limits, max_planning_seconds=0.01)
    clock = iter(range(0, 1000))
    reached: list[str] = []

    def slow(step):
        def run(query, ctx):
            reached.append(step.__name__)
            return step(query, ctx)

        return run

    timed = dataclasses.replace(context, limits=limits, clock=lambda: float(next(clock)))
    with pytest.raises(QueryFailed) as caught:
        plan("SELECT 1 AS one", timed, steps=tuple(slow(s) for s in STEPS))
    assert len(reached) == 1
    assert "time limit of 0.01 s" in str(caught.value) and "planning" in str(caught.value)


def test_statement_size_limit_is_the_configured_one() -> None:
    assert GatewaySettings().max_statement_bytes == PlanLimits().max_statement_bytes == 256 * 1024
    assert GatewaySettings(max_statement_bytes=1000).max_statement_bytes == 1000
