"""Casbin decisions over a rule index: Casbin sees only the rules that can apply.

Casbin evaluates its matcher on every ``p`` line for every request, so a decision over
100,000 lines costs 100,000 matcher evaluations; and ``add_policies`` checks each new line
against a Python list, which makes loading quadratic. Here:

- the role links go straight into Casbin's role manager (linear);
- for each request, Casbin's ``p`` lines are the rules the ``RuleIndex`` finds for the
  request's action, object and subject (the subject, every role it reaches, and ``*``).
- a principal's own roles (from mesh.toml or from its identity token) are not links: they
  differ per token. A request names them (``roles``); a line of a subject that only those
  roles reach is given to Casbin under the requesting subject's own name, which ``g``
  matches as it would match through a ``g, <subject>, <role>`` link.
  Casbin still evaluates the matcher (``g``, ``objectMatch``, action) and the effect on
  those lines. The lines left out are lines whose matcher is false, which never change a
  decision under ``some(allow) && !some(deny)``: every decision equals Casbin's over the
  whole policy.

Requests are decided one at a time (a lock): each fills the enforcer's ``p`` lines, and
Casbin parses its matcher with ``ast`` on every call, which CPython 3.11 does not support
from several threads at once (``SystemError: AST constructor recursion depth mismatch``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from importlib import resources

import casbin

from policies.index import RuleIndex
from policies.loader import GLOBAL_SCOPE
from policies.rules import Action, Rule, object_matcher

#: Which rules a decision reads: all of them, the global file's, or the domain files'.
ALL, GLOBAL, DOMAIN = None, GLOBAL_SCOPE, "domain"
Layer = str | None


def in_layer(rule: Rule, layer: Layer) -> bool:
    """Whether ``rule`` belongs to ``layer`` (``ALL``, ``GLOBAL`` or ``DOMAIN``)."""
    return layer is ALL or (rule.scope == GLOBAL_SCOPE) == (layer == GLOBAL)


def _model() -> casbin.Model:
    model = casbin.Model()
    model.load_model_from_text(resources.files("policies").joinpath("model.conf").read_text())
    return model


class Decider:
    """One Casbin enforcer (with every role link) deciding over indexed rules."""

    def __init__(
        self,
        rules: Iterable[Rule],
        links: Iterable[tuple[str, str]],
        column_tags: Mapping[str, frozenset[str]],
    ) -> None:
        self._match = object_matcher(column_tags)
        self._index = RuleIndex(rules, column_tags)
        self._enforcer = casbin.Enforcer(_model())
        self._enforcer.add_function("objectMatch", self._match)
        # Casbin's p lines: refilled with the candidates of each request.
        self._lines: list[list[str]] = self._enforcer.get_model()["p"]["p"].policy
        self._lock = threading.Lock()
        self._roles = self._enforcer.get_role_manager()
        for member, role in links:
            self._roles.add_link(member, role)
        self._reach: dict[str, frozenset[str]] = {}

    def enforce(
        self,
        subject: str,
        obj: str,
        action: Action,
        layer: Layer = ALL,
        roles: Iterable[str] = (),
    ) -> bool:
        """Casbin's decision on (subject, obj, action) over the rules of ``layer``, the
        subject also holding ``roles`` (see the module)."""
        own = self.subjects(subject)
        held = self.held(roles) - own
        rules = [r for r in self._index.candidates(action, obj, own | held) if in_layer(r, layer)]
        lines = [
            [subject, *rule.as_casbin()[1:]] if rule.subject in held else rule.as_casbin()
            for rule in rules
        ]
        with self._lock:
            self._lines[:] = lines
            return self._enforcer.enforce(subject, obj, action.value)

    def candidates(self, action: Action, obj: str, subjects: frozenset[str]) -> list[Rule]:
        """Rules of ``action`` naming one of ``subjects`` whose object matches ``obj``, in
        policy order."""
        return [
            r for r in self._index.candidates(action, obj, subjects) if self._match(obj, r.object)
        ]

    def roles_for(self, member: str) -> list[str]:
        """The roles ``member`` holds directly."""
        return self._enforcer.get_roles_for_user(member)

    def has_link(self, member: str, role: str) -> bool:
        """Casbin's ``g(member, role)``."""
        return self._roles.has_link(member, role)

    def held(self, roles: Iterable[str]) -> frozenset[str]:
        """Every subject that holding ``roles`` reaches (each role, what it inherits, ``*``)."""
        reach: frozenset[str] = frozenset()
        for role in roles:
            reach |= self.subjects(role)
        return reach

    def subjects(self, name: str) -> frozenset[str]:
        """``name``, every role it reaches through the role links, and ``*``: the subjects
        of every rule that may apply to ``name`` (computed once per name)."""
        reach = self._reach.get(name)
        if reach is None:
            found, frontier = {name, "*"}, [name]
            while frontier:
                frontier = [r for m in frontier for r in self._roles.get_roles(m) if r not in found]
                found.update(frontier)
            reach = self._reach[name] = frozenset(found)
        return reach
