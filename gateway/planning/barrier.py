"""The security barrier of secure subqueries, and the user predicates allowed below it.

DuckDB pushes a query's predicates down into the scan, where they run on rows that the
row filter is about to remove: an expensive or failing predicate then tells, by its time
or its error, something about hidden rows. As PostgreSQL does for ``security_barrier``
views, a user predicate may run below the row filter only if it is *leakproof*: it cannot
fail and its cost does not depend on the data beyond a comparison. Here that is a
comparison, BETWEEN, IN list, IS [NOT] NULL or LIKE/ILIKE pattern between bare, unmasked
product columns and constants, typed so that DuckDB casts the constant, never the column
(see ``_compatible``); AND, OR and NOT of those; EXISTS and IN over a subquery (whose own
predicates are judged where they stand).

When every predicate of a statement (WHERE, ON, HAVING, QUALIFY, in every SELECT) is
leakproof, DuckDB may push them as it likes. Otherwise every secure subquery ends in
``OFFSET 0``: DuckDB never moves a filter below a LIMIT/OFFSET (it would change which
rows pass), so the user's predicates run above the barrier, on governed rows only, and
the leakproof conjuncts of the WHERE (or of an inner or left join's ON) that read one
product alone are copied below it, beside the row filter, to keep pruning.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator, Mapping

from sqlglot import exp

#: The columns of a product reference that predicates may be judged on: folded name ->
#: (name, DuckDB type) of its unmasked visible columns, and the names of all visible ones.
ProductColumns = tuple[Mapping[str, tuple[str, str]], frozenset[str]]
#: Column names of a FROM/JOIN source that is not a product, or None when not evident.
DerivedColumns = Callable[[exp.Expr], "frozenset[str] | None"]
_ColumnType = Callable[[exp.Column], "str | None"]

_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_INTEGER_DIGITS = {
    "TINYINT": 3,
    "SMALLINT": 5,
    "INTEGER": 10,
    "BIGINT": 19,
    "HUGEINT": 39,
    "UTINYINT": 3,
    "USMALLINT": 5,
    "UINTEGER": 10,
    "UBIGINT": 20,
    "UHUGEINT": 39,
}
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")
_MAX_DECIMAL_WIDTH = 38
_TIMESTAMPS = frozenset(
    {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"}
)
#: sqlglot's types for the DuckDB types in ``_TIMESTAMPS``.
_TIMESTAMP_TYPES = frozenset(
    {
        exp.DType.TIMESTAMP,
        exp.DType.TIMESTAMPNTZ,
        exp.DType.TIMESTAMPTZ,
        exp.DType.TIMESTAMP_S,
        exp.DType.TIMESTAMP_MS,
        exp.DType.TIMESTAMP_NS,
    }
)
_PREDICATE_ARGS = ("where", "having", "qualify")


def add_barrier(select: exp.Select, target: str = "duckdb") -> exp.Select:
    """Put ``select`` behind the barrier of ``target``. DuckDB: end it in ``OFFSET 0``,
    which no DuckDB optimisation moves a filter past. Spark drops ``OFFSET 0``, but never
    combines a filter into one whose condition is not deterministic, nor pushes one
    through it: its WHERE gets the always-true ``monotonically_increasing_id() >= 0``
    (the deterministic conjuncts beside it still prune partitions and row groups)."""
    if target == "spark":
        fence = exp.GTE(
            this=exp.Anonymous(this="monotonically_increasing_id", expressions=[]),
            expression=exp.Literal.number(0),
        )
        return select.where(fence, copy=False)
    select.set("offset", exp.Offset(expression=exp.Literal.number(0)))
    return select


def is_barrier(select: exp.Select) -> bool:
    """True when ``select`` ends in the barrier and has no LIMIT of its own."""
    offset = select.args.get("offset")
    return (
        select.args.get("limit") is None
        and isinstance(offset, exp.Offset)
        and isinstance(offset.expression, exp.Literal)
        and offset.expression.this == "0"
    )


class Resolver:
    """Finds the product column a column reference of the user's statement reads, as
    DuckDB binds it: the SELECT's own sources first, then the enclosing SELECTs'."""

    def __init__(self, products: Mapping[int, ProductColumns], derived: DerivedColumns) -> None:
        self._products = products  # by id() of the product's table node
        self._derived = derived
        self._folded: dict[int, frozenset[str] | None] = {}
        self._resolved: dict[int, tuple[exp.Table, str, str] | None] = {}
        self._sources_of: dict[int, list[tuple[str, exp.Expr]] | None] = {}

    def product_column(self, column: exp.Column) -> tuple[exp.Table, str, str] | None:
        """(product table node, column name, DuckDB type) of an unmasked product column
        that ``column`` certainly reads, or None (each reference is resolved once)."""
        key = id(column)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(column)
        return self._resolved[key]

    def _resolve(self, column: exp.Column) -> tuple[exp.Table, str, str] | None:
        if not isinstance(column.this, exp.Identifier) or column.args.get("catalog"):
            return None
        name, qualifier = _fold(column.name), _fold(column.table)
        select = column.parent_select
        while select is not None:
            sources = self._sources(select)
            if sources is None:
                return None
            if qualifier:
                named = [s for alias, s in sources if alias == qualifier]
                if named:
                    return self._typed(named[0], name)
            else:
                holders = []
                for _, source in sources:
                    names = self._names(source)
                    if names is None:
                        return None
                    if name in names:
                        holders.append(source)
                if len(holders) > 1 or (holders and _merging(select)):
                    return None
                if holders:
                    return self._typed(holders[0], name)
            select = select.parent_select
        return None

    def _sources(self, select: exp.Select) -> list[tuple[str, exp.Expr]] | None:
        if id(select) not in self._sources_of:
            self._sources_of[id(select)] = _sources(select)
        return self._sources_of[id(select)]

    def _names(self, source: exp.Expr) -> frozenset[str] | None:
        if id(source) not in self._folded:  # a source is asked once per column reference
            product = self._products.get(id(source))
            names = product[1] if product is not None else self._derived(source)
            self._folded[id(source)] = None if names is None else frozenset(map(_fold, names))
        return self._folded[id(source)]

    def _typed(self, source: exp.Expr, name: str) -> tuple[exp.Table, str, str] | None:
        product = self._products.get(id(source))
        found = product[0].get(name) if product is not None else None
        if found is None or not isinstance(source, exp.Table):  # products are keyed by table
            return None
        return source, found[0], found[1]


def needs_barrier(selects: list[exp.Select], resolver: Resolver) -> bool:
    """True unless every predicate of the statement (all its ``selects``) is leakproof."""

    def column_type(column: exp.Column) -> str | None:
        found = resolver.product_column(column)
        return found[2] if found is not None else None

    judge = _Leakproof(column_type, resolver)
    for select in selects:
        for condition in _predicates(select):
            if not all(judge(c) for c in _conjuncts(condition)):
                return True
    return False


def leakproof_conjuncts(
    table: exp.Table, resolver: Resolver
) -> tuple[list[exp.Expr], list[exp.Expr]]:
    """The user's conjuncts that may run below ``table``'s barrier, as copies written over
    the product's own columns, and those of them that came from the WHERE (the caller may
    drop these from it: they hold there exactly when they hold below)."""
    select, on = _owner(table)
    if select is None or any(table.args.get(a) for a in ("sample", "pivots", "laterals", "joins")):
        return [], []

    def own_column(column: exp.Column) -> str | None:
        found = resolver.product_column(column)
        if found is None or found[0] is not table or column.parent_select is not select:
            return None
        return found[2]

    judge = _Leakproof(own_column, None)
    where = select.args.get("where")
    from_where = []
    if where is not None and _where_reaches(select, table):
        from_where = [c for c in _conjuncts(where.this) if judge.reads_column(c) and judge(c)]
    from_on = (
        [c for c in _conjuncts(on) if judge.reads_column(c) and judge(c)] if on is not None else []
    )
    return [_rewritten(c, resolver) for c in from_where + from_on], from_where


def remove_conjuncts(select: exp.Select, conjuncts: list[exp.Expr]) -> None:
    """Drop ``conjuncts`` (nodes of ``select``'s WHERE) from it."""
    where = select.args.get("where")
    if where is None or not conjuncts:
        return
    kept = [c for c in _conjuncts(where.this) if not any(c is d for d in conjuncts)]
    select.set("where", exp.Where(this=exp.and_(*kept, copy=False)) if kept else None)


def _rewritten(conjunct: exp.Expr, resolver: Resolver) -> exp.Expr:
    """A copy of ``conjunct`` whose columns name the product's columns directly."""
    names = [resolver.product_column(c) for c in conjunct.find_all(exp.Column)]
    copy = conjunct.copy()
    for column, found in zip(list(copy.find_all(exp.Column)), names, strict=True):
        assert found is not None  # judged leakproof: every column is the product's
        column.replace(exp.column(found[1], quoted=True))
    return copy


def _predicates(select: exp.Select) -> Iterator[exp.Expr]:
    for arg in _PREDICATE_ARGS:
        clause = select.args.get(arg)
        if clause is not None:
            yield clause.this
    for join in select.args.get("joins") or []:
        if join.args.get("on") is not None:
            yield join.args["on"]


def _sources(select: exp.Select) -> list[tuple[str, exp.Expr]] | None:
    """(folded alias, node) of each FROM/JOIN source; None when a source is not a plain
    table or subquery (so column binding is not evident)."""
    if select.args.get("laterals"):
        return None
    from_ = select.args.get("from_")
    nodes = ([from_.this] if from_ is not None else []) + [
        j.this for j in select.args.get("joins") or []
    ]
    sources: list[tuple[str, exp.Expr]] = []
    for node in nodes:
        if not isinstance(node, (exp.Table, exp.Subquery)) or node.args.get("pivots"):
            return None
        sources.append((_fold(node.alias_or_name), node))
    return sources


def _merging(select: exp.Select) -> bool:
    """True when a join of ``select`` merges same-named columns (USING, NATURAL)."""
    return any(j.args.get("using") or j.method for j in select.args.get("joins") or [])


def _owner(table: exp.Table) -> tuple[exp.Select | None, exp.Expr | None]:
    """The SELECT whose FROM or JOIN names ``table``, and the ON of that join when the
    join lets its own conditions be pushed into ``table`` (inner or the right of LEFT)."""
    parent = table.parent
    if isinstance(parent, exp.From) and isinstance(parent.parent, exp.Select):
        return parent.parent, None
    if isinstance(parent, exp.Join) and isinstance(parent.parent, exp.Select):
        on = parent.args.get("on")
        kind, side = parent.kind.upper(), parent.side.upper()
        pushable_on = kind in ("", "INNER", "OUTER") and side in ("", "LEFT") and not parent.method
        return parent.parent, on if pushable_on else None
    return None, None


def _where_reaches(select: exp.Select, table: exp.Table) -> bool:
    """True when every row that fails a WHERE conjunct on ``table``'s columns could be
    removed before the joins: only inner, cross and left joins, ``table`` preserved."""
    for join in select.args.get("joins") or []:
        kind, side = join.kind.upper(), join.side.upper()
        if kind not in ("", "INNER", "CROSS", "OUTER") or join.method or side in ("RIGHT", "FULL"):
            return False
        if side == "LEFT" and join.this is table:
            return False
    return True


def _conjuncts(condition: exp.Expr) -> Iterator[exp.Expr]:
    if isinstance(condition, exp.And):
        yield from _conjuncts(condition.this)
        yield from _conjuncts(condition.expression)
    elif isinstance(condition, exp.Paren) and isinstance(condition.this, exp.And):
        yield from _conjuncts(condition.this)
    else:
        yield condition


class _Leakproof:
    """Judges whether a predicate is leakproof, given the types of the columns it may
    read (``column_type``: None for a column that is not an unmasked product column);
    with a ``resolver``, EXISTS and IN over a subquery count as leakproof (their own
    predicates are judged where they stand)."""

    def __init__(self, column_type: _ColumnType, resolver: Resolver | None) -> None:
        self._type_of = column_type
        self._resolver = resolver

    def reads_column(self, node: exp.Expr) -> bool:
        return node.find(exp.Column) is not None and node.find(exp.Query) is None

    def __call__(self, node: exp.Expr) -> bool:
        if isinstance(node, exp.Paren):
            return self(node.this)
        if isinstance(node, (exp.And, exp.Or)):
            return self(node.this) and self(node.expression)
        if isinstance(node, exp.Not):
            return self(node.this)
        if isinstance(node, exp.Boolean):
            return True
        if isinstance(node, exp.Exists):
            return self._resolver is not None
        if isinstance(node, exp.Is):
            return self._type(node.this) is not None and isinstance(node.expression, exp.Null)
        if isinstance(node, _COMPARISONS):
            return self._comparable(node.this, node.expression)
        if isinstance(node, exp.Between):
            return self._comparable(node.this, node.args["low"]) and self._comparable(
                node.this, node.args["high"]
            )
        if isinstance(node, exp.In):
            return self._in(node)
        if isinstance(node, (exp.Like, exp.ILike)):
            pattern = node.expression
            return (
                _family(self._type(node.this)) == "string"
                and isinstance(pattern, exp.Literal)
                and pattern.is_string
            )
        if isinstance(node, exp.Column):
            return self._type(node) == "BOOLEAN"
        return False

    def _type(self, node: exp.Expr) -> str | None:
        return self._type_of(node) if isinstance(node, exp.Column) else None

    def _in(self, node: exp.In) -> bool:
        if node.args.get("unnest") or node.args.get("field"):
            return False
        query = node.args.get("query")
        if query is not None:  # a semi join on equal types
            inner = query.this if isinstance(query, exp.Subquery) else query
            if self._resolver is None or not isinstance(inner, exp.Select):
                return False
            if len(inner.expressions) != 1 or not isinstance(inner.expressions[0], exp.Column):
                return False
            found = self._resolver.product_column(inner.expressions[0])
            left = self._type(node.this)
            return left is not None and found is not None and found[2] == left
        return bool(node.expressions) and all(
            self._comparable(node.this, value) for value in node.expressions
        )

    def _comparable(self, left: exp.Expr, right: exp.Expr) -> bool:
        left_type, right_type = self._type(left), self._type(right)
        if left_type is not None and right_type is not None:
            return left_type == right_type
        if left_type is None and right_type is None:
            return _constant(left) and _constant(right)
        column_type = left_type if left_type is not None else right_type
        constant = right if left_type is not None else left
        return _compatible(column_type, constant)


def _constant(node: exp.Expr) -> bool:
    """A literal, parameter, or typed literal / arithmetic over them (folded once)."""
    if isinstance(node, (exp.Literal, exp.Null, exp.Boolean, exp.Placeholder)):
        return True
    if isinstance(node, (exp.Paren, exp.Neg)):
        return _constant(node.this)
    if isinstance(node, exp.Cast):
        return isinstance(node.this, exp.Literal)
    if isinstance(node, exp.Interval):
        return isinstance(node.this, exp.Literal)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        return _constant(node.this) and _constant(node.expression)
    return False


def _compatible(column_type: str | None, constant: exp.Expr) -> bool:
    """True when comparing a column of ``column_type`` with ``constant`` casts only the
    constant (or widens the column losslessly): never a cast that may fail per row."""
    if isinstance(constant, (exp.Null, exp.Placeholder)):
        return True  # a parameter takes the column's type, once
    family = _family(column_type)
    if isinstance(constant, exp.Literal) and constant.is_string:
        if family == "string":
            return True
        if column_type == "DATE":
            return _parses(datetime.date.fromisoformat, constant.this)
        if column_type in _TIMESTAMPS:
            return _parses(datetime.datetime.fromisoformat, constant.this)
        return False
    if isinstance(constant, exp.Boolean):
        return family == "boolean"
    if family == "numeric":
        scale = _numeric_scale(constant)
        return scale is not None and _integer_digits(column_type) + scale <= _MAX_DECIMAL_WIDTH
    if family == "temporal":
        return _temporal_constant(constant, column_type)
    return False


def _numeric_scale(node: exp.Expr) -> int | None:
    """An upper bound of the decimal scale of a constant numeric expression (0 for a
    double, which compares without a narrowing cast), or None if it is not one."""
    if isinstance(node, exp.Paren):
        return _numeric_scale(node.this)
    if isinstance(node, exp.Neg):
        return _numeric_scale(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        text = node.this.lower()
        if "e" in text:
            return 0
        return len(text.split(".", 1)[1]) if "." in text else 0
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        left, right = _numeric_scale(node.this), _numeric_scale(node.expression)
        return None if left is None or right is None else left + right
    return None


def _temporal_constant(node: exp.Expr, column_type: str | None) -> bool:
    """A DATE/TIMESTAMP typed literal of the column's own kind, shifted by intervals."""
    if isinstance(node, exp.Paren):
        return _temporal_constant(node.this, column_type)
    if isinstance(node, (exp.Add, exp.Sub)):
        return _temporal_constant(node.this, column_type) and _interval(node.expression)
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        if node.to.this == exp.DType.DATE and column_type == "DATE":
            return _parses(datetime.date.fromisoformat, node.this.this)
        if node.to.this in _TIMESTAMP_TYPES and column_type in _TIMESTAMPS:
            return _parses(datetime.datetime.fromisoformat, node.this.this)
    return False


def _interval(node: exp.Expr) -> bool:
    return (
        isinstance(node, exp.Interval)
        and isinstance(node.this, exp.Literal)
        and node.this.this.strip().lstrip("-").isdigit()
    )


def _family(column_type: str | None) -> str | None:
    if column_type is None:
        return None
    if column_type == "VARCHAR":
        return "string"
    if column_type == "BOOLEAN":
        return "boolean"
    if (
        column_type in _INTEGER_DIGITS
        or column_type in ("FLOAT", "DOUBLE")
        or _DECIMAL.match(column_type)
    ):
        return "numeric"
    if column_type == "DATE" or column_type in _TIMESTAMPS:
        return "temporal"
    return None


def _integer_digits(column_type: str | None) -> int:
    if column_type in ("FLOAT", "DOUBLE"):
        return 0
    decimal = _DECIMAL.match(column_type or "")
    if decimal:
        return int(decimal.group(1)) - int(decimal.group(2))
    return _INTEGER_DIGITS.get(column_type or "", _MAX_DECIMAL_WIDTH + 1)


def _parses(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _fold(name: str | None) -> str:
    return (name or "").lower()
