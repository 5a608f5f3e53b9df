"""What the Spark route lets through of a user's SQL: only what Spark computes exactly as
DuckDB does (checked in process, on the planning step; tests/spark runs the real thing)."""

from __future__ import annotations

import pytest
import sqlglot

from gateway.errors import QueryRefused
from gateway.planning.spark_sql import check_spark_semantics, spark_sql

SAME = [
    "SELECT a, count(*), sum(b), avg(b), min(c), max(c) FROM t GROUP BY a",
    "SELECT * FROM t WHERE a LIKE 'x%' AND b BETWEEN 1 AND 2 AND c IN (1, 2)",
    "SELECT substring(a, 1, 2), length(a), EXTRACT(YEAR FROM d), abs(b) FROM t",
    "SELECT CAST('12' AS INT), CAST(NULL AS BIGINT), CAST(1 AS INT) FROM t",
    "SELECT row_number() OVER (PARTITION BY a ORDER BY b) AS r FROM t",
    "SELECT CASE WHEN a IS NULL THEN 1 ELSE 2 END, coalesce(a, 'x') FROM t",
]
DIFFERENT = {
    "SELECT upper(a) FROM t": "the function upper()",
    "SELECT lower(a) FROM t": "the function lower()",
    "SELECT * FROM t WHERE a ILIKE 'x%'": "ILIKE",
    "SELECT * FROM t WHERE a LIKE 'x\\_%'": "LIKE with a pattern",
    "SELECT * FROM t WHERE a LIKE b": "LIKE with a pattern",
    "SELECT substring(a, 0, 2) FROM t": "substring()",
    "SELECT substring(a, 2, -1) FROM t": "substring()",
    "SELECT TRY_CAST(a AS DATE) FROM t": "TRY_CAST",
    "SELECT CAST(b AS VARCHAR) FROM t": "a cast to TEXT",
    "SELECT CAST(b AS INT) FROM t": "a cast to INT",
    "SELECT CAST('1.5' AS INT) FROM t": "a cast to INT",
    "SELECT a || 'x' FROM t": "||",
    "SELECT EXTRACT(DOW FROM d) FROM t": "EXTRACT(DOW)",
    "SELECT b // 2 FROM t": "integer division",
    "SELECT reverse(a) FROM t": "the function reverse()",
    'SELECT "${env:TOKEN}" FROM t': "an identifier containing ${",
    "PIVOT t ON a USING sum(b)": "PIVOT",
    "SELECT * FROM t PIVOT (sum(b) FOR a IN ('x', 'y'))": "PIVOT",
    "UNPIVOT t ON a, b INTO NAME k VALUE v": "UNPIVOT",
    "SELECT * FROM t UNPIVOT (v FOR k IN (a, b))": "UNPIVOT",
}


@pytest.mark.parametrize("sql", SAME)
def test_what_spark_computes_alike_passes(sql: str) -> None:
    check_spark_semantics(sqlglot.parse_one(sql, read="duckdb"))


@pytest.mark.parametrize(("sql", "named"), DIFFERENT.items())
def test_what_spark_computes_otherwise_is_refused_by_name(sql: str, named: str) -> None:
    with pytest.raises(QueryRefused, match="has no exact Spark equivalent") as refused:
        check_spark_semantics(sqlglot.parse_one(sql, read="duckdb"))
    assert named in str(refused.value)


def test_spark_sql_leaves_nothing_for_spark_to_substitute() -> None:
    written = spark_sql(sqlglot.parse_one("SELECT '${env:TOKEN}' AS x FROM t", read="duckdb"))
    assert "${" not in written and "$\\{env:TOKEN}" in written


def test_averages_and_divisions_run_in_double_as_on_duckdb() -> None:
    written = spark_sql(sqlglot.parse_one("SELECT avg(p), a / b FROM t", read="duckdb"))
    assert "AVG(CAST(p AS DOUBLE))" in written
    assert "CAST(a AS DOUBLE) / CAST(b AS DOUBLE)" in written
