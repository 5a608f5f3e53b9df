"""Row filters: a SQL predicate per role and product, with user attributes bound as literals.

``region = {user.region}`` is parsed once at load time (the attribute becomes a marker
column); at query time each marker is replaced by a typed literal built from the user's
attribute value, never by splicing text.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from policies.errors import PolicyExpressionError
from policies.safe_sql import check_scalar_expression

_ATTRIBUTE = re.compile(r"\{\s*user\.([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_MARKER_PREFIX = "__meshgate_user_"


def parse_filter(text: str, columns: Collection[str]) -> exp.Expr:
    """Parse and validate a row-filter predicate over ``columns``."""
    if not text.strip():
        raise PolicyExpressionError(
            "a filter rule needs a SQL predicate, e.g. region = {user.region}"
        )
    marked = _ATTRIBUTE.sub(lambda m: f'"{_MARKER_PREFIX}{m.group(1)}"', text)
    if "{" in marked or "}" in marked:
        raise PolicyExpressionError("user attributes are written {user.<name>}")
    try:
        predicate = sqlglot.parse_one(marked, read="duckdb")
    except (ParseError, TokenError, RecursionError) as exc:
        raise PolicyExpressionError(f"filter is not valid SQL: {text!r}") from exc
    markers = {c.name for c in predicate.find_all(exp.Column) if c.name.startswith(_MARKER_PREFIX)}
    check_scalar_expression(predicate, allowed_columns={*columns, *markers})
    return predicate


def attributes_used(predicate: exp.Expr) -> set[str]:
    return {
        c.name.removeprefix(_MARKER_PREFIX)
        for c in predicate.find_all(exp.Column)
        if c.name.startswith(_MARKER_PREFIX)
    }


def bind_attributes(predicate: exp.Expr, attributes: Mapping[str, object]) -> exp.Expr:
    """The predicate with each ``{user.x}`` replaced by a typed literal.

    A user lacking an attribute the filter needs sees no rows (the filter is FALSE).
    """
    bound = predicate.copy()
    for column in list(bound.find_all(exp.Column)):
        if not column.name.startswith(_MARKER_PREFIX):
            continue
        name = column.name.removeprefix(_MARKER_PREFIX)
        if name not in attributes:
            return exp.false()
        column.replace(_literal(attributes[name]))
    return bound


def _literal(value: object) -> exp.Expr:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))
