"""Step: accept only one read-only query; refuse writes, DDL, commands and file access."""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import QueryRefused
from gateway.pipeline.query import PlanContext, Query

_READ_STATEMENTS = (exp.Query, exp.Values)

#: Node kinds that are never part of a read-only query, wherever they appear.
_FORBIDDEN = (
    exp.DDL,
    exp.DML,
    exp.Command,
    exp.Pragma,
    exp.Set,
    exp.Use,
    exp.Transaction,
    exp.Copy,
    exp.Attach,
    exp.Detach,
    exp.Install,
    exp.Export,
    exp.Summarize,
    exp.Describe,
    exp.Show,
)

#: Functions that read files, run SQL hidden in strings, or reveal the server's settings.
_FORBIDDEN_FUNCTIONS = frozenset(
    {
        "query", "query_table", "getenv", "current_setting", "glob", "read_blob", "read_text",
        "read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_ndjson",
        "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema", "sniff_csv",
        "duckdb_settings", "duckdb_databases", "duckdb_tables", "duckdb_views",
        "duckdb_columns", "duckdb_functions", "duckdb_extensions", "duckdb_secrets",
        "load_extension", "install_extension", "pragma_version", "current_database",
        "current_schema", "current_schemas", "which_secret", "read_xlsx",
    }
)


def require_read_only(query: Query, context: PlanContext) -> Query:
    """Refuse anything but a read of products: see ``_FORBIDDEN`` and table functions."""
    ast = query.ast
    if not isinstance(ast, _READ_STATEMENTS):
        raise QueryRefused(
            f"only read-only queries are allowed (SELECT, WITH, VALUES, set operations); "
            f"got {_statement_kind(ast)}: the gateway is read-only"
        )
    for node in ast.walk():
        if isinstance(node, _FORBIDDEN):
            raise QueryRefused(
                f"{_statement_kind(node)} is not allowed inside a query: the gateway is read-only"
            )
        if isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
            raise QueryRefused(
                "table functions are not allowed; read data products by name, e.g. "
                "SELECT * FROM sales.orders"
            )
        if isinstance(node, exp.Func) and _function_name(node) in _FORBIDDEN_FUNCTIONS:
            raise QueryRefused(f"function {_function_name(node)}() is not allowed")
    return query


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower()


def _statement_kind(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return f"{str(node.this).upper()} command"
    return node.key.upper()
