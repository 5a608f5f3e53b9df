"""The small interface every product source implements.

A connector knows where one product's data lives and how DuckDB reads it. It knows
nothing of users or policies: the engine asks it for setup statements (run before the
connection is locked) and for the table expression that scans the data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from open_data_contract_standard.model import Server
from sqlglot import exp

from connectors.errors import ConnectorError

#: Given a database file, ATTACH it read-only (once) and return its catalog alias.
AttachDatabase = Callable[[Path], str]

#: Run a one-value query on the engine (before it is locked) and return that value.
QueryValue = Callable[[exp.Query], Any]


@dataclass(frozen=True)
class PartitionScan:
    """One partition of a product: the rows of ``scan`` for which ``where`` holds."""

    scan: exp.Expr
    where: exp.Expr


@dataclass(frozen=True)
class Partitioning:
    """A product's rows divided into disjoint scans that together read every row once.

    ``pieces`` is how many independent units (files, row blocks) there are to divide:
    below 2, splitting a scan only adds round trips.
    """

    scans: tuple[PartitionScan, ...]
    pieces: int


@dataclass(frozen=True)
class SourceSpec:
    """Where a contract says a product's data lives."""

    product: str
    contract_path: Path
    domain_dir: Path
    server: Server
    server_index: int
    physical_name: str
    #: the contract's schema object of the product (``schema[0]``), for error messages
    schema_field: str = "schema[0]"

    def field(self, name: str) -> str:
        """The contract field path of a server attribute, for error messages."""
        return f"servers[{self.server_index}].{name}"

    def fail(self, field: str, problem: str, fix: str) -> ConnectorError:
        """An error naming the contract file, the field, the problem and the fix."""
        return ConnectorError(
            f"{self.contract_path}: field `{field}` (product {self.product}): {problem}; {fix}"
        )


class Connector(ABC):
    """Binds one product to its source inside a DuckDB database."""

    #: The ODCS ``servers[].type`` this connector serves.
    server_type: ClassVar[str]

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def data_paths(self) -> tuple[Path, ...]:
        """Files or directories DuckDB must be allowed to read for this product."""

    @abstractmethod
    def scan(self, attach: AttachDatabase) -> exp.Expr:
        """The table expression reading the product's rows (a table or a table function)."""

    def partitions(
        self, count: int, attach: AttachDatabase, value: QueryValue
    ) -> Partitioning | None:
        """``count`` disjoint partition scans of the product, or None when the source cannot
        be split. Membership must depend on the data alone (never on when or where it is
        computed): the gateway and every node replica bind the same partitions."""
        return None

    def check_source(self, attach: AttachDatabase, value: QueryValue) -> None:
        """Raise ConnectorError when the source holds code the engine must not run for
        it (``value`` runs a query of one value); nothing to check by default."""
        return None

    def check_available(self) -> None:
        """Raise ConnectorError when the source files are gone."""
        for path in self.data_paths:
            if not path.exists():
                raise self.spec.fail(
                    self.spec.field("path"),
                    f"data not found at {path}",
                    "publish the data or fix the path (relative to the domain folder)",
                )

    def resolve_path(self, raw: str | None) -> Path:
        """The contract's ``path`` made absolute; it must stay inside the domain folder."""
        spec = self.spec
        if not raw:
            raise spec.fail(
                spec.field("path"), "missing", "give the data path relative to the domain folder"
            )
        candidate = Path(raw)
        path = (candidate if candidate.is_absolute() else spec.domain_dir / candidate).resolve()
        if not path.is_relative_to(spec.domain_dir.resolve()):
            raise spec.fail(
                spec.field("path"),
                f"{raw!r} points outside the domain folder {spec.domain_dir}",
                "a domain publishes only data inside its own folder",
            )
        return path
