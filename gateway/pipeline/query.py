"""The value that flows through the pipeline steps, and the context each step reads."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.principal import Principal

if TYPE_CHECKING:
    from gateway.catalog import Catalog, Product


@dataclass(frozen=True)
class PlanLimits:
    """Bounds on what the planner accepts."""

    max_statement_bytes: int = 1_000_000


@dataclass(frozen=True)
class PlanContext:
    """What a step may consult: who asks, what exists, which limits apply."""

    principal: Principal
    catalog: Catalog
    limits: PlanLimits = PlanLimits()


@dataclass(frozen=True)
class Query:
    """A statement on its way from client text to engine SQL."""

    text: str
    ast: exp.Expression | None = None
    products: tuple[Product, ...] = ()
    parameter_count: int = 0
    sql: str | None = None
    notes: tuple[str, ...] = field(default=())

    def evolve(self, **changes: object) -> Query:
        """A copy with ``changes`` applied (steps never mutate their input)."""
        return replace(self, **changes)

    @property
    def product_keys(self) -> tuple[str, ...]:
        return tuple(sorted({p.key for p in self.products}))
