"""The rule index leaves nothing out: decisions over generated policies equal Casbin's and
the Governor's over the whole policy (no server, no data)."""

from __future__ import annotations

import random
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import casbin
import pytest

import policies.decider
from policies.decider import ALL, DOMAIN, GLOBAL, Decider, in_layer
from policies.engine import Governor, ProductAccess, Subject
from policies.index import RuleIndex, candidate_objects
from policies.loader import GLOBAL_SCOPE, PolicyFile
from policies.rules import Action, ColumnShape, Effect, ProductShape, RoleLink, Rule, object_matcher

KEY = "k" * 32
PRODUCTS = {
    p.key: p
    for p in (
        ProductShape(
            "sales",
            "orders",
            (
                ColumnShape("order_id", "BIGINT", frozenset()),
                ColumnShape("region", "VARCHAR", frozenset({"geo"})),
                ColumnShape("amount", "DECIMAL(12,2)", frozenset({"money"})),
                ColumnShape("buyer_email", "VARCHAR", frozenset({"pii"})),
            ),
        ),
        ProductShape(
            "sales",
            "returns",
            (
                ColumnShape("order_id", "BIGINT", frozenset()),
                ColumnShape("reason", "VARCHAR", frozenset()),
            ),
        ),
        ProductShape(
            "crm",
            "customers",
            (
                ColumnShape("customer_id", "BIGINT", frozenset()),
                ColumnShape("region", "VARCHAR", frozenset({"geo"})),
                ColumnShape("email", "VARCHAR", frozenset({"pii"})),
                ColumnShape("ssn", "VARCHAR", frozenset({"pii", "secret"})),
            ),
        ),
    )
}
TAGS = {f"{p.key}.{c.name}": c.tags for p in PRODUCTS.values() for c in p.columns}
ROLES = [f"role_{i}" for i in range(8)]
USERS = [f"user_{i}" for i in range(6)]
#: A chain longer than Casbin's role hierarchy limit (10 levels): its top stays out of reach.
CHAIN = [f"chain_{i}" for i in range(13)]
MASKS = ["hash", "redact", "null", "round:100"]
FILTERS = {
    "sales.orders": ["region = 'EU'", "region = {user.region}", "order_id > 10"],
    "sales.returns": ["order_id > 10", "reason IS NOT NULL"],
    "crm.customers": ["region = {user.region}", "customer_id < 5"],
}


def _objects(domain: str | None) -> list[str]:
    """Object patterns a rule of ``domain`` (None: the global file) may name."""
    products = [p for p in PRODUCTS.values() if domain in (None, p.domain)]
    objects = [f"{p.domain}.*" for p in products] + [p.key for p in products]
    objects += [f"{p.key}.{c.name}" for p in products for c in p.columns]
    if domain is None:
        objects += ["*", "tag:pii", "tag:geo", "tag:money", "tag:secret", "tag:unused"]
    return objects


def _rule(rng: random.Random, line: int) -> Rule:
    domain = rng.choice([None, "sales", "crm"])
    action = rng.choice([Action.READ, Action.READ, Action.MASK, Action.FILTER])
    # * on masks only (as the global floor uses it): a read or filter for everyone would
    # make most users see every row, and leave row filters untested.
    subject = rng.choice(ROLES + USERS + CHAIN[-2:] + (["*"] if action is Action.MASK else []))
    obj = rng.choice(_objects(domain))
    effect = Effect.DENY if rng.random() < 0.2 else Effect.ALLOW
    argument = ""
    if action is Action.FILTER:
        obj = rng.choice([k for k in PRODUCTS if domain in (None, PRODUCTS[k].domain)])
        effect, argument = Effect.ALLOW, rng.choice(FILTERS[obj])
    elif action is Action.MASK and effect is Effect.ALLOW:
        argument = rng.choice(MASKS)
    scope = GLOBAL_SCOPE if domain is None else domain
    return Rule(subject, obj, action, effect, argument, Path(f"{scope}.csv"), line, scope)


def _policy(
    seed: int, size: int
) -> tuple[list[Rule], list[tuple[str, str]], dict[str, tuple[str, ...]]]:
    """Random rules, role links (a cycle, a hierarchy, a too-long chain) and user roles."""
    rng = random.Random(seed)
    rules = [_rule(rng, line) for line in range(1, size + 1)]
    links = [(ROLES[i], ROLES[i + 1]) for i in range(len(ROLES) - 1)] + [(ROLES[-1], ROLES[2])]
    links += [(CHAIN[i], CHAIN[i + 1]) for i in range(len(CHAIN) - 1)]
    user_roles = {user: tuple(rng.sample(ROLES, rng.randint(0, 2))) for user in USERS}
    user_roles[USERS[0]] += (CHAIN[0],)
    return rules, links, user_roles


def _all_links(
    links: list[tuple[str, str]], user_roles: dict[str, tuple[str, ...]]
) -> list[tuple[str, str]]:
    return links + [(user, role) for user, roles in user_roles.items() for role in roles]


def _plain_casbin(rules: list[Rule], links: list[tuple[str, str]]) -> casbin.Enforcer:
    """Casbin over the whole policy, loaded line by line."""
    model = casbin.Model()
    model.load_model_from_text(resources.files("policies").joinpath("model.conf").read_text())
    enforcer = casbin.Enforcer(model)
    enforcer.add_function("objectMatch", object_matcher(TAGS))
    if rules:
        enforcer.add_policies([r.as_casbin() for r in rules])
    enforcer.add_grouping_policies([list(link) for link in links])
    return enforcer


def _requests() -> list[str]:
    return [*PRODUCTS, *TAGS, "sales", "unknown.product"]


def test_candidate_objects_hold_every_pattern_that_matches():
    match = object_matcher(TAGS)
    patterns = {*_objects(None), "sales", "sales.orders.order_id.x", "sale.*", "sales.ord", "tag:"}
    requests = [*_requests(), "*", "sales.*", "tag:pii", "a.b.c.d"]
    for request in requests:
        candidates = set(candidate_objects(request, TAGS))
        assert {p for p in patterns if match(request, p)} <= candidates, request
    assert "tag:pii" in candidate_objects("crm.customers.ssn", TAGS)
    assert "sales.*" in candidate_objects("sales.orders.amount", TAGS)


@pytest.mark.parametrize("seed", [1, 2])
def test_decider_decides_as_casbin_over_the_whole_policy(seed):
    rules, links, user_roles = _policy(seed, 900)
    links = _all_links(links, user_roles)
    decider = Decider(rules, links, TAGS)
    plain = {
        layer: _plain_casbin([r for r in rules if in_layer(r, layer)], links)
        for layer in (ALL, GLOBAL, DOMAIN)
    }
    rng = random.Random(seed)
    outcomes = []
    for subject in [*USERS, *ROLES, *CHAIN, "stranger"]:
        for request in rng.sample(_requests(), 8):
            action = rng.choice([Action.READ, Action.MASK])
            layer = rng.choice([ALL, GLOBAL, DOMAIN])
            expected = plain[layer].enforce(subject, request, action.value)
            assert decider.enforce(subject, request, action, layer) == expected, (
                subject,
                request,
                action,
                layer,
            )
            outcomes.append(expected)
    assert True in outcomes and False in outcomes


def test_a_grant_beyond_casbins_hierarchy_limit_stays_out_of_reach():
    top = Rule(
        CHAIN[-1], "sales.orders", Action.READ, Effect.ALLOW, "", Path("g.csv"), 1, GLOBAL_SCOPE
    )
    near = Rule(
        CHAIN[5], "crm.customers", Action.READ, Effect.ALLOW, "", Path("g.csv"), 2, GLOBAL_SCOPE
    )
    links = [(CHAIN[i], CHAIN[i + 1]) for i in range(len(CHAIN) - 1)]
    decider = Decider([top, near], links, TAGS)
    assert CHAIN[-1] in decider.subjects(CHAIN[0])  # a candidate: Casbin's g() decides
    assert not decider.enforce(CHAIN[0], "sales.orders", Action.READ)
    assert decider.enforce(CHAIN[0], "crm.customers", Action.READ)
    assert decider.enforce(CHAIN[0], "sales.orders", Action.READ) == _plain_casbin(
        [top, near], links
    ).enforce(CHAIN[0], "sales.orders", "read")


class _ActionScan(RuleIndex):
    """Every rule of the action, whatever its subject and object: the whole policy."""

    def __init__(self, rules, column_tags) -> None:
        self._rules = list(rules)

    def candidates(self, action, request, subjects):
        return [r for r in self._rules if r.action is action]


def _governor(rules: list[Rule], links: list[tuple[str, str]]) -> Governor:
    global_links = tuple(RoleLink(member, role, "global.csv:0") for member, role in links)
    files = [
        PolicyFile(
            Path("global.csv"),
            GLOBAL_SCOPE,
            tuple(r for r in rules if r.scope == GLOBAL_SCOPE),
            global_links,
        )
    ]
    files += [
        PolicyFile(Path(f"{d}.csv"), d, tuple(r for r in rules if r.scope == d), ())
        for d in ("sales", "crm")
    ]
    return Governor(files, PRODUCTS, KEY)


def _seen(access: ProductAccess) -> tuple:
    """Everything a decision says, comparable."""
    return (
        access.allowed,
        access.row_filter.sql("duckdb") if access.row_filter is not None else None,
        access.reasons,
        tuple(
            (c.name, c.visible, c.mask.spec if c.mask else None, c.reasons) for c in access.columns
        ),
    )


@pytest.mark.parametrize("seed", [1, 3, 6])
def test_governor_decides_as_over_the_whole_policy(seed, monkeypatch):
    rules, links, user_roles = _policy(seed, 300)
    indexed = _governor(rules, links)
    monkeypatch.setattr(policies.decider, "RuleIndex", _ActionScan)
    whole = _governor(rules, links)
    decisions = []
    for user in [*USERS, "stranger"]:
        subject = Subject(user, user_roles.get(user, ()), {"region": "EU"})
        for product in [*PRODUCTS, "sales.unknown"]:
            seen = _seen(indexed.access(subject, product))
            assert seen == _seen(whole.access(subject, product)), (user, product)
            decisions.append(seen)
    assert any(d[0] for d in decisions) and not all(d[0] for d in decisions)
    assert any(c[2] for d in decisions for c in d[3])  # some column masked
    assert any(d[1] for d in decisions)  # some rows filtered


def test_concurrent_decisions_agree_with_sequential_ones():
    rules, links, user_roles = _policy(6, 600)
    decider = Decider(rules, _all_links(links, user_roles), TAGS)
    requests = [
        (s, r, a) for s in USERS + ROLES for r in _requests() for a in (Action.READ, Action.MASK)
    ]
    expected = [decider.enforce(*request) for request in requests]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside Casbin's calls
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda request: decider.enforce(*request), requests * 4))
    finally:
        sys.setswitchinterval(interval)
    assert results == expected * 4
