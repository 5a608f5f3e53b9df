"""Typed policy rules, and how a rule's object pattern matches a product or column."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlglot import exp


class Action(StrEnum):
    READ = "read"
    MASK = "mask"
    FILTER = "filter"


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class Rule:
    """One ``p`` line, validated, with where it came from."""

    subject: str
    object: str
    action: Action
    effect: Effect
    argument: str
    path: Path
    line: int
    scope: str  # "global" or the owning domain

    @property
    def origin(self) -> str:
        """Where the rule stands, relative to the mesh dir: ``policies/global.csv:12``."""
        return f"{self.path.parent.name}/{self.path.name}:{self.line}"

    def as_casbin(self) -> list[str]:
        return [self.subject, self.object, self.action.value, self.effect.value, self.argument]


@dataclass(frozen=True)
class RoleLink:
    """One ``g`` line: ``member`` holds ``role``."""

    member: str
    role: str
    origin: str


@dataclass(frozen=True)
class CompiledMask:
    """A mask ready to apply: builds the masked expression of a column."""

    spec: str
    strength: int
    build: Callable[[exp.Expr, exp.DataType], exp.Expr]
    #: the same mask in Spark SQL, value for value; None when there is no exact equivalent
    #: (a custom ``sql:`` mask). It raises PolicyExpressionError for a column type whose
    #: masked value Spark cannot reproduce byte for byte.
    build_spark: Callable[[exp.Expr, exp.DataType], exp.Expr] | None = None


def object_matcher(column_tags: Mapping[str, frozenset[str]]) -> Callable[[str, str], bool]:
    """``objectMatch(request, pattern)`` for Casbin and for rule lookups alike.

    ``column_tags`` maps ``domain.product.column`` to that column's contract tags.
    """

    def object_match(request: str, pattern: str) -> bool:
        if pattern == "*" or pattern == request:
            return True
        if pattern.startswith("tag:"):
            return pattern[4:] in column_tags.get(request, ())
        if pattern.endswith(".*"):
            return request.startswith(pattern[:-1])
        return request.startswith(pattern + ".")

    return object_match


@dataclass(frozen=True)
class ColumnShape:
    """What policies need to know of a column: its DuckDB type and contract tags."""

    name: str
    duck_type: str
    tags: frozenset[str]


@dataclass(frozen=True)
class ProductShape:
    """What policies need to know of a product."""

    domain: str
    name: str
    columns: tuple[ColumnShape, ...]

    @property
    def key(self) -> str:
        return f"{self.domain}.{self.name}"

    def column(self, name: str) -> ColumnShape | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)
