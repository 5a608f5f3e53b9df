"""Rules indexed by action, object pattern and subject, so a decision reads only the rules
that can apply to it.

``objectMatch(request, pattern)`` (``policies.rules.object_matcher``) is true only for a
few patterns of a given request: ``*``, the request itself, each of its dotted prefixes
(``d`` and ``d.p`` for ``d.p.c``), each prefix followed by ``.*`` and ``tag:<t>`` for the
request's tags. ``candidate_objects`` lists exactly those, so looking them up is a
superset of a scan with ``objectMatch``; callers still apply the real matcher (Casbin, or
``object_matcher``) to what the index returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from policies.rules import Action, Rule


def candidate_objects(request: str, column_tags: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    """Every object pattern that ``objectMatch(request, pattern)`` may accept."""
    patterns = ["*", request]
    for position, char in enumerate(request):
        if char == ".":
            patterns += [request[:position], request[: position + 1] + "*"]
    patterns += [f"tag:{tag}" for tag in sorted(column_tags.get(request, ()))]
    return tuple(dict.fromkeys(patterns))


class RuleIndex:
    """Rules by (action, object pattern), then by subject, each with its policy position."""

    def __init__(self, rules: Iterable[Rule], column_tags: Mapping[str, frozenset[str]]) -> None:
        self._tags = column_tags
        self._buckets: dict[tuple[Action, str], dict[str, list[tuple[int, Rule]]]] = {}
        for position, rule in enumerate(rules):
            by_subject = self._buckets.setdefault((rule.action, rule.object), {})
            by_subject.setdefault(rule.subject, []).append((position, rule))

    def candidates(self, action: Action, request: str, subjects: AbstractSet[str]) -> list[Rule]:
        """Rules of ``action`` whose subject is in ``subjects`` and whose object pattern may
        match ``request``, in policy order (a superset: object patterns are not matched)."""
        found: list[tuple[int, Rule]] = []
        for pattern in candidate_objects(request, self._tags):
            by_subject = self._buckets.get((action, pattern))
            if not by_subject:
                continue
            if len(by_subject) <= len(subjects):
                found += [
                    pair
                    for subject, pairs in by_subject.items()
                    if subject in subjects
                    for pair in pairs
                ]
            else:
                found += [pair for subject in subjects for pair in by_subject.get(subject, ())]
        found.sort(key=lambda pair: pair[0])
        return [rule for _, rule in found]
