"""The recursion bound as a planning step, run on DuckDB in process."""

from __future__ import annotations

from dataclasses import replace

import duckdb
import pytest
import sqlglot

from gateway.planning.query import PlanContext, PlanLimits, Query
from gateway.planning.recursion import bound_recursion, is_recursion_limit_message
from gateway.security.principal import Principal

CONTEXT = PlanContext(
    Principal("bob"), catalog=None, governor=None, limits=PlanLimits(max_recursion_depth=50)
)  # type: ignore[arg-type]  # the step reads neither


def bounded(sql: str, context: PlanContext = CONTEXT) -> str:
    query = Query(text=sql).evolve(ast=sqlglot.parse_one(sql, read="duckdb"))
    result = bound_recursion(query, context).ast
    assert result is not None
    return result.sql("duckdb")


def test_an_endless_recursion_fails_with_the_constant_message() -> None:
    sql = bounded(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    )
    with pytest.raises(duckdb.InvalidInputException) as failed:
        duckdb.sql(sql).fetchall()
    text = str(failed.value).removeprefix("Invalid Input Error: ")
    assert is_recursion_limit_message(text), text
    assert "50 iterations" in text


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            (
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 50) "
                "SELECT count(*), max(n) FROM r"
            ),
            [(50, 50)],
        ),
        (  # an alias, columns named in the anchor, SELECT * of the CTE
            (
                "WITH RECURSIVE t AS (SELECT 1 AS n, 'a' AS s UNION ALL "
                "SELECT x.n + 1, x.s || 'a' FROM t AS x WHERE x.n < 3) SELECT * FROM t ORDER BY n"
            ),
            [(1, "a"), (2, "aa"), (3, "aaa")],
        ),
        (  # UNION (distinct) ends by itself and is left alone
            "WITH RECURSIVE r AS (SELECT 1 AS n UNION SELECT n % 3 + 1 FROM r) SELECT * FROM r ORDER BY n",
            [(1,), (2,), (3,)],
        ),
    ],
)
def test_a_recursion_within_the_bound_gives_what_it_gave(sql: str, expected: list) -> None:
    assert duckdb.sql(bounded(sql)).fetchall() == expected
    assert duckdb.sql(sql).fetchall() == expected


def test_the_hidden_depth_column_never_shows() -> None:
    sql = bounded(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r"
    )
    assert duckdb.sql(sql).columns == ["n"]


def test_only_constant_texts_pass_as_messages() -> None:
    assert not is_recursion_limit_message("a recursive query exceeded 5 iterations; x")
    assert not is_recursion_limit_message("customer 'Smith' exceeded")


def test_spark_bounds_recursion_itself() -> None:
    sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    assert "error" not in bounded(sql, replace(CONTEXT, target="spark")).lower()
