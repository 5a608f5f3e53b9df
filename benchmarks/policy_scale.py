"""Synthetic policy sets of a given size, for the Casbin decision-time benchmark (R7).

A set of ``n`` lines always contains the benchmark mesh's real rules (the global floor
and the analyst's grants, filter and mask); the rest are generated the way a large
organisation's files grow: many roles, each granted read on products, some columns
masked or denied, row filters on products, and role hierarchy (``g``) lines. About half
of the generated rules name the real products (so every decision has to look past them),
the other half name products of the same domains that are not in the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from benchmarks.data import DOMAIN_POLICIES, GLOBAL_POLICY
from policies.loader import GLOBAL_SCOPE, PolicyFile
from policies.rules import Action, Effect, ProductShape, RoleLink, Rule

_GLOBAL_PATH = Path("policies/global.csv")


def _parse_lines(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append([f.strip() for f in line.split(",", 5)])
    return rows


def _rule(fields: list[str], scope: str, path: Path, line: int) -> Rule:
    subject, obj, action, effect = fields[1:5]
    argument = fields[5] if len(fields) > 5 else ""
    return Rule(subject, obj, Action(action), Effect(effect), argument, path, line, scope)


def base_policy() -> tuple[list[tuple[str, Rule]], list[RoleLink]]:
    """The benchmark mesh's real rules as (scope, rule) pairs, and its role links."""
    rules: list[tuple[str, Rule]] = []
    links: list[RoleLink] = []
    for number, fields in enumerate(_parse_lines(GLOBAL_POLICY), start=1):
        if fields[0] == "g":
            links.append(RoleLink(fields[1], fields[2], f"global.csv:{number}"))
        else:
            rules.append((GLOBAL_SCOPE, _rule(fields, GLOBAL_SCOPE, _GLOBAL_PATH, number)))
    for domain, text in DOMAIN_POLICIES.items():
        path = Path(domain) / "policy.csv"
        for number, fields in enumerate(_parse_lines(text), start=1):
            rules.append((domain, _rule(fields, domain, path, number)))
    return rules, links


def policy_files(lines: int, products: Mapping[str, ProductShape]) -> tuple[list[PolicyFile], int]:
    """Policy files holding exactly ``max(lines, base)`` lines; returns (files, line count)."""
    rules, links = base_policy()
    base = len(rules) + len(links)
    extra = max(0, lines - base)
    real = sorted(products.values(), key=lambda p: p.key)
    paths = {
        p.domain: Path(p.domain) / "policy.csv" for p in real
    }  # one Path per file, not per line
    roles = max(1, extra // 25)
    generated_links: list[RoleLink] = []
    n_links = extra // 10
    for i in range(n_links):
        # A hierarchy of generated roles and some users holding them.
        member = f"role_{i + 1}" if i % 2 == 0 and i + 1 < roles else f"user_{i}"
        generated_links.append(RoleLink(member, f"role_{i % roles}", f"generated:{i}"))
    for i in range(extra - n_links):
        role = f"role_{i % roles}"
        product = real[i % len(real)]
        synthetic = (i // len(real)) % 2 == 1
        key = f"{product.domain}.synthetic_{i}" if synthetic else product.key
        column = product.columns[i % len(product.columns)].name
        kind = i % 20
        if kind < 12:
            fields = ["p", role, key, "read", "allow"]
        elif kind < 15 and not synthetic:
            fields = ["p", role, f"{key}.{column}", "mask", "allow", "redact"]
        elif kind < 17 and not synthetic:
            fields = ["p", role, f"{key}.{column}", "read", "deny"]
        elif kind < 19:
            # Filters on products outside the catalog are never parsed; on real products
            # they are, which is what a big policy pays at load.
            fields = [
                "p",
                role,
                key,
                "filter",
                "allow",
                f"{column} IS NOT NULL" if not synthetic else "1 = 1",
            ]
        else:
            fields = ["p", role, f"{product.domain}.*", "read", "allow"]
        rules.append(
            (product.domain, _rule(fields, product.domain, paths[product.domain], 1000 + i))
        )
    by_scope: dict[str, list[Rule]] = {}
    for scope, rule in rules:
        by_scope.setdefault(scope, []).append(rule)
    files = [
        PolicyFile(
            _GLOBAL_PATH if scope == GLOBAL_SCOPE else Path(scope) / "policy.csv",
            scope,
            tuple(scope_rules),
            tuple(links + generated_links) if scope == GLOBAL_SCOPE else (),
        )
        for scope, scope_rules in by_scope.items()
    ]
    total = sum(len(f.rules) + len(f.links) for f in files)
    return files, total
