"""Which SQL functions a query, a mask or a row filter may call.

An allow-list: a function must be a DuckDB built-in (scalar, aggregate, window or macro,
read from ``duckdb_functions()``) or a function sqlglot knows, and not in
``FORBIDDEN_FUNCTIONS`` (file readers, SQL hidden in strings, oracles such as ``error()``)
or ``GLOBAL_STATE_FUNCTIONS`` (state shared by every user: ``txid_current()``, settings,
``current_query()``, which would reveal rewritten SQL, sequences, the engine's log).
Functions whose result or cost grows past the bounds below are bounded or refused.
Masks and row filters are stricter: scalar and deterministic only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import lru_cache

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from policies.errors import PolicyExpressionError

FORBIDDEN_FUNCTIONS = frozenset(
    {
        "query",
        "query_table",
        "getenv",
        "getvariable",
        "current_setting",
        "current_query",
        "current_query_id",
        "current_database",
        "current_catalog",
        "current_schema",
        "current_schemas",
        "current_connection_id",
        "current_transaction_id",
        "glob",
        "read_blob",
        "read_text",
        "read_csv",
        "read_csv_auto",
        "read_json",
        "read_json_auto",
        "read_json_objects",
        "read_ndjson",
        "read_ndjson_auto",
        "read_ndjson_objects",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "parquet_bloom_probe",
        "sniff_csv",
        "which_secret",
        "nextval",
        "currval",
        "setseed",
        "pg_sleep",
        "sleep_ms",
        "load_extension",
        "install_extension",
        "json_serialize_sql",
        "json_deserialize_sql",
        "json_serialize_plan",
        "json_execute_serialized_sql",
        "enum_range",
        "enum_range_boundary",
        "enum_first",
        "enum_last",
        "enum_code",
        # error() turns a predicate into an oracle on rows a row filter hides (assert_true is
        # a macro over it); stats() shows the base table's min/max through any filter
        "error",
        "assert_true",
        "stats",
    }
)

#: Functions that read or change state shared by every user of the engine (reviewed against
#: ``duckdb_functions()`` of DuckDB 2.0; see tests/policies/test_function_review.py), each
#: with the reason a client is told. Time (``now()``, ``current_date``, ...) is allowed: it
#: is the clock, not other users' activity.
GLOBAL_STATE_FUNCTIONS: dict[str, str] = {
    "txid_current": "it counts the transactions of every user's queries",
    "current_transaction_id": "it counts the transactions of every user's queries",
    "current_query_id": "it counts the queries of every user",
    "current_connection_id": "it counts the connections of every user",
    "current_query": "it shows the rewritten SQL the engine runs",
    "current_setting": "it reads the engine's settings",
    "getvariable": "it reads the engine's variables",
    "getenv": "it reads the server's environment",
    "in_search_path": "it reads the engine's catalog search path",
    "index_key": "it reads the engine's catalog",
    "vector_type": "it shows how the engine holds data internally",
    "write_log": "it writes to the engine's log",
    "nextval": "it changes a sequence shared by every user",
    "currval": "it reads a sequence shared by every user",
    "setval": "it changes a sequence shared by every user",
    "setseed": "it changes the random seed of the engine connection",
    "inet_client_addr": "it would show network addresses of the engine's connections",
    "inet_client_port": "it would show network addresses of the engine's connections",
    "inet_server_addr": "it would show network addresses of the engine's connections",
    "inet_server_port": "it would show network addresses of the engine's connections",
}
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


@lru_cache(maxsize=4)
def duckdb_volatile_functions(known: frozenset[str]) -> frozenset[str]:
    """``known`` (the caller's volatile names: the clock, the session), every function
    DuckDB marks VOLATILE, and every macro whose body calls one of them, however deep
    (``ago(i)`` is ``current_timestamp - i``); lower case. Scalar macros only: a table
    macro cannot be called in a query."""
    with duckdb.connect(":memory:") as con:
        rows = con.sql(
            "SELECT lower(function_name), stability, function_type, macro_definition "
            "FROM duckdb_functions()"
        ).fetchall()
    volatile = set(known) | {name for name, stability, _, _ in rows if stability == "VOLATILE"}
    # table macros cannot be called in a query (``function_refusal``)
    bodies = {name: body for name, _, kind, body in rows if kind == "macro" and body}
    calls = {name: _called_names(body) for name, body in bodies.items()}
    grew = True
    while grew:
        grew = False
        for name, called in calls.items():
            if name not in volatile and (called is None or called & volatile):
                volatile.add(name)  # an unreadable body counts as volatile
                grew = True
    return frozenset(volatile)


def _called_names(body: str) -> frozenset[str] | None:
    """The functions a macro body calls (keywords such as ``current_timestamp`` too), or
    None when sqlglot cannot read it."""
    try:
        tree = sqlglot.parse_one(body, read="duckdb")
    except SqlglotError:
        return None
    return frozenset(function_name(node) for node in tree.find_all(exp.Func))


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
    # mypy checks a class object against Hashable with the instances' __hash__; classes
    # hash by identity
    return _generated_name(type(node), shape)  # type: ignore[arg-type]


@lru_cache(maxsize=4096)
def _generated_name(cls: type[exp.Func], shape: tuple) -> str:
    args: dict[str, object] = {}
    for key, value in shape:
        if value == "list":
            args[key] = [exp.Null()]
        elif isinstance(value, str) and hasattr(exp, value) and value[0].isupper():
            args[key] = exp.DataType.build("INT") if value == "DataType" else exp.Null()
        else:
            args[key] = value
    try:
        generated = cls(**args).sql("duckdb")
    except Exception:  # noqa: BLE001 - an unusual argument shape: fall back to sqlglot's own name
        return cls.sql_names()[0].lower() if cls.sql_names() else cls.__name__.lower()
    head = generated.split("(", 1)[0].strip().lower()
    return head if head.replace("_", "").isalnum() else cls.key.lower()


_FORBIDDEN_PREFIXES = ("pg_", "duckdb_", "has_", "pragma_")
_FORBIDDEN_CATALOG_HELPERS = frozenset(
    {
        "format_type",
        "get_block_size",
        "col_description",
        "obj_description",
        "shobj_description",
        "current_role",
        "current_user",
        "session_user",
        "user",
        "version",
    }
)


def function_refusal(node: exp.Func, scalar_only: bool = False) -> str | None:
    """Why ``node`` may not be called, or None when it may."""
    name = function_name(node)
    if name.startswith(_FORBIDDEN_PREFIXES) or name in _FORBIDDEN_CATALOG_HELPERS:
        return f"function {name}() is not allowed (catalog introspection)"
    if name in GLOBAL_STATE_FUNCTIONS:
        return f"function {name}() is not allowed: {GLOBAL_STATE_FUNCTIONS[name]}"
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
        if isinstance(node, (exp.AggFunc, exp.Window)) or (
            kinds is not None and "scalar" not in kinds and "macro" not in kinds
        ):
            return f"function {name}() is not a scalar function"
    return None


def check_scalar_expression(expression: exp.Expr, allowed_columns: Collection[str]) -> None:
    """Raise PolicyExpressionError unless ``expression`` is a side-effect-free scalar
    expression over ``allowed_columns`` (no subqueries, tables, aggregates or parameters)."""
    allowed = {c.lower() for c in allowed_columns}
    for node in expression.walk():
        if isinstance(
            node, (exp.Query, exp.Subquery, exp.Table, exp.Star, exp.Window, exp.Placeholder)
        ):
            raise PolicyExpressionError(
                f"{node.key.upper()} is not allowed here: use a scalar expression over the columns"
            )
        if isinstance(node, exp.Func):
            refusal = function_refusal(node, scalar_only=True)
            if refusal:
                raise PolicyExpressionError(refusal)
        if isinstance(node, exp.Column) and (node.table or node.name.lower() not in allowed):
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
    "bitstring": (1,),
    "equi_width_bins": (2,),
}
_FORMATTERS = frozenset({"printf", "format"})

#: String comparisons whose time (damerau_levenshtein: also memory, 8 bytes a cell) grows
#: with the product of their arguments' lengths, inside one call DuckDB cannot interrupt
#: (levenshtein of two 100,000-character strings: 20 s; damerau_levenshtein of two
#: 10,000-character strings: 800 MB past memory_limit). One argument must be a constant
#: string of at most MAX_COMPARED_CONSTANT characters: the cost is then linear in the other.
#: hamming/mismatches and jaccard are linear and need no bound. name -> bytes per cell.
_QUADRATIC_COMPARISONS: dict[str, int] = {
    "levenshtein": 1,
    "editdist3": 1,
    "damerau_levenshtein": 8,
    "jaro_similarity": 1,
    "jaro_winkler_similarity": 1,
}
MAX_COMPARED_CONSTANT = 100

#: Aggregates that build one value (a string, a list, a map) from every row of a group.
#: DuckDB's memory_limit bounds their state, not what scalar functions then build from the
#: result, so the gateway bounds the result: ``gateway.planning.bounds`` makes the query fail
#: when one group holds more than MAX_COLLECTED_VALUES rows (see ``collector_limit_message``),
#: and the statement's amplification counts them (once, however many) as a factor
#: MAX_COLLECTED_VALUES.
#: name (as ``function_name`` gives it) -> the name a client is told.
COLLECTORS: dict[str, str] = {
    "array_agg": "list",
    "listagg": "string_agg",
    "json_group_array": "json_group_array",
    "json_group_object": "json_group_object",
    "json_group_structure": "json_group_structure",
    "histogram": "histogram",
    "variant_group_array": "variant_group_array",
    "variant_group_object": "variant_group_object",
}
MAX_COLLECTED_VALUES = 10_000

#: Aggregates returning their top ``n`` values as a list: name -> position of ``n``, which
#: must be a constant within MAX_COLLECTED_VALUES (DuckDB allows up to 1,000,000).
_TOP_N: dict[str, int] = {
    "max": 1,
    "min": 1,
    "arg_max": 2,
    "arg_min": 2,
    "arg_max_nulls_last": 2,
    "arg_min_nulls_last": 2,
    "approx_top_k": 1,
    "lttb": 2,
}

#: Functions that split a string into a list: each character may become an element of
#: 16 bytes or more.
_SPLITTERS = frozenset(
    {
        "str_split",
        "string_split",
        "string_to_array",
        "regexp_split_to_array",
        "str_split_regex",
        "string_split_regex",
        "regexp_extract_all",
    }
)
_SPLIT_FACTOR = 16.0


def collector_limit_message(name: str) -> str:
    """What a client is told when collector ``name`` (as ``COLLECTORS`` names it) met a
    group of more than MAX_COLLECTED_VALUES rows."""
    return (
        f"{name}() collects at most {MAX_COLLECTED_VALUES:,} values per group, and a group of "
        "this query has more: filter the rows (WHERE), group them finer (GROUP BY), or "
        "aggregate them (count, sum, ...) instead of collecting them"
    )


COLLECTOR_LIMIT_MESSAGES = frozenset(collector_limit_message(n) for n in set(COLLECTORS.values()))


def amplification_refusal(node: exp.Func) -> str | None:
    """Why ``node`` could build an unbounded value, or None when it cannot."""
    name = function_name(node)
    if name in _QUADRATIC_COMPARISONS:
        return _comparison_refusal(name, list(node.iter_expressions()))
    if name in _TOP_N:
        return _top_n_refusal(name, list(node.iter_expressions()))
    if isinstance(node, exp.Array) and any(
        isinstance(e, (exp.Query, exp.Subquery)) for e in node.expressions
    ):
        return (
            "ARRAY(SELECT ...) builds one list from every row of a query, without bound: "
            "write (SELECT list(x) FROM ...), which collects at most "
            f"{MAX_COLLECTED_VALUES:,} values"
        )
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
    constants = [_constant_number(a) for a in sizes]
    values = [v for v in constants if v is not None]
    if len(values) != len(constants):
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
_REPLACERS = {
    "replace": 2,
    "regexp_replace": 2,
    "translate": 2,
    "list_transform": None,
    "array_transform": None,
    "apply": None,
    "list_apply": None,
    "array_apply": None,
}
MAX_STRING_CONSTANT = 1_000


def _comparison_refusal(name: str, arguments: list[exp.Expr]) -> str | None:
    lengths = [len(a.this) for a in arguments[:2] if isinstance(a, exp.Literal) and a.is_string]
    if not lengths:
        return (
            f"{name}() of two computed strings is not allowed: its cost grows with the product "
            "of their lengths and cannot be interrupted. Compare with a constant string of at "
            f"most {MAX_COMPARED_CONSTANT} characters, e.g. {name}(name, 'Smith')"
        )
    if min(lengths) > MAX_COMPARED_CONSTANT:
        return (
            f"{name}() compares with a constant of {min(lengths):,} characters; the limit is "
            f"{MAX_COMPARED_CONSTANT} (its cost grows with the product of the two lengths)"
        )
    return None


def _top_n_refusal(name: str, arguments: list[exp.Expr]) -> str | None:
    position = _TOP_N[name]
    if len(arguments) <= position:
        return None  # the plain aggregate: one value
    n = _constant_number(arguments[position])
    if n is None:
        return f"{name}() needs a constant number of values to return"
    if abs(n) > MAX_COLLECTED_VALUES:
        return f"{name}() returns at most {MAX_COLLECTED_VALUES:,} values (asked for {n:,.0f})"
    return None


def amplification_factor(node: exp.Func) -> float:
    """How much larger than its inputs an (allowed) amplifier's output can be."""
    name = function_name(node)
    if name in COLLECTORS:
        return float(MAX_COLLECTED_VALUES)
    if name in _SPLITTERS:
        return _SPLIT_FACTOR
    if name in _QUADRATIC_COMPARISONS:
        arguments = list(node.iter_expressions())[:2]
        lengths = [len(a.this) for a in arguments if isinstance(a, exp.Literal) and a.is_string]
        return float(_QUADRATIC_COMPARISONS[name] * (min(lengths, default=0) + 2))
    if name in _TOP_N:
        arguments = list(node.iter_expressions())
        position = _TOP_N[name]
        n = _constant_number(arguments[position]) if len(arguments) > position else None
        return max(1.0, abs(n or 1.0))
    if name in _REPLACERS:
        index = _REPLACERS[name]
        arguments = list(node.iter_expressions())
        if index is None:  # a lambda over a list: each element may become a constant
            longest = max(
                (len(lit.this) for lit in node.find_all(exp.Literal) if lit.is_string), default=1
            )
            return float(max(1, longest))
        replacement = arguments[index] if len(arguments) > index else None
        if isinstance(replacement, exp.Literal) and replacement.is_string:
            return float(max(1, len(replacement.this)))
        return float("inf")  # a replacement computed from data: unbounded
    positions = _AMPLIFIERS.get(name, ())
    if name not in _AMPLIFIERS:
        return 1.0
    arguments = list(node.iter_expressions())
    values = [
        _constant_number(a) or 1.0
        for i, a in enumerate(arguments)
        if positions is None or i in positions
    ]
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
    growing: dict[str, None] = {}
    collecting = False
    for node in functions:
        name = function_name(node)
        if name in COLLECTORS:  # counted once: collectors feed scalar functions, not each other
            collecting = True
            growing[COLLECTORS[name]] = None
            continue
        factor = amplification_factor(node)
        if factor > 1.0:
            total *= factor
            growing[name] = None
    if collecting:
        total *= MAX_COLLECTED_VALUES
    if total > MAX_STATEMENT_AMPLIFICATION:
        names = ", ".join(f"{name}()" for name in growing)
        return (
            f"the generating functions of this statement ({names}) could build values "
            f"{total:,.0f} times larger than their inputs (limit {MAX_STATEMENT_AMPLIFICATION:,}; "
            f"a function collecting rows counts as {MAX_COLLECTED_VALUES:,}): use fewer of them "
            "or smaller sizes"
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


def _ancestors(node: exp.Expr):
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


def _constant_number(node: exp.Expr) -> float | None:
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
