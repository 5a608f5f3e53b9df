"""Column masks: a mask spec (``hash``, ``round:100``, ``sql:<expression>``) -> sqlglot builder.

Masks call fully qualified ``system.main.*`` functions, so that nothing a session could
define (a macro named like a built-in) can change what a mask computes. The hash key
comes from the mesh config, never from a query.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from policies import spark_masks
from policies.errors import PolicyExpressionError
from policies.rules import CompiledMask
from policies.safe_sql import check_scalar_expression

COLUMN_PLACEHOLDER = "value"
REDACTED = "[REDACTED]"

# Least to most restrictive: with several roles a user gets the least restrictive mask.
_STRENGTH = {
    "sql": 1,
    "round": 1,
    "year": 1,
    "last4": 1,
    "partial_email": 1,
    "hash": 2,
    "redact": 3,
    "null": 4,
}

Builder = Callable[[exp.Expr, exp.DataType], exp.Expr]


def _system(name: str, *args: exp.Expr) -> exp.Expr:
    """``system.main.<name>(args)``: a built-in that no session object can shadow."""
    call = exp.Anonymous(this=name, expressions=list(args))
    return exp.Dot(
        this=exp.Dot(this=exp.to_identifier("system"), expression=exp.to_identifier("main")),
        expression=call,
    )


def _text(value: exp.Expr) -> exp.Expr:
    return exp.Cast(this=value, to=exp.DataType.build("VARCHAR"))


def _null_guard(value: exp.Expr, masked: exp.Expr) -> exp.Expr:
    return exp.Case(
        ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null())],
        default=masked,
    )


def hash_mask(key: str) -> Builder:
    def build(value: exp.Expr, _: exp.DataType) -> exp.Expr:
        keyed = _system("concat", exp.Literal.string(key), _text(value.copy()))
        return _null_guard(value, _system("sha256", keyed))

    return build


def _redact(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
    if data_type.is_type(*exp.DataType.TEXT_TYPES):
        return _null_guard(value, exp.Literal.string(REDACTED))
    return exp.Cast(this=exp.Null(), to=data_type.copy())


def _null(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
    return exp.Cast(this=exp.Null(), to=data_type.copy())


def _partial_email(value: exp.Expr, _: exp.DataType) -> exp.Expr:
    masked = _system(
        "concat",
        _system("left", _text(value.copy()), exp.Literal.number(1)),
        exp.Literal.string("***@"),
        _system("split_part", _text(value.copy()), exp.Literal.string("@"), exp.Literal.number(2)),
    )
    return _null_guard(value, masked)


def _last4(value: exp.Expr, _: exp.DataType) -> exp.Expr:
    masked = _system(
        "concat",
        exp.Literal.string("***"),
        _system("right", _text(value.copy()), exp.Literal.number(4)),
    )
    return _null_guard(value, masked)


def _year(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
    truncated = _system("date_trunc", exp.Literal.string("year"), value.copy())
    return exp.Cast(this=truncated, to=data_type.copy())


def _round(step: float) -> Builder:
    def build(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
        bucket = _system("round", exp.Div(this=value.copy(), expression=exp.Literal.number(step)))
        return exp.Cast(
            this=exp.Mul(this=bucket, expression=exp.Literal.number(step)), to=data_type.copy()
        )

    return build


def _custom(template: exp.Expr) -> Builder:
    def build(value: exp.Expr, _: exp.DataType) -> exp.Expr:
        expression = template.copy()
        for column in list(expression.find_all(exp.Column)):
            column.replace(value.copy())
        return expression

    return build


_TYPE_FAMILIES = {
    "partial_email": exp.DataType.TEXT_TYPES,
    "last4": exp.DataType.TEXT_TYPES,
    "year": exp.DataType.TEMPORAL_TYPES,
    "round": exp.DataType.NUMERIC_TYPES,
}


def compile_mask(spec: str, data_type: exp.DataType | None, hash_key: str | None) -> CompiledMask:
    """Validate ``spec`` (for a column of ``data_type`` when known) and return its builder.

    Raises PolicyExpressionError with the reason.
    """
    name, _, argument = spec.partition(":")
    name = name.strip().lower()
    if name not in _STRENGTH:
        raise PolicyExpressionError(
            f"unknown mask {spec!r}; use one of hash, redact, partial_email, last4, null, year, "
            "round:<N>, sql:<expression over `value`>"
        )
    family = _TYPE_FAMILIES.get(name)
    if family and data_type is not None and not data_type.is_type(*family):
        raise PolicyExpressionError(
            f"mask {name} does not apply to a {data_type.sql('duckdb')} column"
        )
    builder: Builder
    spark: spark_masks.SparkBuilder | None
    if name == "hash":
        if not hash_key:
            raise PolicyExpressionError("mask hash needs `[governance] hash_key` in mesh.toml")
        builder, spark = hash_mask(hash_key), spark_masks.hash_mask(hash_key)
    elif name == "round":
        try:
            step = float(argument)
        except ValueError:
            step = 0.0
        if step <= 0:
            raise PolicyExpressionError(
                f"mask {spec!r}: round needs a positive step, e.g. round:100"
            )
        exact = int(step) if step.is_integer() else step
        builder, spark = _round(exact), spark_masks.round_mask(exact)
    elif name == "sql":
        builder, spark = _custom(_parse_custom(argument)), None
    else:
        builder, spark = {
            "redact": (_redact, _redact),  # engine-neutral SQL
            "null": (_null, _null),
            "partial_email": (_partial_email, spark_masks.partial_email),
            "last4": (_last4, spark_masks.last4),
            "year": (_year, spark_masks.year),
        }[name]
    return CompiledMask(spec=spec, strength=_STRENGTH[name], build=builder, build_spark=spark)


def _parse_custom(text: str) -> exp.Expr:
    try:
        expression = sqlglot.parse_one(text, read="duckdb")
    except (ParseError, RecursionError) as exc:
        raise PolicyExpressionError(f"custom mask is not valid SQL: {text!r}") from exc
    check_scalar_expression(expression, allowed_columns={COLUMN_PLACEHOLDER})
    return expression
