"""Which SQL functions a query, a mask or a row filter may call.

An allow-list: a function must be a DuckDB built-in (scalar, aggregate, window or macro,
read from ``duckdb_functions()``) or a function sqlglot knows, and not in
``FORBIDDEN_FUNCTIONS`` (file readers, SQL hidden in strings, settings and session
introspection such as ``current_query()``, which would reveal rewritten SQL).
Masks and row filters are stricter: scalar and deterministic only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
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
    """The name DuckDB will see for ``node`` (lower case).

    sqlglot may render a function under another name (``GenerateSeries`` as ``range``), so
    the name comes from the DuckDB generator, run on a copy of the call whose arguments are
    placeholders: constant time per call, cached per class and argument shape.
    """
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    shape = tuple(
        (key, type(value).__name__ if isinstance(value, (exp.Expression, list)) else value)
        for key, value in sorted(node.args.items())
    )
    return _generated_name(type(node), shape)


@lru_cache(maxsize=4096)
def _generated_name(cls: type[exp.Func], shape: tuple) -> str:
    args = {}
    for key, value in shape:
        if value == "list":
            args[key] = [exp.Null()]
        elif isinstance(value, str) and hasattr(exp, value) and value[0].isupper():
            args[key] = exp.DataType.build("INT") if value == "DataType" else exp.Null()
        else:
            args[key] = value
    try:
        generated = cls(**args).sql("duckdb")
    except Exception:  # an unusual argument shape: fall back to sqlglot's own name
        return cls.sql_names()[0].lower() if cls.sql_names() else cls.__name__.lower()
    head = generated.split("(", 1)[0].strip().lower()
    return head if head.replace("_", "").isalnum() else cls.key.lower()


_FORBIDDEN_PREFIXES = ("pg_", "duckdb_", "has_", "pragma_")
_FORBIDDEN_CATALOG_HELPERS = frozenset(
    {"format_type", "get_block_size", "col_description", "obj_description", "shobj_description",
     "current_role", "current_user", "session_user", "version"}
)


def function_refusal(node: exp.Func, scalar_only: bool = False) -> str | None:
    """Why ``node`` may not be called, or None when it may."""
    name = function_name(node)
    if name.startswith(_FORBIDDEN_PREFIXES) or name in _FORBIDDEN_CATALOG_HELPERS:
        return f"function {name}() is not allowed (catalog introspection)"
    amplification = amplification_refusal(node)
    if amplification:
        return amplification
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


# -- functions whose result grows with an argument ------------------------------------
#
# DuckDB's memory_limit and max_execution_time do not bound a scalar function that builds
# one huge value (``len(range(0, 3e8))``, ``repeat('x', 2e9))``). Such "amplifiers" are
# allowed only with constant size arguments under a bound, never inside another amplifier
# or a lambda (where they would run once per element).

MAX_GENERATED_ELEMENTS = 100_000
MAX_GENERATED_WIDTH = 10_000

#: function name -> positions of its size arguments (None: every numeric argument).
_AMPLIFIERS: dict[str, tuple[int, ...] | None] = {
    "range": None,
    "generate_series": None,
    "repeat": (1,),
    "lpad": (1,),
    "rpad": (1,),
    "list_resize": (1,),
    "array_resize": (1,),
    "bar": (3,),
}
_FORMATTERS = frozenset({"printf", "format"})


def amplification_refusal(node: exp.Func) -> str | None:
    """Why ``node`` could build an unbounded value, or None when it cannot."""
    name = function_name(node)
    if name not in _AMPLIFIERS and name not in _FORMATTERS:
        return None
    if any(
        isinstance(a, exp.Lambda) or (isinstance(a, exp.Func) and function_name(a) in _AMPLIFIERS)
        for a in _ancestors(node)
    ):
        return f"{name}() may not be nested in a lambda or another generating function"
    arguments = list(node.iter_expressions())
    if name in _FORMATTERS:
        pattern = arguments[0] if arguments else None
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            return f"{name}() needs a constant format string"
        text = pattern.this
        if "*" in text or _has_nested_field(text):
            return f"{name}() widths must be written in the format string, not passed as arguments"
        widths = [int(w) for w in _digits(text)]
        if any(w > MAX_GENERATED_WIDTH for w in widths):
            return f"{name}() widths are limited to {MAX_GENERATED_WIDTH}"
        return None
    positions = _AMPLIFIERS[name]
    sizes = [a for i, a in enumerate(arguments) if positions is None or i in positions]
    values = [_constant_number(a) for a in sizes]
    if any(v is None for v in values):
        return f"{name}() needs constant size arguments"
    if name in ("range", "generate_series"):
        start, stop, step = _series_bounds(values)
        count = abs((stop - start) / step) if step else float("inf")
        if count > MAX_GENERATED_ELEMENTS:
            return f"{name}() is limited to {MAX_GENERATED_ELEMENTS:,} elements"
        return None
    if name == "bar" and not sizes:
        return None
    if any(abs(v) > MAX_GENERATED_WIDTH for v in values):
        return f"{name}() sizes are limited to {MAX_GENERATED_WIDTH:,}"
    return None


#: Functions that substitute text: the output can grow by the replacement's length for
#: every match. The replacement (argument index) must be a constant.
_REPLACERS = {"replace": 2, "regexp_replace": 2, "translate": 2, "list_transform": None,
              "array_transform": None, "apply": None, "list_apply": None, "array_apply": None}
MAX_STRING_CONSTANT = 1_000


def amplification_factor(node: exp.Func) -> float:
    """How much larger than its inputs an (allowed) amplifier's output can be."""
    name = function_name(node)
    if name in _REPLACERS:
        index = _REPLACERS[name]
        arguments = list(node.iter_expressions())
        if index is None:  # a lambda over a list: each element may become a constant
            longest = max((len(lit.this) for lit in node.find_all(exp.Literal) if lit.is_string), default=1)
            return float(max(1, longest))
        replacement = arguments[index] if len(arguments) > index else None
        if isinstance(replacement, exp.Literal) and replacement.is_string:
            return float(max(1, len(replacement.this)))
        return float("inf")  # a replacement computed from data: unbounded
    positions = _AMPLIFIERS.get(name, ())
    if name not in _AMPLIFIERS:
        return 1.0
    arguments = list(node.iter_expressions())
    values = [_constant_number(a) or 1.0 for i, a in enumerate(arguments) if positions is None or i in positions]
    if name in ("range", "generate_series"):
        start, stop, step = _series_bounds(values)
        return max(1.0, abs((stop - start) / step)) if step else float("inf")
    return max([1.0, *map(abs, values)])


MAX_STATEMENT_AMPLIFICATION = 1_000_000


def statement_amplification_refusal(
    literals: Iterable[exp.Literal], functions: Iterable[exp.Func]
) -> str | None:
    """Amplifiers can feed each other through subqueries and CTEs: bound their product
    over the whole statement, given all its ``literals`` and ``functions`` (the caller
    collects them in the walk it makes anyway)."""
    for literal in literals:
        if literal.is_string and len(literal.this) > MAX_STRING_CONSTANT:
            return f"string constants are limited to {MAX_STRING_CONSTANT:,} characters"
    total = 1.0
    for node in functions:
        total *= amplification_factor(node)
    if total > MAX_STATEMENT_AMPLIFICATION:
        return (
            f"the generating functions of this statement could build values {total:,.0f} times "
            f"larger than their inputs (limit {MAX_STATEMENT_AMPLIFICATION:,})"
        )
    return None


def _has_nested_field(text: str) -> bool:
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
            if depth > 1:
                return True
        elif char == "}":
            depth = max(0, depth - 1)
    return False


def _ancestors(node: exp.Expression):
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _series_bounds(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return 0.0, values[0], 1.0
    if len(values) == 2:
        return values[0], values[1], 1.0
    return values[0], values[1], values[2]


def _constant_number(node: exp.Expression) -> float | None:
    if isinstance(node, exp.Neg):
        inner = _constant_number(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Paren):
        return _constant_number(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None


def _digits(text: str) -> list[str]:
    runs, current = [], ""
    for char in text:
        if char.isdigit():
            current += char
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])
