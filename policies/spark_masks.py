"""The built-in masks in Spark SQL, giving the values DuckDB gives, byte for byte.

A masked join key must join the same on both engines, so each builder here mirrors its
DuckDB twin in ``policies.masks`` step by step. Where Spark cannot reproduce DuckDB's
value (DuckDB and Java print floating-point numbers differently, time zones render
differently), the builder raises PolicyExpressionError: the query is refused on Spark,
never run with other semantics. ``tests/spark/test_mask_identity.py`` checks every mask
and column type on both engines.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from policies.errors import PolicyExpressionError

SparkBuilder = Callable[[exp.Expr, exp.DataType], exp.Expr]

_T = exp.DataType.Type
#: column types whose CAST to text is the same string on DuckDB and on Spark
_SAME_TEXT = {
    *exp.DataType.TEXT_TYPES,
    *exp.DataType.INTEGER_TYPES,
    _T.DECIMAL,
    _T.DATE,
    _T.TIMESTAMP,
    _T.TIMESTAMPNTZ,  # DuckDB's TIMESTAMP, as sqlglot reads it
    _T.BOOLEAN,
}
#: types DuckDB divides in DOUBLE arithmetic for ``round:N``, as the Spark mask does
_ROUNDED_AS_DOUBLE = {*exp.DataType.INTEGER_TYPES, _T.DECIMAL, _T.DOUBLE}


def _call(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=list(args))


def _refuse(mask: str, data_type: exp.DataType) -> PolicyExpressionError:
    return PolicyExpressionError(
        f"mask {mask} on a {data_type.sql('duckdb')} column has no exact Spark equivalent"
    )


def _text(mask: str, value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
    if not data_type.is_type(*_SAME_TEXT):
        raise _refuse(mask, data_type)
    return exp.Cast(this=value.copy(), to=exp.DataType.build("STRING", dialect="spark"))


def _null_guard(value: exp.Expr, masked: exp.Expr) -> exp.Expr:
    return exp.Case(
        ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null())],
        default=masked,
    )


def _concat(*parts: exp.Expr) -> exp.Expr:
    """DuckDB's ``concat`` skips NULLs; so does ``concat_ws`` with an empty separator."""
    return _call("concat_ws", exp.Literal.string(""), *parts)


def hash_mask(key: str) -> SparkBuilder:
    def build(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
        keyed = _concat(exp.Literal.string(key), _text("hash", value, data_type))
        return _null_guard(value, _call("sha2", keyed, exp.Literal.number(256)))

    return build


def partial_email(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
    text = _text("partial_email", value, data_type)
    masked = _concat(
        _call("left", text, exp.Literal.number(1)),
        exp.Literal.string("***@"),
        _call("split_part", text.copy(), exp.Literal.string("@"), exp.Literal.number(2)),
    )
    return _null_guard(value, masked)


def last4(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
    text = _text("last4", value, data_type)
    masked = _concat(exp.Literal.string("***"), _call("right", text, exp.Literal.number(4)))
    return _null_guard(value, masked)


def year(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
    if not data_type.is_type(_T.DATE, _T.TIMESTAMP, _T.TIMESTAMPNTZ):
        raise _refuse("year", data_type)
    truncated = _call("date_trunc", exp.Literal.string("YEAR"), value.copy())
    return exp.Cast(this=truncated, to=data_type.copy())


def round_mask(step: float) -> SparkBuilder:
    def build(value: exp.Expr, data_type: exp.DataType) -> exp.Expr:
        integral = float(step).is_integer()
        if not data_type.is_type(*_ROUNDED_AS_DOUBLE) or (
            not integral and not data_type.is_type(_T.DOUBLE)
        ):
            raise _refuse(f"round:{step}", data_type)
        as_double = exp.Cast(this=value.copy(), to=exp.DataType.build("DOUBLE"))
        bucket = _call("round", exp.Div(this=as_double, expression=exp.Literal.number(step)))
        return exp.Cast(
            this=exp.Mul(this=bucket, expression=exp.Literal.number(step)), to=data_type.copy()
        )

    return build
