"""Step: accept only one read-only query; refuse writes, DDL, commands, table functions and
any function outside the allow-list (``policies.safe_sql``)."""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import QueryRefused
from gateway.planning.query import PlanContext, Query
from policies.safe_sql import function_refusal, statement_amplification_refusal

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


def require_read_only(query: Query, context: PlanContext) -> Query:
    """Refuse anything but a read of products: see ``_FORBIDDEN`` and table functions."""
    ast = query.ast
    assert ast is not None  # set by parse_statement, the first step
    if not isinstance(ast, _READ_STATEMENTS):
        raise QueryRefused(
            f"only read-only queries are allowed (SELECT, WITH, VALUES, set operations, "
            f"PIVOT, UNPIVOT); "
            f"got {_statement_kind(ast)}: the gateway is read-only"
        )
    literals: list[exp.Literal] = []
    functions: list[exp.Func] = []
    for node in ast.walk():
        if isinstance(node, _FORBIDDEN):
            raise QueryRefused(
                f"{_statement_kind(node)} is not allowed inside a query: the gateway is read-only"
            )
        if isinstance(node, exp.Literal):
            literals.append(node)
        elif isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
            raise QueryRefused(
                "table functions are not allowed; read data products by name, e.g. "
                "SELECT * FROM sales.orders"
            )
        elif isinstance(node, exp.Func):
            refusal = function_refusal(node)
            if refusal:
                raise QueryRefused(refusal)
            functions.append(node)
    refusal = statement_amplification_refusal(literals, functions)
    if refusal:
        raise QueryRefused(refusal)
    return query


def _statement_kind(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return f"{str(node.this).upper()} command"
    if isinstance(node, (exp.Column, exp.Identifier, exp.Literal)):
        return f"the bare word {node.sql('duckdb')!r}, which is not a query"
    return node.key.upper()
