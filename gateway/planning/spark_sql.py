"""Governed SQL as Spark SQL: only what means the same on Spark as on DuckDB.

The governed tree is planned for Spark (masks and barrier built for it, see
``policies.spark_masks`` and ``gateway.planning.barrier``); what is left is the user's
own SQL, written for DuckDB. Functions and operators are let through to Spark only when
Spark computes the same values; anything else refuses the query on Spark (``route =
"large"`` then keeps it on DuckDB), rather than run it with other semantics.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import QueryRefused

#: functions whose Spark SQL (as sqlglot writes it) gives DuckDB's values
SAME_ON_SPARK: tuple[type[exp.Func], ...] = (
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Min,
    exp.Max,
    exp.Coalesce,
    exp.Case,
    exp.If,
    exp.Cast,
    exp.Abs,
    exp.Upper,
    exp.Lower,
    exp.Length,
    exp.Substring,
    exp.Extract,
    exp.Year,
    exp.Month,
    exp.Day,
    exp.RowNumber,
    exp.Rank,
    exp.DenseRank,
    exp.And,  # sqlglot models these operators as functions
    exp.Or,
    exp.Exists,
)
#: plain calls the masks and the barrier write, the same functions on both engines
SAME_NAMED_ON_SPARK = frozenset(
    {
        "sha2",
        "concat_ws",
        "left",
        "right",
        "split_part",
        "date_trunc",
        "round",
        "monotonically_increasing_id",
    }
)
#: DuckDB rounds a fractional number cast to an integer, Spark truncates it
_INTEGER_TARGETS = exp.DataType.INTEGER_TYPES
#: DuckDB's ``avg`` and ``/`` compute in DOUBLE for every numeric type, DECIMAL included
#: (the result is a DOUBLE); Spark's do so for every type but DECIMAL, which stays DECIMAL
#: and is rounded to a few digits (avg to the input's scale + 4, ``/`` to scale 6 when
#: the precision runs out): their operands go to Spark as DOUBLE
_DOUBLE = exp.DataType.Type.DOUBLE
#: syntax Spark reads otherwise, or not at all
_REFUSED: dict[type[exp.Expr], str] = {
    exp.IntDiv: "integer division (//)",
    exp.Qualify: "QUALIFY",
    exp.Pivot: "PIVOT",
    exp.Unnest: "UNNEST",
    exp.TableSample: "SAMPLE",
    exp.Lateral: "LATERAL",
}


def check_spark_semantics(ast: exp.Expr) -> None:
    """Raise QueryRefused naming the first function or construct of ``ast`` that Spark
    would compute differently from DuckDB."""
    for node in ast.walk():
        refused = _refused(node)
        if refused is not None:
            raise QueryRefused(
                f"{refused} has no exact Spark equivalent; this query cannot run on Spark "
                "(rewrite it without, or let it run on the gateway's DuckDB)"
            )


def _refused(node: exp.Expr) -> str | None:
    for kind, name in _REFUSED.items():
        if isinstance(node, kind):
            return name
    if (
        isinstance(node, (exp.Cast, exp.TryCast))
        and node.to.is_type(*_INTEGER_TARGETS)
        and not _integral(node.this)
    ):
        return f"a cast to {node.to.sql('duckdb')}"
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        return None if name in SAME_NAMED_ON_SPARK else f"the function {name}()"
    if isinstance(node, exp.Func) and not isinstance(node, SAME_ON_SPARK):
        return f"the function {node.sql_name().lower()}()"
    return None


def _integral(value: exp.Expr) -> bool:
    """True for what casts to an integer alike on both engines: NULL, a whole-number or
    text literal, and the ``round:N`` mask's whole multiple of N (``round(...) * N``)."""
    if isinstance(value, exp.Null) or (
        isinstance(value, exp.Literal) and (value.is_int or value.is_string)
    ):
        return True
    return (
        isinstance(value, exp.Mul)
        and isinstance(value.this, exp.Anonymous)
        and value.this.name.lower() == "round"
        and isinstance(value.expression, exp.Literal)
        and float(value.expression.this).is_integer()
    )


def _as_double(value: exp.Expr) -> exp.Expr:
    if isinstance(value, exp.Cast) and value.to.is_type(_DOUBLE):
        return value
    return exp.Cast(this=value, to=exp.DataType.build(_DOUBLE))


def _in_double(node: exp.Expr) -> exp.Expr:
    """``avg(x)`` as ``avg(CAST(x AS DOUBLE))``, ``a / b`` as ``CAST(a AS DOUBLE) /
    CAST(b AS DOUBLE)``: what Spark does anyway for integers and floats, and what DuckDB
    does for DECIMAL too."""
    if isinstance(node, exp.Avg):
        inner = node.this
        if isinstance(inner, exp.Distinct):
            inner.set("expressions", [_as_double(e) for e in inner.expressions])
        else:
            node.set("this", _as_double(inner))
    elif isinstance(node, exp.Div):
        node.set("this", _as_double(node.this))
        node.set("expression", _as_double(node.expression))
    return node


def spark_sql(ast: exp.Expr) -> str:
    """``ast`` checked (``check_spark_semantics``) and written as Spark SQL, averages
    and divisions in DOUBLE as on DuckDB."""
    check_spark_semantics(ast)
    return ast.transform(_in_double).sql(dialect="spark", comments=False)
