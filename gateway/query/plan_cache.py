"""Plans already made, for statements that come again (dashboards, re-executed cursors).

A plan is what the pipeline made of one statement text for one principal (user, roles,
attributes) under one catalog and one policy version, plus its result schema when the
statement has no parameters. The cache forgets everything as soon as the catalog or the
policy changes, so a plan never outlives the rules it was made under; refusals are never
cached (each one is planned, refused and audited again). Entries keep no syntax tree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pyarrow as pa

from gateway.engine.arrow_types import schema_bytes
from gateway.engine.plan_cost import PlanCost
from gateway.memo import WeakSlot, WeightedLRU, held_bytes
from gateway.planning.query import Query
from gateway.security.principal import Principal
from policies.engine import Subject, subject_key

DEFAULT_CAPACITY = 2048
#: Total and per-entry bounds on the statement texts and SQL an entry keeps: long
#: generated statements are planned each time rather than pinning memory.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
MAX_ENTRY_BYTES = 64 * 1024


@dataclass(frozen=True)
class CachedPlan:
    """A governed query and, for a statement without parameters, its result schema and
    estimated cost."""

    query: Query
    schema: pa.Schema | None
    cost: PlanCost | None = None


PlanKey = tuple[str, str, tuple[str, ...], tuple[tuple[str, str, object], ...], str | None]


def plan_key(principal: Principal, text: str, default_schema: str | None = None) -> PlanKey:
    """Everything besides the catalog and the policy version that a plan depends on: the
    text and whom it governs, by user, roles and typed attributes (the same user may come
    back with a token carrying others), and the schema unqualified product names mean (a
    session's: ``orders`` is another product in another schema)."""
    user, roles, attributes = subject_key(
        Subject(principal.user, principal.roles, principal.attributes)
    )
    return text, user, roles, attributes, default_schema


class PlanCache:
    """A bounded LRU of plans for one (catalog, policy version) at a time."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._entries: WeightedLRU[PlanKey, CachedPlan] = WeightedLRU(max_bytes, capacity)
        self._catalog = WeakSlot()
        self._policy_version: int | None = None
        self._lock = threading.Lock()

    def _current(self, catalog: object, policy_version: int) -> bool:
        return self._catalog.holds(catalog) and policy_version == self._policy_version

    def get(self, catalog: object, policy_version: int, key: PlanKey) -> CachedPlan | None:
        """The plan for ``key`` made under this catalog and policy version, if any."""
        with self._lock:
            if not self._current(catalog, policy_version):
                return None
            return self._entries.get(key)

    def put(self, catalog: object, policy_version: int, key: PlanKey, plan: CachedPlan) -> None:
        """Keep ``plan`` (without its syntax tree) unless its text is too large to be worth
        it; it weighs its text and its result schema (thousands of columns cost a client a
        few bytes of text each)."""
        kept = CachedPlan(plan.query.without_ast(), plan.schema, plan.cost)
        text = text_bytes(kept.query)
        if text > MAX_ENTRY_BYTES:
            return
        weight = text + (schema_bytes(kept.schema) if kept.schema is not None else 0)
        with self._lock:
            if not self._current(catalog, policy_version):
                self._entries.clear()
                self._catalog.set(catalog)
                self._policy_version = policy_version
            self._entries.put(key, kept, weight)

    def __len__(self) -> int:
        return len(self._entries)


def text_bytes(query: Query) -> int:
    """The memory of the text ``query`` keeps: its statement, governed and display SQL."""
    return held_bytes(query.text) + held_bytes(query.sql) + held_bytes(query.display_sql)
