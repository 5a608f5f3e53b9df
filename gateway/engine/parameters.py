"""The types DuckDB infers for the parameters of a statement, without values for them.

DuckDB's Python API prepares no statement for the caller to inspect, but its binder gives
each ``$n`` the type of what it meets (``order_id = $1``: BIGINT); ``json_serialize_plan``
shows the bound plan, and each parameter in it with that type. The statement travels as a
bound string (never spliced into SQL); the plan is bound, not optimized nor run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from sqlglot import exp

#: ``SELECT json_serialize_plan($1, optimize := false)``: the statement is the parameter
PLAN_OF_STATEMENT = exp.select(
    exp.Anonymous(
        this="json_serialize_plan",
        expressions=[
            exp.Placeholder(this="1"),
            exp.PropertyEQ(this=exp.to_identifier("optimize"), expression=exp.false()),
        ],
    )
).sql("duckdb")

_UNKNOWN = frozenset({"UNKNOWN", "SQLNULL", "ANY", "INVALID", "STRING_LITERAL", "INTEGER_LITERAL"})


def parameter_type_names(plan_json: str, count: int) -> list[str | None]:
    """The DuckDB type (as SQL text) of parameters ``$1`` .. ``$count`` in the serialized
    plan ``plan_json``; None where DuckDB could not tell, or a parameter meets two types."""
    document = json.loads(plan_json)
    if not isinstance(document, dict) or document.get("error"):
        return [None] * count
    seen: dict[str, set[str | None]] = {}
    for node in _parameters(document):
        seen.setdefault(str(node.get("identifier")), set()).add(_type_text(node.get("return_type")))
    names: list[str | None] = []
    for number in range(1, count + 1):
        types = seen.get(str(number), {None})
        names.append(next(iter(types)) if len(types) == 1 else None)
    return names


def _parameters(node: object) -> Iterator[dict]:
    """Every bound parameter of a serialized plan, depth first (iteratively: plans nest)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if current.get("expression_class") == "BOUND_PARAMETER":
                yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def _type_text(described: object) -> str | None:
    """A serialized DuckDB type as SQL type text, for the types a parameter can have; None
    for the ones it cannot say exactly (nested records, unknown)."""
    if not isinstance(described, dict):
        return None
    kind = described.get("id")
    info = described.get("type_info") or {}
    if not isinstance(kind, str) or kind in _UNKNOWN:
        return None
    if kind == "DECIMAL":
        return f"DECIMAL({int(info['width'])},{int(info['scale'])})"
    if kind == "LIST":
        child = _type_text(info.get("child_type"))
        return f"{child}[]" if child else None
    if kind == "ARRAY":
        child = _type_text(info.get("child_type"))
        return f"{child}[{int(info['size'])}]" if child else None
    if kind == "ENUM":
        return "VARCHAR"  # served as its values' text
    if kind in ("STRUCT", "MAP", "UNION", "USER"):
        return None
    return kind
