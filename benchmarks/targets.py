"""Targets as data, and the one judge that evaluates them against a run's results.

A :class:`Target` names a section, a metric in that section's results (a dotted path of
keys), a comparison and a bound. :func:`judge` reads each metric and compares it; a
requirement of the issue (``R1``..``R8``) is met when all of its targets are.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The comparisons a target may use: ``value OP bound``.
OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    """``results[section][metric] op bound`` must hold (metric: keys joined by dots)."""

    id: str
    section: str
    metric: str
    op: str
    bound: object
    why: str
    #: Appended to numbers when they are shown ("x", " ms", "%").
    unit: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"target {self.id} {self.metric}: unknown comparison {self.op!r}")

    def text(self) -> str:
        """The bound as a reader sees it: ``<= 1.5x``, or the expected value for ``==``."""
        bound = show(self.bound, self.unit)
        return bound if self.op == "==" else f"{self.op} {bound}"


@dataclass(frozen=True)
class Verdict:
    """A target with the value measured and whether it holds (None: not measured)."""

    target: Target
    value: object
    met: bool | None
    #: Why there is no value: the section's error or the reason it was skipped.
    note: str = ""

    def measured(self) -> str:
        return self.note or show(self.value, self.target.unit)

    def as_json(self) -> dict:
        t = self.target
        return {
            "id": t.id,
            "section": t.section,
            "metric": t.metric,
            "op": t.op,
            "bound": t.bound,
            "why": t.why,
            "check": t.text(),
            "value": self.value,
            "measured": self.measured(),
            "met": self.met,
            "note": self.note,
        }


def show(value: object, unit: str = "") -> str:
    """A measured value or a bound as text: 3 significant digits, lists as names."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:.3g}{unit}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def judge(results: Mapping[str, object], targets: Iterable[Target]) -> list[Verdict]:
    """Evaluate every target against ``results`` (section key -> that section's dict).

    A value is looked up along the metric's path. A dict on that path holding ``skipped``
    makes the target not measured; one holding ``error`` makes it missed (the section
    failed where the value should be); a missing value leaves it not measured.
    """
    verdicts = []
    for target in targets:
        node: object = results.get(target.section)
        verdict = None
        for key in target.metric.split("."):
            if not isinstance(node, Mapping):
                node = None
                break
            if node.get("skipped"):
                verdict = Verdict(target, None, None, str(node["skipped"]))
                break
            if node.get("error"):
                verdict = Verdict(target, None, False, f"failed: {node['error']}"[:300])
                break
            node = node.get(key)
        if verdict is None:
            if node is None or (isinstance(node, float) and math.isnan(node)):
                verdict = Verdict(target, None, None)
            else:
                verdict = Verdict(target, node, bool(OPS[target.op](node, target.bound)))
        verdicts.append(verdict)
    return verdicts


def requirement_status(verdicts: Iterable[Verdict]) -> dict[str, bool | None]:
    """Per requirement id: met (all its targets met), False (one missed), None (else)."""
    status: dict[str, bool | None] = {}
    for verdict in verdicts:
        now = status.get(verdict.target.id, True)
        if now is False or verdict.met is False:
            status[verdict.target.id] = False
        elif now is None or verdict.met is None:
            status[verdict.target.id] = None
        else:
            status[verdict.target.id] = True
    return status
