"""The admission estimate under a row filter is made from the rows the user may see: two
tables that differ only in rows the filter hides give the same estimate."""

from __future__ import annotations

import duckdb
import pytest
from sqlglot import exp, parse_one

from gateway.engine.plan_cost import plan_cost
from gateway.planning.stand_ins import StandIn, stand_in_sql

GOVERNED = (
    'SELECT count(*) FROM (SELECT "id", "region", "amount" FROM "memory"."s"."t" '
    "WHERE region = 'EU' OFFSET 0) AS a, "
    '(SELECT "id", "region", "amount" FROM "memory"."s"."t" WHERE region = \'EU\' AND amount > 5) AS b'
)
TYPES = {"id": "BIGINT", "region": "VARCHAR", "amount": "DECIMAL(12,2)"}


def table_with_hidden_rows(hidden: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA s")
    con.execute(
        "CREATE TABLE s.t AS SELECT range AS id, CASE WHEN range < 1000 THEN 'EU' ELSE 'US' END "
        "AS region, CAST(range % 100 AS DECIMAL(12,2)) AS amount FROM range(1000 + ?)",
        [hidden],
    )
    return con


def estimate(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    return plan_cost(con.sql(sql).explain(format="json")).rows


@pytest.mark.parametrize("hidden", [0, 10_000, 1_000_000])
def test_the_stand_in_estimate_ignores_hidden_rows(hidden: int) -> None:
    con = table_with_hidden_rows(hidden)
    visible = con.sql("SELECT count(*) FROM s.t WHERE region = 'EU'").fetchall()[0][0]
    assert visible == 1000
    sql = stand_in_sql(GOVERNED, {("s", "t"): StandIn(visible, TYPES, "region = 'EU'")})
    assert estimate(con, sql) == estimate(table_with_hidden_rows(0), sql)


def test_the_plain_estimate_would_reveal_them() -> None:
    """Why stand-ins: DuckDB's own estimate grows with rows the filter hides."""
    few, many = table_with_hidden_rows(0), table_with_hidden_rows(1_000_000)
    assert estimate(many, GOVERNED) > 10 * estimate(few, GOVERNED)


def test_the_row_filter_is_taken_out_and_the_users_conditions_stay() -> None:
    sql = stand_in_sql(GOVERNED, {("s", "t"): StandIn(1000, TYPES, "region = 'EU'")})
    tree = parse_one(sql, read="duckdb")
    assert "region = 'EU'" not in sql
    assert any(c.sql() == "amount > 5" for c in tree.find_all(exp.GT))
    assert not [t for t in tree.find_all(exp.Table) if t.name == "t"]  # no real table read
