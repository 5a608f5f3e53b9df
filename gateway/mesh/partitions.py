"""Split endpoints: a row-wise scan of one product, answered as several partition scans.

When ``[nodes] split_endpoints = N > 1``, every engine (gateway and nodes, all built from
the same mesh.toml) binds N hidden views per splittable product, one per partition (see
``Connector.partitions`` and ``naming.partition_table``): disjoint, and together every
row once. A governed query that reads one product row by row (the secure subquery
filters and masks each row; the outer query only projects and filters rows) gives the
same multiset of rows when that product's table is replaced by each partition view in
turn and the results are concatenated (the product read through its secure subquery, or
directly when its user sees it whole). ``partition_sqls`` does that substitution on the
governed syntax tree (sqlglot, never text) and refuses, failing closed, anything that
combines rows: aggregates, DISTINCT, ORDER BY, LIMIT/OFFSET, windows, joins, set
operations, other subqueries, sampling, or any function DuckDB does not list as scalar.

Partition views are never catalogued, so the parse and resolve steps never let a user
name one: they exist only in SQL the gateway generates and seals.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from gateway.engine.streaming import PlannedQuery
from gateway.planning.barrier import is_barrier
from gateway.planning.naming import INTERNAL_CATALOG, partition_table

#: Arguments a row-wise SELECT may carry: projections, one source, a WHERE.
_ROW_WISE_SELECT_ARGS = frozenset({"expressions", "from_", "where"})
_PLAIN_TABLE_ARGS = frozenset({"this", "db", "catalog"})
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def partition_sqls(planned: PlannedQuery, count: int) -> tuple[str, ...]:
    """The SQL of each partition of ``planned`` (``count`` of them), or ``()`` when the
    query is not a row-wise scan of one product worth splitting."""
    if count < 2 or len(planned.products) != 1 or planned.query.explain:
        return ()
    bound, pieces = planned.catalog.engine.partitions.get(planned.products[0], (0, 0))
    if bound != count or pieces < 2:
        return ()
    ast = planned.query.ast or _parse(planned.sql)
    table = row_wise_product(ast) if ast is not None else None
    if ast is None or table is None:
        return ()
    return tuple(
        substitute(ast, table, partition_table(table.db, table.name, index, count)).sql(
            "duckdb", comments=False
        )
        for index in range(count)
    )


def row_wise_product(ast: exp.Expr) -> exp.Table | None:
    """The product table of a governed query that maps each product row to at most one
    (or, with UNNEST, several) result rows independently of every other row; else None."""
    if not _plain_select(ast):
        return None
    source = ast.args["from_"].this
    if isinstance(source, exp.Table):  # a product its user sees whole: its view itself
        table, secure, plain = source, ast, _PLAIN_TABLE_ARGS | {"alias"}
    elif isinstance(source, exp.Subquery) and not set(_present(source)) - {"this", "alias"}:
        secure = source.this
        if not _plain_select(secure, behind_barrier=True):
            return None
        table, plain = secure.args["from_"].this, _PLAIN_TABLE_ARGS
    else:
        return None
    if not isinstance(table, exp.Table) or table.catalog != INTERNAL_CATALOG:
        return None
    if set(_present(table)) - plain:
        return None
    if len(list(ast.find_all(exp.Table))) != 1 or any(
        query not in (ast, source, secure) for query in ast.find_all(exp.Query)
    ):
        return None  # the product alone, read by the secure subquery alone
    outer = [node for node in _outer_nodes(ast, source)]
    if not all(_row_wise_function(node) for node in outer if isinstance(node, exp.Func)):
        return None
    if any(isinstance(node, (exp.Window, exp.AggFunc)) for node in outer):
        return None
    return table


def substitute(ast: exp.Expr, table: exp.Table, replacement: exp.Table) -> exp.Expr:
    """A copy of ``ast`` in which ``table`` (a node of ``ast``) reads ``replacement``,
    under ``table``'s alias."""
    path = _path_to(ast, table)
    copy = ast.copy()
    node = copy
    for key, index in path:
        child = node.args[key]
        node = child[index] if index is not None else child
    replaced = replacement.copy()
    if table.args.get("alias") is not None:
        replaced.set("alias", table.args["alias"].copy())
    node.replace(replaced)
    return copy


def _plain_select(node: exp.Expr, behind_barrier: bool = False) -> bool:
    """A SELECT of projections from one source with a WHERE; ``behind_barrier``: a secure
    subquery, which may also end in its security barrier."""
    if not isinstance(node, exp.Select) or node.args.get("from_") is None:
        return False
    allowed = _ROW_WISE_SELECT_ARGS | ({"offset"} if behind_barrier and is_barrier(node) else set())
    return not set(_present(node)) - allowed


def _present(node: exp.Expr) -> list[str]:
    """The argument names of ``node`` that hold something."""
    return [key for key, value in node.args.items() if value not in (None, False, [], "")]


def _outer_nodes(ast: exp.Expr, source: exp.Subquery) -> Iterator[exp.Expr]:
    """Every node of the outer query, not descending into its secure subquery."""
    stack = [ast]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in node.iter_expressions() if child is not source)


def _row_wise_function(node: exp.Func) -> bool:
    """True for a function DuckDB evaluates row by row (fail closed: aggregates, windows
    and macros, which may hide aggregates, are not)."""
    if isinstance(node, (exp.AggFunc, exp.Window)):
        return False
    scalar, combining = _function_kinds()
    if isinstance(node, exp.Anonymous):
        return node.name.lower() in scalar
    call = _CALL.match(node.sql("duckdb"))
    return call is None or call.group(1).lower() not in combining


@functools.cache
def _function_kinds() -> tuple[frozenset[str], frozenset[str]]:
    """DuckDB's scalar function names, and the names of every other kind of function."""
    with duckdb.connect(":memory:") as con:
        rows = con.sql(
            "SELECT DISTINCT function_name, function_type FROM duckdb_functions()"
        ).fetchall()
    scalar = {name.lower() for name, kind in rows if kind == "scalar"}
    other = {name.lower() for name, kind in rows if kind != "scalar"}
    return frozenset(scalar - other), frozenset(other)


def _path_to(root: exp.Expr, target: exp.Expr) -> list[tuple[str, int | None]]:
    """The (argument, index) steps from ``root`` down to ``target``."""
    steps: list[tuple[str, int | None]] = []
    node = target
    while node is not root:
        parent, key = node.parent, node.arg_key
        assert parent is not None and key is not None  # ``target`` is a node below ``root``
        value = parent.args[key]
        steps.append((key, value.index(node) if isinstance(value, list) else None))
        node = parent
    return steps[::-1]


def _parse(sql: str) -> exp.Expr | None:
    """The syntax tree of governed SQL (a prepared statement keeps only its text)."""
    try:
        return sqlglot.parse_one(sql, dialect="duckdb")
    except SqlglotError:
        return None
