"""Which SQL functions a query, a mask or a row filter may call.

An allow-list: a function must be a DuckDB built-in (scalar, aggregate, window or macro,
read from ``duckdb_functions()``) or a function sqlglot knows, and not in
``FORBIDDEN_FUNCTIONS`` (file readers, SQL hidden in strings, settings and session
introspection such as ``current_query()``, which would reveal rewritten SQL).
Masks and row filters are stricter: scalar and deterministic only.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache

import duckdb
from sqlglot import exp

from policies.errors import PolicyExpressionError

FORBIDDEN_FUNCTIONS = frozenset(
    {
        "query", "query_table", "getenv", "getvariable", "current_setting", "current_query",
        "current_query_id", "current_database", "current_catalog", "current_schema",
        "current_schemas", "current_connection_id", "current_transaction_id", "glob",
        "read_blob", "read_text", "read_csv", "read_csv_auto", "read_json", "read_json_auto",
        "read_json_objects", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
        "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema",
        "parquet_file_metadata", "parquet_kv_metadata", "parquet_bloom_probe", "sniff_csv",
        "which_secret", "nextval", "currval", "setseed", "pg_sleep", "sleep_ms",
        "load_extension", "install_extension", "json_serialize_sql", "json_deserialize_sql",
        "json_serialize_plan", "json_execute_serialized_sql", "enum_range", "enum_range_boundary",
        "enum_first", "enum_last", "enum_code",
        # error() turns a predicate into an oracle on rows a row filter hides;
        # stats() shows the base table's min/max through any filter
        "error", "stats",
    }
)
_NONDETERMINISTIC = frozenset({"random", "rand", "uuid", "uuidv4", "uuidv7", "gen_random_uuid"})
_QUERY_KINDS = frozenset({"scalar", "aggregate", "window", "macro"})


@lru_cache(maxsize=1)
def duckdb_function_kinds() -> dict[str, frozenset[str]]:
    """Every DuckDB built-in function name and its kinds (scalar, aggregate, table, ...)."""
    with duckdb.connect(":memory:") as con:
        rows = con.sql(
            "SELECT function_name, list(DISTINCT function_type) FROM duckdb_functions() "
            "WHERE NOT function_name LIKE '\\_\\_%' ESCAPE '\\' GROUP BY ALL"
        ).fetchall()
    return {name.lower(): frozenset(kinds) for name, kinds in rows}


def function_name(node: exp.Func) -> str:
    """The name DuckDB will see for ``node`` (lower case)."""
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    generated = node.sql("duckdb")
    head = generated.split("(", 1)[0].strip().lower()
    return head if head.replace("_", "").isalnum() else node.sql_name().lower()


def function_refusal(node: exp.Func, scalar_only: bool = False) -> str | None:
    """Why ``node`` may not be called, or None when it may."""
    name = function_name(node)
    kinds = duckdb_function_kinds().get(name)
    if name in FORBIDDEN_FUNCTIONS or (kinds is not None and not kinds & _QUERY_KINDS):
        return f"function {name}() is not allowed"
    if isinstance(node, exp.Anonymous) and kinds is None:
        return f"unknown function {name}()"
    if scalar_only:
        if name in _NONDETERMINISTIC:
            return f"function {name}() is not deterministic"
        if isinstance(node, (exp.AggFunc, exp.Window)) or (kinds is not None and "scalar" not in kinds and "macro" not in kinds):
            return f"function {name}() is not a scalar function"
    return None


def check_scalar_expression(expression: exp.Expression, allowed_columns: Collection[str]) -> None:
    """Raise PolicyExpressionError unless ``expression`` is a side-effect-free scalar
    expression over ``allowed_columns`` (no subqueries, tables, aggregates or parameters)."""
    allowed = {c.lower() for c in allowed_columns}
    for node in expression.walk():
        if isinstance(node, (exp.Query, exp.Subquery, exp.Table, exp.Star, exp.Window, exp.Placeholder)):
            raise PolicyExpressionError(
                f"{node.key.upper()} is not allowed here: use a scalar expression over the columns"
            )
        if isinstance(node, exp.Func):
            refusal = function_refusal(node, scalar_only=True)
            if refusal:
                raise PolicyExpressionError(refusal)
        if isinstance(node, exp.Column):
            if node.table or node.name.lower() not in allowed:
                raise PolicyExpressionError(
                    f"unknown column {node.sql('duckdb')}; allowed: {', '.join(sorted(allowed))}"
                )
