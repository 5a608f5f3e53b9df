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
from gateway.planning.query import PlanContext, Query

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
#: EXTRACT parts both engines give alike (Spark's SECOND keeps the fraction, DOW differs)
_SAME_PARTS = frozenset({"YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "QUARTER"})
_REFUSED: dict[type[exp.Expr], str] = {
    exp.ILike: "ILIKE (case folding of non-ASCII text differs)",
    exp.Escape: "LIKE ... ESCAPE",
    exp.TryCast: "TRY_CAST",
    exp.DPipe: "|| (numbers become text otherwise)",
    exp.IntDiv: "integer division (//)",
    exp.Qualify: "QUALIFY",
    exp.Pivot: "PIVOT",
    exp.Unnest: "UNNEST",
    exp.TableSample: "SAMPLE",
    exp.Lateral: "LATERAL",
}
#: Spark substitutes ``${...}`` in a statement's text before it parses it: its conf and,
#: as ``${env:NAME}`` and ``${system:name}``, the Spark server's environment variables
#: (its Spark Connect token, say) and Java system properties
_SUBSTITUTED = "${"
#: ``$\{`` in a Spark string literal reads ``${`` (Spark drops a backslash before a
#: character that needs no escape), and is not substituted
_NOT_SUBSTITUTED = "$\\{"


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


def spark_semantics(query: Query, context: PlanContext) -> Query:
    """Planning step (for Spark only, before ``secure_sources``): the user's statement and
    every row filter that applies to it use only what Spark computes like DuckDB. The
    masks and the sources the gateway builds for Spark are exact by construction."""
    if context.target == "spark":
        assert query.ast is not None  # set by parse_statement, the first step
        check_spark_semantics(query.ast)
        for access in query.accesses.values():
            if access.row_filter is not None:
                check_spark_semantics(access.row_filter)
    return query


def _refused(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Pivot) and node.args.get("unpivot"):
        return "UNPIVOT"  # Spark's PIVOT and UNPIVOT differ in syntax and in the names they give
    for kind, name in _REFUSED.items():
        if isinstance(node, kind):
            return name
    if isinstance(node, exp.Identifier) and _SUBSTITUTED in node.name:
        return f"an identifier containing {_SUBSTITUTED}"
    if isinstance(node, exp.Like) and not _plain_pattern(node.expression):
        return "LIKE with a pattern that is not a literal free of backslashes"
    if isinstance(node, exp.Substring) and not _plain_substring(node):
        return "substring() with a start or length that is not a positive literal"
    if isinstance(node, exp.Extract) and node.name.upper() not in _SAME_PARTS:
        return f"EXTRACT({node.name.upper()})"
    if isinstance(node, exp.Cast) and _refused_cast(node):
        return f"a cast to {node.to.sql('duckdb')}"
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        return None if name in SAME_NAMED_ON_SPARK else f"the function {name}()"
    if isinstance(node, exp.Func) and not isinstance(node, SAME_ON_SPARK):
        return f"the function {node.sql_name().lower()}()"
    return None


def _refused_cast(node: exp.Cast) -> bool:
    """Casts that differ: a fractional number to an integer (DuckDB rounds, Spark cuts),
    anything but a literal to text (DuckDB and Java print floating point otherwise)."""
    if node.to.is_type(*_INTEGER_TARGETS):
        return not _integral(node.this)
    if node.to.is_type(*exp.DataType.TEXT_TYPES):
        return not isinstance(node.this, (exp.Literal, exp.Null))
    return False


def _plain_pattern(pattern: exp.Expr) -> bool:
    """A LIKE pattern both engines read alike: Spark's default escape is the backslash,
    DuckDB has none."""
    return isinstance(pattern, exp.Literal) and pattern.is_string and "\\" not in pattern.this


def _plain_substring(node: exp.Substring) -> bool:
    """Positions both engines count alike: a start of 1 or more, a length of 0 or more."""
    start, length = node.args.get("start"), node.args.get("length")
    if not (isinstance(start, exp.Literal) and start.is_int and int(start.this) >= 1):
        return False
    return length is None or (
        isinstance(length, exp.Literal) and length.is_int and int(length.this) >= 0
    )


def _integral(value: exp.Expr) -> bool:
    """True for what casts to an integer alike on both engines: NULL, a whole-number
    literal (also as text), and the ``round:N`` mask's whole multiple of N."""
    if isinstance(value, exp.Null) or (isinstance(value, exp.Literal) and value.is_int):
        return True
    if isinstance(value, exp.Literal) and value.is_string:
        return value.this.strip().lstrip("+-").isdigit()
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
    """``ast`` (checked by the ``spark_semantics`` step) written as Spark SQL, averages
    and divisions in DOUBLE as on DuckDB; with no ``${`` for Spark to substitute
    (identifiers holding one are refused; in string literals, the only other place one
    can stand, it is written ``$\\{``, which Spark reads as ``${``)."""
    sql = ast.transform(_in_double).sql(dialect="spark", comments=False)
    return sql.replace(_SUBSTITUTED, _NOT_SUBSTITUTED)
