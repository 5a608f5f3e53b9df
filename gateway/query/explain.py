"""EXPLAIN and EXPLAIN POLICY results: what the engine will do, and which rule did what."""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
from sqlglot import exp

from gateway.catalog.catalog import Catalog
from gateway.engine.errors import engine_failure
from gateway.engine.streaming import PlannedQuery
from gateway.planning.query import Query

_ESTIMATE = re.compile(r"~[\d,.]+ rows?")

EXPLAIN_SCHEMA = pa.schema(
    [pa.field("explain_key", pa.utf8()), pa.field("explain_value", pa.utf8())]
)
POLICY_SCHEMA = pa.schema(
    [
        pa.field("product", pa.utf8()),
        pa.field("column", pa.utf8()),
        pa.field("decision", pa.utf8()),
        pa.field("rule", pa.utf8()),
    ]
)


def explanation(planned: PlannedQuery, show_hidden: bool, engine: str) -> pa.Table:
    """The result of an EXPLAIN or EXPLAIN POLICY statement (see the two functions below);
    ``engine`` says which engine would run the statement, and why."""
    if planned.query.explain == "policy":
        return policy_explanation(planned.query, show_hidden=show_hidden, engine=engine)
    try:
        return plan_explanation(planned.catalog, planned.query, planned.parameters, engine)
    except duckdb.Error as exc:
        raise engine_failure(planned.catalog.engine, exc, planned.products) from exc


def policy_explanation(query: Query, show_hidden: bool, engine: str | None = None) -> pa.Table:
    """One row per product and column: allowed, filtered, masked or denied, and by which rule
    (after the rewritten SQL and, when given, the engine that runs it).

    Columns the user may not see are listed only with ``show_hidden`` (the operator's
    ``meshgate explain``): over Flight SQL an invisible column must stay invisible.
    """
    rows = [
        {
            "product": "(query)",
            "column": None,
            "decision": "rewritten SQL",
            "rule": query.display_sql,
        }
    ]
    if engine is not None:
        rows.append({"product": "(query)", "column": None, "decision": "engine", "rule": engine})
    for key, access in sorted(query.accesses.items()):
        for reason in access.reasons:
            decision = "rows filtered" if reason.startswith("rows filtered") else "read allowed"
            rows.append({"product": key, "column": None, "decision": decision, "rule": reason})
        for column in access.columns:
            if not column.visible and not show_hidden:
                continue
            if not column.visible:
                decision = "denied (invisible)"
            elif column.mask is not None:
                decision = f"masked ({column.mask.spec})"
            else:
                decision = "visible"
            rows.append(
                {
                    "product": key,
                    "column": column.name,
                    "decision": decision,
                    "rule": "; ".join(column.reasons) or None,
                }
            )
    return pa.Table.from_pylist(rows, schema=POLICY_SCHEMA)


def plan_explanation(
    catalog: Catalog, query: Query, parameters: tuple[object, ...], engine: str | None = None
) -> pa.Table:
    """DuckDB's physical plan of the governed query (and the engine that runs it).

    The plan is made from the display SQL, in which the hash key is a marker: DuckDB wraps
    long constants across lines of its plan drawing, so hiding the key afterwards would
    not be reliable. Both texts give the same plan.
    """
    if any(access.row_filter is not None for access in query.accesses.values()):
        # The optimizer prunes with base-table statistics (an "Empty Result" for a range
        # with no rows at all), so the plan would reveal rows outside the row filter.
        text = "withheld: a row filter applies, and the plan reflects statistics of rows outside it"
    else:
        assert query.display_sql is not None  # set by generate_sql with the SQL it shows
        with catalog.engine.cursor(pooled=not query.columns_from_data) as cursor:
            text = _physical_plan(cursor, query, parameters)
        # Cardinality estimates come from the base tables: they would hint at hidden rows.
        text = _ESTIMATE.sub("~? rows", text)
    rows = [
        {"explain_key": "governed_sql", "explain_value": query.display_sql},
        {"explain_key": "physical_plan", "explain_value": text},
    ]
    if engine is not None:
        rows.append({"explain_key": "engine", "explain_value": engine})
    return pa.Table.from_pylist(rows, schema=EXPLAIN_SCHEMA)


def _physical_plan(
    cursor: duckdb.DuckDBPyConnection, query: Query, parameters: tuple[object, ...]
) -> str:
    """DuckDB's drawing of the plan of ``query.display_sql``. A dynamic PIVOT is explained
    by an EXPLAIN statement: DuckDB runs such a PIVOT as soon as it is made a relation, and
    would explain the scan of its materialised result instead."""
    assert query.display_sql is not None
    if not query.columns_from_data:
        return cursor.sql(query.display_sql, params=list(parameters) or None).explain()
    statement = exp.Command(this="EXPLAIN", expression=exp.Literal.string(query.display_sql))
    rows = cursor.execute(statement.sql("duckdb"), list(parameters) or None).fetchall()
    return "\n".join(str(row[1]) for row in rows)
