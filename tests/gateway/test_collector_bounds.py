"""Aggregates that collect rows (list, string_agg, ...) are bounded per group by a guard the
pipeline adds (``gateway.planning.bounds``), run here on the real engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from support.planning import make_context

from gateway.catalog.catalog import Catalog, load_catalog
from gateway.config import EngineSettings
from gateway.engine import errors as engine_errors
from gateway.engine.errors import safe_engine_error
from gateway.errors import QueryFailed, QueryRefused
from gateway.planning.planner import plan
from gateway.planning.query import PlanContext
from policies.safe_sql import MAX_COLLECTED_VALUES, collector_limit_message


@pytest.fixture(scope="module")
def catalog(demo_mesh: Path) -> Iterator[Catalog]:
    catalog = load_catalog(demo_mesh, EngineSettings())
    yield catalog
    catalog.engine.close()


@pytest.fixture(scope="module")
def context(catalog: Catalog) -> PlanContext:
    return make_context(catalog)


@pytest.fixture(autouse=True)
def quiet_engine_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine errors are logged; not to a stream an earlier in-process CLI test closed."""

    class Quiet:
        def warning(self, *args: object, **kwargs: object) -> None:
            pass

    monkeypatch.setattr(engine_errors, "log", Quiet())


def run(catalog: Catalog, context: PlanContext, sql: str) -> tuple[list[str], list[tuple]]:
    """Plan ``sql`` and run the governed SQL: (column names, rows); engine errors as the
    client would see them (QueryFailed)."""
    query = plan(sql, context)
    with catalog.engine.cursor() as cursor:
        try:
            relation = cursor.sql(query.sql)
            return relation.columns, relation.fetchall()
        except duckdb.Error as exc:
            raise safe_engine_error(exc) from exc


#: 200,000 orders in 3 regions: every group is past the bound.
TOO_MANY = {
    "list": "SELECT region, len(list(order_id)) AS n FROM sales.orders GROUP BY region",
    "array_agg": "SELECT len(array_agg(order_id)) AS n FROM sales.orders",
    "string_agg": "SELECT length(string_agg(region, ',')) AS n FROM sales.orders",
    "group_concat": "SELECT length(group_concat(region)) AS n FROM sales.orders",
    "json_group_array": "SELECT length(json_group_array(order_id)::VARCHAR) AS n FROM sales.orders",
    "histogram": "SELECT cardinality(histogram(order_id)) AS n FROM sales.orders",
    "window": (
        "SELECT count(*) AS n "
        "FROM (SELECT list(order_id) OVER (PARTITION BY region) AS l FROM sales.orders)"
    ),
    "scalar_subquery": "SELECT (SELECT len(list(order_id)) FROM sales.orders) AS n",
    "cte": "WITH c AS (SELECT list(order_id) AS l FROM sales.orders) SELECT len(l) AS n FROM c",
}
SHOWN = {
    "array_agg": "list",
    "group_concat": "string_agg",
    "window": "list",
    "scalar_subquery": "list",
    "cte": "list",
}


@pytest.mark.parametrize("sql", list(TOO_MANY.values()), ids=list(TOO_MANY))
def test_a_group_past_the_bound_fails_naming_the_function_and_fix(catalog, context, sql) -> None:
    key = next(k for k, v in TOO_MANY.items() if v == sql)
    with pytest.raises(QueryFailed) as caught:
        run(catalog, context, sql)
    assert str(caught.value) == collector_limit_message(SHOWN.get(key, key))
    assert f"{MAX_COLLECTED_VALUES:,}" in str(caught.value) and "GROUP BY" in str(caught.value)


def test_groups_under_the_bound_are_answered_with_the_users_column_names(catalog, context) -> None:
    columns, rows = run(
        catalog,
        context,
        "SELECT region, len(list(order_id)) AS n, "
        "string_agg(order_id::VARCHAR, ',' ORDER BY order_id) FROM sales.orders "
        "WHERE order_id <= 30 GROUP BY region ORDER BY region",
    )
    assert columns[:2] == ["region", "n"]
    assert "HAVING" not in columns[2] and "CASE" not in columns[2]
    assert sum(n for _, n, _ in rows) == 30
    assert all(len(s.split(",")) == n for _, n, s in rows)


@pytest.mark.parametrize(
    "sql, expected",
    [
        # FILTER: only what passes the filter is collected, and counted
        ("SELECT len(list(order_id) FILTER (WHERE order_id <= 5)) AS n FROM sales.orders", [(5,)]),
        # DISTINCT: distinct values are collected, and counted
        ("SELECT len(list(DISTINCT region)) AS n FROM sales.orders", [(3,)]),
        (
            "SELECT length(string_agg(DISTINCT region, ',' ORDER BY region)) AS n FROM sales.orders",
            [(10,)],
        ),
        # histogram: one entry per distinct value; with bins: one per bin
        ("SELECT cardinality(histogram(region)) AS n FROM sales.orders", [(3,)]),
        ("SELECT cardinality(histogram(order_id, [100, 1000])) AS n FROM sales.orders", [(3,)]),
        # a sliding window frame holds 6 rows
        (
            (
                "SELECT max(len(l)) AS n FROM (SELECT list(order_id) OVER "
                "(ORDER BY order_id ROWS 5 PRECEDING) AS l FROM sales.orders)"
            ),
            [(6,)],
        ),
    ],
)
def test_the_count_is_what_the_collector_collects(catalog, context, sql, expected) -> None:
    assert run(catalog, context, sql)[1] == expected


def test_existing_having_and_qualify_are_kept(catalog, context) -> None:
    _, rows = run(
        catalog,
        context,
        "SELECT region, len(list(order_id)) AS n FROM sales.orders WHERE order_id <= 100 "
        "GROUP BY region HAVING count(*) > 30 ORDER BY region",
    )
    assert rows and all(n > 30 for _, n in rows)


def test_a_collector_in_pivot_is_refused_clearly(context) -> None:
    with pytest.raises(QueryRefused, match=r"list\(\) is allowed only"):
        plan("SELECT * FROM sales.orders PIVOT (list(order_id) FOR region IN ('EU'))", context)


def test_user_sql_still_may_not_call_error(context) -> None:
    """The guard's error() is the gateway's: the user's is refused as before."""
    with pytest.raises(QueryRefused, match=r"error\(\) is not allowed"):
        plan(f"SELECT error('{collector_limit_message('list')}') AS e", context)
