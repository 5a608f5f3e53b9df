"""The estimated cost of a governed query, read from DuckDB's physical plan.

``rows``: the rows the plan's operators are estimated to produce, summed (a scan of a
million rows costs a million, a cross join of two such scans a million million). DuckDB
gives an estimated cardinality for most operators; where it gives none (a cross product,
a nested-loop join) the operator is taken to produce the product of its inputs, any
other unknown what its largest input produces. ``bytes_read``: what the scans are
estimated to read after pruning (files, row groups, columns): each scan's estimated rows
times its projected columns, at 8 bytes a value. The plan is that of the governed SQL,
row filters included, never of the statement as the client wrote it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: operators that pair every row of one input with every row of the other (or may)
_PAIRING = frozenset(
    {"CROSS_PRODUCT", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN", "PIECEWISE_MERGE_JOIN"}
)
#: operators that read a product's data
_SCANS = frozenset({"SEQ_SCAN", "READ_PARQUET", "TABLE_SCAN", "PARQUET_SCAN"})
_CARDINALITY = "Estimated Cardinality"
_BYTES_PER_VALUE = 8


@dataclass(frozen=True)
class PlanCost:
    """A plan's estimated work (see the module docstring)."""

    rows: float
    bytes_read: float


def plan_cost(plan_json: str) -> PlanCost:
    """The estimated cost of a plan given as DuckDB's ``explain(format="json")`` text."""
    roots: Sequence[Mapping[str, Any]] = json.loads(plan_json)
    rows = 0.0
    read = 0.0
    for root in roots:
        _, cost, scanned = _cost(root)
        rows += cost
        read += scanned
    return PlanCost(rows, read)


def _cost(node: Mapping[str, Any]) -> tuple[float, float, float]:
    """(rows ``node`` produces, rows its subtree produces, bytes its scans read)."""
    children = [_cost(child) for child in node.get("children", ())]
    rows = _estimated(node)
    if rows is None:
        inputs = [produced for produced, _, _ in children]
        if not inputs:
            rows = 1.0
        elif node.get("name") in _PAIRING:
            rows = math.prod(inputs)
        else:
            rows = max(inputs)
    read = sum(scanned for _, _, scanned in children)
    if node.get("name") in _SCANS:
        read += rows * max(1, _projected(node)) * _BYTES_PER_VALUE
    return rows, rows + sum(cost for _, cost, _ in children), read


def _estimated(node: Mapping[str, Any]) -> float | None:
    value = node.get("extra_info", {}).get(_CARDINALITY)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _projected(node: Mapping[str, Any]) -> int:
    """How many columns a scan reads (DuckDB lists them as a list or a text)."""
    projections = node.get("extra_info", {}).get("Projections")
    if isinstance(projections, list):
        return len(projections)
    if isinstance(projections, str):
        return len([name for name in projections.split("\n") if name.strip()])
    return 0
