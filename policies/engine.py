"""Policy decisions: who may read which product and column, with which rows and masks.

Casbin decides (default deny, any deny overrides allow, role hierarchy via ``g``). On top
of those decisions Meshgate combines, per product:
- rows: the OR of the filters of each of the user's subjects (the user and every role
  they hold) that may read the product; a subject without a filter sees every row;
- columns: invisible when Casbin denies ``read`` on them;
- masks: the least restrictive domain mask over the granting subjects, then the global
  floor: when a global mask applies, a domain may choose another mask but never none.
A user's roles are the subject's (mesh.toml's, or its identity token's) plus the ``g`` links
of the policy files. Decisions are cached for the life of one policy version (a
``Governor``), keyed by everything they depend on: user, roles and attributes (the same
user may sign in with other roles or attributes in the next token).
Each decision reads only the rules that can apply to it (``policies.decider``), so its cost
does not grow with the size of the policy.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, reduce

from sqlglot import exp

from policies.decider import ALL, DOMAIN, GLOBAL, Decider, Layer, in_layer
from policies.filters import bind_attributes, parse_filter
from policies.loader import PolicyFile
from policies.masks import compile_mask
from policies.rules import Action, CompiledMask, Effect, ProductShape, Rule

_FALLBACK_MASK = "null"


@dataclass(frozen=True)
class Subject:
    """Who asks, as policies see them."""

    user: str
    roles: tuple[str, ...]
    attributes: Mapping[str, object] = field(default_factory=dict, hash=False)


def subject_key(
    subject: Subject,
) -> tuple[str, tuple[str, ...], tuple[tuple[str, str, object], ...]]:
    """What a decision depends on, hashable: user, roles (sorted) and attributes, each with
    its type (``True`` and ``1`` bind different literals)."""
    attributes = tuple(
        sorted((name, type(value).__name__, value) for name, value in subject.attributes.items())
    )
    return subject.user, tuple(sorted(set(subject.roles))), attributes


#: decisions a Governor keeps (a bound: every distinct principal and product is one)
MAX_CACHED_DECISIONS = 200_000


@dataclass(frozen=True)
class ColumnAccess:
    """One column of a product for one user."""

    name: str
    visible: bool
    mask: CompiledMask | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ProductAccess:
    """What one user may see of one product."""

    product: str
    allowed: bool
    row_filter: exp.Expr | None
    columns: tuple[ColumnAccess, ...]
    reasons: tuple[str, ...]

    @property
    def visible_columns(self) -> tuple[ColumnAccess, ...]:
        return tuple(c for c in self.columns if c.visible)

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the decision (allowed, row filter, columns and their masks; not the
        reasons): equal in every process whose policy decides alike, whatever its version."""
        decision = [
            self.product,
            self.allowed,
            None if self.row_filter is None else self.row_filter.sql("duckdb"),
            [[c.name, c.visible, c.mask.spec if c.mask else None] for c in self.columns],
        ]
        return hashlib.sha256(json.dumps(decision).encode()).hexdigest()[:32]


class Governor:
    """Decisions for one version of the mesh's policy files."""

    def __init__(
        self,
        files: Iterable[PolicyFile],
        products: Mapping[str, ProductShape],
        hash_key: str | None,
        version: int = 0,
        closed_domains: frozenset[str] = frozenset(),
    ) -> None:
        self.version = version
        self.products = dict(products)
        self.closed_domains = closed_domains
        self._hash_key = hash_key
        files = list(files)
        self.rules: tuple[Rule, ...] = tuple(r for f in files for r in f.rules)
        tags = {f"{p.key}.{c.name}": c.tags for p in products.values() for c in p.columns}
        links = [(link.member, link.role) for f in files for link in f.links]
        self._decider = Decider(self.rules, links, tags)
        self._filters = {
            id(r): parse_filter(r.argument, [c.name for c in products[r.object].columns])
            for r in self.rules
            if r.action is Action.FILTER and r.object in products
        }
        self._cache: dict[tuple[object, str], ProductAccess] = {}
        self._lock = threading.Lock()

    # -- decisions --------------------------------------------------------------------

    def may_read(self, subject: Subject, product_key: str) -> bool:
        return self.access(subject, product_key).allowed

    def access(self, subject: Subject, product_key: str) -> ProductAccess:
        """What ``subject`` may see of ``product_key`` (cached for this policy version)."""
        key = (subject_key(subject), product_key)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._decide(subject, product_key)
            with self._lock:
                if len(self._cache) >= MAX_CACHED_DECISIONS:
                    self._cache.pop(next(iter(self._cache)))  # the oldest
                self._cache[key] = cached
        return cached

    def _decide(self, subject: Subject, product_key: str) -> ProductAccess:
        product = self.products.get(product_key)
        if product is None:
            return ProductAccess(product_key, False, None, (), ("not in this policy's catalog",))
        user = subject.user
        if product.domain in self.closed_domains:
            return _denied(
                product,
                f"domain {product.domain}'s policy file is invalid: access is closed until it is fixed",
            )
        if not self._decider.enforce(user, product_key, Action.READ, roles=subject.roles):
            return _denied(product, self._explain_denial(subject, product_key))
        # Each of the user's direct roles (with what it inherits), and the user's own
        # rules, is one "grant"; the user sees the union of what the grants allow.
        grants = self._grants(subject)
        granting = [g for g in grants if self._grants_read(g, product_key)]
        row_filter, filter_reasons = self._row_filter(subject, product_key, granting)
        columns = tuple(
            self._column(subject, product, column.name, granting) for column in product.columns
        )
        reasons = (
            tuple(
                f"read allowed by {r.origin}"
                for g in granting
                for r in self._rules(Action.READ, product_key, g, Effect.ALLOW)
            )
            + filter_reasons
        )
        return ProductAccess(product_key, True, row_filter, columns, tuple(dict.fromkeys(reasons)))

    def _grants_read(self, grant: _Grant, obj: str) -> bool:
        if grant.is_user:
            return bool(self._rules(Action.READ, obj, grant, Effect.ALLOW))
        return self._decider.enforce(grant.name, obj, Action.READ)

    def _row_filter(
        self, subject: Subject, product_key: str, granting: list[_Grant]
    ) -> tuple[exp.Expr | None, tuple[str, ...]]:
        per_grant: list[exp.Expr] = []
        reasons: list[str] = []
        for grant in granting:
            rules = [
                r
                for r in self._rules(Action.FILTER, product_key, grant, Effect.ALLOW)
                if r.object == product_key
            ]
            if not rules:
                return None, ()  # this grant reads every row: so does the union
            bound = [bind_attributes(self._filters[id(r)], subject.attributes) for r in rules]
            per_grant.append(reduce(exp.and_, bound))
            reasons += [f"rows filtered by {r.origin}: {r.argument}" for r in rules]
        return reduce(exp.or_, per_grant), tuple(dict.fromkeys(reasons))

    def _column(
        self, subject: Subject, product: ProductShape, column: str, granting: list[_Grant]
    ) -> ColumnAccess:
        obj = f"{product.key}.{column}"
        user = subject.user
        if not self._decider.enforce(user, obj, Action.READ, roles=subject.roles):
            return ColumnAccess(column, False, None, (self._explain_denial(subject, obj),))
        domain_masks = [
            self._strongest(self._domain_masks(grant, obj), product, column) for grant in granting
        ]
        chosen: tuple[CompiledMask, Rule] | None = None
        found = [m for m in domain_masks if m is not None]
        if domain_masks and len(found) == len(domain_masks):
            chosen = min(found, key=lambda m: m[0].strength)
        if chosen is None and self._decider.enforce(
            user, obj, Action.MASK, GLOBAL, roles=subject.roles
        ):
            floor = [
                r
                for grant in self._grants(subject)
                for r in self._rules(Action.MASK, obj, grant, Effect.ALLOW, GLOBAL)
            ]
            chosen = self._strongest(floor, product, column)
        if chosen is None:
            return ColumnAccess(column, True, None, ())
        mask, rule = chosen
        return ColumnAccess(column, True, mask, (f"masked with {mask.spec} by {rule.origin}",))

    def _domain_masks(self, grant: _Grant, obj: str) -> list[Rule]:
        allows = self._rules(Action.MASK, obj, grant, Effect.ALLOW, DOMAIN)
        if not allows:
            return []
        if grant.is_user:
            exempt = self._rules(Action.MASK, obj, grant, Effect.DENY, DOMAIN)
            return [] if exempt else allows
        return allows if self._decider.enforce(grant.name, obj, Action.MASK, DOMAIN) else []

    def _strongest(
        self, rules: list[Rule], product: ProductShape, column: str
    ) -> tuple[CompiledMask, Rule] | None:
        shape = product.column(column)
        assert shape is not None  # ``column`` is one of the product's columns
        data_type = exp.DataType.build(shape.duck_type, dialect="duckdb")
        compiled = []
        for rule in rules:
            try:
                compiled.append((compile_mask(rule.argument, data_type, self._hash_key), rule))
            except ValueError:  # a mask that does not fit this column's type: fail closed
                compiled.append((compile_mask(_FALLBACK_MASK, data_type, None), rule))
        return max(compiled, key=lambda pair: pair[0].strength) if compiled else None

    def _rules(
        self, action: Action, obj: str, grant: _Grant, effect: Effect, layer: Layer = ALL
    ) -> list[Rule]:
        """The rules of ``action``/``effect`` on ``obj`` that apply to ``grant``, in policy
        order: for the user's own grant, rules naming the user or *; for a role, the role,
        what it inherits, and *. ``layer`` GLOBAL or DOMAIN narrows to that layer."""
        if grant.is_user:
            subjects = frozenset(("*", grant.name))
        else:
            subjects = self._decider.subjects(grant.name)

        def applies(rule: Rule) -> bool:
            if rule.subject in ("*", grant.name):
                return True
            return not grant.is_user and self._decider.has_link(grant.name, rule.subject)

        return [
            r
            for r in self._decider.candidates(action, obj, subjects)
            if r.effect is effect and in_layer(r, layer) and applies(r)
        ]

    def _grants(self, subject: Subject) -> list[_Grant]:
        """The user's own grant, then one per role the user holds directly: the subject's
        roles and the user's links in the policy files."""
        roles = set(subject.roles) | set(self._decider.roles_for(subject.user))
        roles.discard(subject.user)
        return [_Grant(subject.user, True), *(_Grant(role, False) for role in sorted(roles))]

    def _explain_denial(self, subject: Subject, obj: str) -> str:
        denies = [
            r for g in self._grants(subject) for r in self._rules(Action.READ, obj, g, Effect.DENY)
        ]
        if denies:
            return f"read denied by {', '.join(r.origin for r in denies)}"
        return "no rule grants read (default deny)"


@dataclass(frozen=True)
class _Grant:
    """One source of permissions: a role the user holds, or the user's own rules."""

    name: str
    is_user: bool


def _denied(product: ProductShape, reason: str) -> ProductAccess:
    return ProductAccess(product.key, False, None, (), (reason,))
