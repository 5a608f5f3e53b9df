"""The value that flows through the pipeline steps, and the context each step reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gateway.errors import QueryFailed
from gateway.security.principal import Principal
from policies.engine import Governor, ProductAccess, Subject

if TYPE_CHECKING:
    from gateway.catalog.catalog import Catalog, Product


@dataclass(frozen=True)
class PlanLimits:
    """Bounds on what the planner accepts, and on the time it may spend."""

    max_statement_bytes: int = 256 * 1024  # [gateway] max_statement_bytes
    max_nesting: int = 64
    #: syntax tree nodes, counted right after parsing: every later step walks the tree
    max_tree_nodes: int = 100_000
    #: checked between steps (and inside long ones); the query timeout by default
    max_planning_seconds: float | None = None
    #: iterations of a recursive CTE ([workload] max_recursion_depth)
    max_recursion_depth: int = 1000


@dataclass(frozen=True)
class TargetSource:
    """How the target engine reads one product: a table (or a derived table), and whether
    its rows are governed already (a fragment the gateway filtered and masked: then a
    table), so that no second filter or mask applies."""

    table: exp.Expr
    governed: bool = False


@dataclass(frozen=True)
class PlanContext:
    """What a step may consult: who asks, what exists, the policy in force, the limits."""

    principal: Principal
    catalog: Catalog
    governor: Governor
    limits: PlanLimits = PlanLimits()
    hash_key: str | None = None
    #: when planning must stop (``clock()`` time), set by ``plan`` from the limits
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic
    #: the engine the SQL is for: "duckdb" (the gateway's own) or "spark"
    target: str = "duckdb"
    #: how ``target`` reads each product (by key); the engine's own view when absent
    sources: Mapping[str, TargetSource] = field(default_factory=dict)
    #: the domain an unqualified product name means (the client's session schema)
    default_schema: str | None = None

    @property
    def subject(self) -> Subject:
        principal = self.principal
        return Subject(principal.user, principal.roles, principal.attributes)


def check_deadline(context: PlanContext) -> None:
    """Stop planning once ``context.deadline`` has passed (a cooperative check)."""
    if context.deadline is not None and context.clock() > context.deadline:
        raise QueryFailed(
            "planning the statement exceeded the time limit of "
            f"{context.limits.max_planning_seconds:g} s; simplify it (fewer CTEs, references or "
            "expressions) or split it"
        )


@dataclass(frozen=True)
class Query:
    """A statement on its way from client text to engine SQL."""

    text: str
    ast: exp.Expr | None = None
    explain: str | None = None  # None, "plan" or "policy"
    products: tuple[Product, ...] = ()
    accesses: dict[str, ProductAccess] = field(default_factory=dict)
    parameter_count: int = 0
    #: a dynamic PIVOT names result columns after values: the schema is data, not plan
    columns_from_data: bool = False
    sql: str | None = None
    display_sql: str | None = None

    def evolve(self, **changes: Any) -> Query:
        """A copy with ``changes`` applied (steps never mutate their input)."""
        return replace(self, **changes)

    def without_ast(self) -> Query:
        """This query without its syntax tree (what a kept plan holds: memory); itself
        when it has none already."""
        return self if self.ast is None else self.evolve(ast=None)

    @property
    def product_keys(self) -> tuple[str, ...]:
        return tuple(sorted({p.key for p in self.products}))
