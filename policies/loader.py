"""Policy files -> validated rules, every error naming the file and line.

Files of a mesh:
- ``<mesh>/policies/global.csv``: the platform's mesh-wide rules (the floor) and the role
  hierarchy (``g`` lines);
- ``<mesh>/<domain>/policy.csv``: a domain's own rules, which may only name that domain's
  products and columns.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlglot import exp

from policies.errors import PolicyError, PolicyExpressionError
from policies.filters import parse_filter
from policies.masks import compile_mask
from policies.rules import Action, Effect, ProductShape, RoleLink, Rule, object_matcher

GLOBAL_SCOPE = "global"
GLOBAL_POLICY_PATH = Path("policies") / "global.csv"
DOMAIN_POLICY_NAME = "policy.csv"


@dataclass(frozen=True)
class PolicyFile:
    """The validated content of one policy file."""

    path: Path
    scope: str
    rules: tuple[Rule, ...]
    links: tuple[RoleLink, ...]


def policy_paths(mesh_dir: Path, domains: list[str]) -> dict[str, Path]:
    """Scope -> policy file path, for the global file and every domain folder."""
    paths = {GLOBAL_SCOPE: mesh_dir / GLOBAL_POLICY_PATH}
    for domain in domains:
        paths[domain] = mesh_dir / domain / DOMAIN_POLICY_NAME
    return paths


def read_policy_file(
    path: Path,
    scope: str,
    products: Mapping[str, ProductShape],
    hash_key: str | None,
    served_domains: frozenset[str] | None = None,
) -> PolicyFile:
    """Parse and validate one file; raise PolicyError at the first bad line.

    ``served_domains`` (a domain node, which knows only its own products): rules naming a
    product or column of another domain are skipped, not refused as unknown; they cannot
    decide anything about the served domains (the gateway validates them)."""
    rules: list[Rule] = []
    links: list[RoleLink] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyError(path, 0, "policy file missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(path, 0, f"cannot read the policy file: {exc}") from exc
    checker = _LineChecker(path, scope, products, hash_key)
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = next(csv.reader([stripped], skipinitialspace=True))
        except csv.Error as exc:
            raise PolicyError(path, number, f"not a CSV line: {exc}") from exc
        fields = [f.strip() for f in fields]
        kind = fields[0]
        if kind == "p" and served_domains and _names_other_domain(fields, served_domains):
            continue
        if kind == "p":
            rules.append(checker.rule(number, fields[1:]))
        elif kind == "g":
            links.append(checker.link(number, fields[1:]))
        else:
            raise PolicyError(
                path, number, f"unknown line type {kind!r}; use `p` (rule) or `g` (role)"
            )
    return PolicyFile(path, scope, tuple(rules), tuple(links))


def _names_other_domain(fields: list[str], served: frozenset[str]) -> bool:
    """Whether a ``p`` line's object is ``<domain>.<...>`` for a domain not in ``served``."""
    obj = fields[2] if len(fields) > 2 else ""
    if obj == "*" or obj.startswith("tag:") or "." not in obj:
        return False
    return obj.split(".", 1)[0] not in served


class _LineChecker:
    def __init__(
        self, path: Path, scope: str, products: Mapping[str, ProductShape], hash_key: str | None
    ) -> None:
        self.path = path
        self.scope = scope
        self.products = products
        self.hash_key = hash_key
        tags = {f"{p.key}.{c.name}": c.tags for p in products.values() for c in p.columns}
        self.matches = object_matcher(tags)

    def fail(self, line: int, problem: str) -> PolicyError:
        return PolicyError(self.path, line, problem)

    def link(self, line: int, fields: list[str]) -> RoleLink:
        if self.scope != GLOBAL_SCOPE:
            raise self.fail(line, "role hierarchy (`g`) lines belong in the global policy file")
        if len(fields) != 2 or not all(fields):
            raise self.fail(line, "a role line is `g, <user or role>, <role>`")
        return RoleLink(fields[0], fields[1], f"{self.path.parent.name}/{self.path.name}:{line}")

    def rule(self, line: int, fields: list[str]) -> Rule:
        if len(fields) not in (4, 5):
            raise self.fail(
                line, "a rule is `p, <subject>, <object>, <action>, <allow|deny>[, <argument>]`"
            )
        subject, obj, action_text, effect_text = fields[:4]
        argument = fields[4] if len(fields) == 5 else ""
        if not subject or " " in subject:
            raise self.fail(line, f"invalid subject {subject!r}: a user, a role or *")
        try:
            action = Action(action_text.lower())
        except ValueError:
            raise self.fail(
                line, f"unknown action {action_text!r}; use read, mask or filter"
            ) from None
        try:
            effect = Effect(effect_text.lower())
        except ValueError:
            raise self.fail(line, f"unknown effect {effect_text!r}; use allow or deny") from None
        columns = self._check_object(line, obj, action)
        rule = Rule(subject, obj, action, effect, argument, self.path, line, self.scope)
        self._check_argument(line, rule, columns)
        return rule

    def _check_object(self, line: int, obj: str, action: Action) -> list[tuple[ProductShape, str]]:
        """Validate the object; return the (product, column) pairs it covers today."""
        if obj == "*" or obj.startswith("tag:"):
            if self.scope != GLOBAL_SCOPE:
                raise self.fail(
                    line,
                    f"object {obj!r} reaches beyond this domain; domain files name "
                    f"{self.scope}.* or {self.scope}.<product>[.<column>]",
                )
            if obj.startswith("tag:") and (action is Action.FILTER or len(obj) == 4):
                raise self.fail(
                    line, "a tag object is `tag:<name>` and applies to columns (read or mask)"
                )
            return self._covered(obj)
        parts = obj.split(".")
        if len(parts) not in (2, 3) or not all(parts):
            raise self.fail(
                line,
                f"invalid object {obj!r}; use <domain>.*, <domain>.<product> or <domain>.<product>.<column>",
            )
        domain = parts[0]
        if self.scope not in (GLOBAL_SCOPE, domain):
            raise self.fail(
                line,
                f"object {obj!r} belongs to domain {domain!r}; the {self.scope} policy may "
                f"only name {self.scope}'s products",
            )
        if parts[1] == "*":
            if len(parts) != 2:
                raise self.fail(line, f"invalid object {obj!r}")
            if action is Action.FILTER:
                raise self.fail(line, "a filter names one product, not a whole domain")
            return self._covered(obj)
        product = self.products.get(f"{domain}.{parts[1]}")
        if product is None:
            raise self.fail(
                line,
                f"unknown product {domain}.{parts[1]}; check the name against `meshgate products`",
            )
        if len(parts) == 3:
            if action is Action.FILTER:
                raise self.fail(line, "a filter names a product, not a column")
            if product.column(parts[2]) is None:
                raise self.fail(
                    line,
                    f"product {product.key} has no column {parts[2]!r} "
                    f"(columns: {', '.join(c.name for c in product.columns)})",
                )
        return self._covered(obj)

    def _covered(self, obj: str) -> list[tuple[ProductShape, str]]:
        return [
            (product, column.name)
            for product in self.products.values()
            for column in product.columns
            if self.matches(f"{product.key}.{column.name}", obj)
        ]

    def _check_argument(
        self, line: int, rule: Rule, columns: list[tuple[ProductShape, str]]
    ) -> None:
        if rule.action is Action.READ or (
            rule.action is Action.MASK and rule.effect is Effect.DENY
        ):
            if rule.argument:
                raise self.fail(line, f"`{rule.action} {rule.effect}` takes no argument")
            return
        if rule.action is Action.FILTER:
            if rule.effect is not Effect.ALLOW:
                raise self.fail(
                    line, "filters are `allow` rules: they say which rows a subject may read"
                )
            product = self.products[rule.object]
            try:
                parse_filter(rule.argument, [c.name for c in product.columns])
            except PolicyExpressionError as exc:
                raise self.fail(line, f"filter on {rule.object}: {exc}") from exc
            return
        if not rule.argument:
            raise self.fail(line, "a mask rule names its mask, e.g. `hash` or `round:100`")
        if not columns:
            self._compile(line, rule.argument, None)
            return
        for product, column in columns:
            shape = product.column(column)
            assert shape is not None  # ``columns`` are the product's own
            self._compile(
                line,
                rule.argument,
                exp.DataType.build(shape.duck_type, dialect="duckdb"),
                f"{product.key}.{column}",
            )

    def _compile(
        self, line: int, spec: str, data_type: exp.DataType | None, where: str = ""
    ) -> None:
        try:
            compile_mask(spec, data_type, self.hash_key)
        except PolicyExpressionError as exc:
            suffix = f" (column {where})" if where else ""
            raise self.fail(line, f"{exc}{suffix}") from exc
