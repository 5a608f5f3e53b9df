"""The estimated cost of a governed query, read from DuckDB's physical plan.

The cost is the number of rows the plan's operators are estimated to produce, summed: a
scan of a million rows costs a million, a cross join of two such scans a million
million. DuckDB gives an estimated cardinality for most operators; where it gives none
(a cross product, a nested-loop join) the operator is taken to produce the product of
its inputs, and any other unknown what its largest input produces. The plan is that of
the governed SQL, row filters included, never of the statement as the client wrote it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

#: operators that pair every row of one input with every row of the other (or may)
_PAIRING = frozenset(
    {"CROSS_PRODUCT", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN", "PIECEWISE_MERGE_JOIN"}
)
_CARDINALITY = "Estimated Cardinality"


def plan_cost(plan_json: str) -> float:
    """The estimated cost of a plan given as DuckDB's ``explain(format="json")`` text."""
    roots: Sequence[Mapping[str, Any]] = json.loads(plan_json)
    return sum(_cost(root)[1] for root in roots)


def _cost(node: Mapping[str, Any]) -> tuple[float, float]:
    """(rows ``node`` produces, cost of its subtree)."""
    children = [_cost(child) for child in node.get("children", ())]
    rows = _estimated(node)
    if rows is None:
        inputs = [produced for produced, _ in children]
        if not inputs:
            rows = 1.0
        elif node.get("name") in _PAIRING:
            rows = math.prod(inputs)
        else:
            rows = max(inputs)
    return rows, rows + sum(cost for _, cost in children)


def _estimated(node: Mapping[str, Any]) -> float | None:
    value = node.get("extra_info", {}).get(_CARDINALITY)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def magnitude(value: float) -> str:
    """``value`` to one significant figure in scientific notation (``8e+15``): enough to
    compare with a limit, and no exact row count of any product."""
    return f"{value:.0e}"
