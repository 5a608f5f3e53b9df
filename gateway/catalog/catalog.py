"""The catalog: every servable product of a mesh, as an immutable, reloadable snapshot.

``load_catalog`` reads every contract, binds each product to its source in a fresh
engine (checking the contract against the real data) and keeps going past broken
contracts: their problems are recorded and every other product is served.
``CatalogHolder`` hands out the current snapshot to concurrent requests and swaps in a
new one when contract files change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import duckdb
import pyarrow as pa
import structlog

from connectors.base import Connector
from connectors.file_versions import FileVersion, files_version, total_bytes
from connectors.registry import connector_for
from gateway.catalog.contracts import (
    ColumnContract,
    ProductContract,
    find_contracts,
    read_contract,
)
from gateway.config import EngineSettings
from gateway.engine.acceleration import wants_acceleration
from gateway.engine.database import Engine
from gateway.engine.watchdog import Watchdog
from gateway.errors import ContractError
from policies.rules import ColumnShape, ProductShape

log = structlog.get_logger("meshgate.catalog")


@dataclass(frozen=True)
class Product:
    """A product that passed validation and can be queried."""

    contract: ProductContract
    schema: pa.Schema
    column_types: dict[str, str]

    @property
    def key(self) -> str:
        return self.contract.key

    @property
    def domain(self) -> str:
        return self.contract.domain

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def columns(self) -> tuple[ColumnContract, ...]:
        return self.contract.columns

    def restricted_to(
        self, column_names: list[str], schema: pa.Schema, column_types: Mapping[str, str]
    ) -> Product:
        """This product as one user sees it: only ``column_names``, with ``schema`` and the
        DuckDB ``column_types`` they get (a mask may change a type)."""
        keep = set(column_names)
        contract = replace(self.contract, columns=tuple(c for c in self.columns if c.name in keep))
        return Product(contract, schema, {k: v for k, v in column_types.items() if k in keep})


@dataclass(frozen=True)
class ContractProblem:
    """A contract that could not be served, and why."""

    path: Path
    message: str


class Catalog:
    """An immutable snapshot of the mesh's products, with the engine that serves them."""

    def __init__(
        self,
        mesh_dir: Path,
        products: dict[str, Product],
        problems: tuple[ContractProblem, ...],
        engine: Engine,
        signature: FileVersion,
    ) -> None:
        self.mesh_dir = mesh_dir
        self._products = products
        self.problems = problems
        self.engine = engine
        self.signature = signature

    def product(self, domain: str, name: str) -> Product | None:
        return self._products.get(f"{domain.lower()}.{name.lower()}")

    def products_named(self, name: str) -> list[Product]:
        return [p for p in self._products.values() if p.name == name.lower()]

    def __iter__(self) -> Iterator[Product]:
        return iter(sorted(self._products.values(), key=lambda p: p.key))

    def __len__(self) -> int:
        return len(self._products)

    @cached_property
    def shapes(self) -> dict[str, ProductShape]:
        """The products as policies see them (names, DuckDB types, tags)."""
        return {
            p.key: ProductShape(
                p.domain,
                p.name,
                tuple(
                    ColumnShape(c.name, p.column_types[c.name], frozenset(c.tags))
                    for c in p.columns
                ),
            )
            for p in self._products.values()
        }

    def contracts_by_file(self) -> dict[Path, list[ProductContract]]:
        """The contracts of the products served, grouped by contract file."""
        grouped: dict[Path, list[ProductContract]] = {}
        for product in self._products.values():
            grouped.setdefault(product.contract.contract_path, []).append(product.contract)
        return grouped

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted({p.domain for p in self._products.values()}))


def contracts_signature(mesh_dir: Path, domains: frozenset[str] | None = None) -> FileVersion:
    """The version of the contract files on disk."""
    return files_version(find_contracts(mesh_dir, domains))


def load_catalog(
    mesh_dir: Path,
    settings: EngineSettings,
    domains: frozenset[str] | None = None,
    last_good: Mapping[Path, list[ProductContract]] | None = None,
    partitions: int = 1,
    watchdog: Watchdog | None = None,
) -> Catalog:
    """Read, validate and bind every contract of ``mesh_dir`` (of ``domains``, when given,
    as a domain node does) into a new engine.

    ``last_good`` holds the contracts of a previous load by file: a file that has turned
    invalid keeps serving its last good version (the error is still reported).
    ``partitions > 1`` also binds that many hidden partition views per splittable product.
    ``watchdog`` becomes the engine's (see ``Engine``).
    """
    signature = contracts_signature(mesh_dir, domains)
    engine = Engine(settings, watchdog)
    products: dict[str, Product] = {}
    problems: list[ContractProblem] = []
    for path in find_contracts(mesh_dir, domains):
        try:
            contracts = read_contract(path)
        except ContractError as exc:
            problems.append(ContractProblem(path, str(exc)))
            contracts = list((last_good or {}).get(path, []))
        for contract in contracts:
            if contract.key in products:
                problems.append(
                    ContractProblem(
                        path,
                        (
                            f"{path}: field `{contract.schema_field}.name`: product {contract.key} is "
                            f"already published by {products[contract.key].contract.contract_path}; "
                            "rename one of them"
                        ),
                    )
                )
                continue
            try:
                connector = connector_for(contract.source)
                schema, column_types = engine.bind(
                    contract, connector, partitions, _accelerates(contract, connector, settings)
                )
            except ContractError as exc:  # a ConnectorError too: the source cannot be bound
                problems.append(ContractProblem(path, str(exc)))
                previous = [c for c in (last_good or {}).get(path, []) if c.key == contract.key]
                if not previous or previous[0] == contract:
                    continue
                try:  # the edit contradicts the data: the last good version still fits it
                    connector = connector_for(previous[0].source)
                    schema, column_types = engine.bind(
                        previous[0],
                        connector,
                        partitions,
                        _accelerates(previous[0], connector, settings),
                    )
                    contract = previous[0]
                except (ContractError, duckdb.Error):
                    continue
            except duckdb.CatalogException as exc:  # the table is not in the database file
                problems.append(
                    ContractProblem(
                        path,
                        (
                            f"{path}: field `{contract.schema_field}.physicalName` (product "
                            f"{contract.key}): table {contract.source.physical_name!r} not found in "
                            f"{contract.source.server.path} ({_first_line(exc)}); fix the table name"
                        ),
                    )
                )
                continue
            except duckdb.Error as exc:  # the source itself is unreadable (corrupt file, ...)
                problems.append(
                    ContractProblem(
                        path,
                        (
                            f"{path}: field `{contract.source.field('path')}` (product {contract.key}): "
                            f"the data cannot be read ({type(exc).__name__}: {_first_line(exc)}); "
                            "fix the data: republish the files or fix the path"
                        ),
                    )
                )
                continue
            products[contract.key] = Product(contract, schema, column_types)
    engine.lock()
    for problem in problems:
        log.warning("contract_rejected", path=str(problem.path), error=problem.message)
    return Catalog(mesh_dir, products, tuple(problems), engine, signature)


def _accelerates(contract: ProductContract, connector: Connector, settings: EngineSettings) -> bool:
    """Whether ``contract``'s product is held in memory (``gateway.engine.acceleration``)."""
    if contract.accelerate is None and settings.accelerate_below_bytes <= 0:
        return False  # no need to look at the files
    size = total_bytes(files_version(connector.data_paths))
    return wants_acceleration(contract.accelerate, size, settings.accelerate_below_bytes)


def _changed_data(engine: Engine) -> list[str]:
    """The accelerated products whose files changed since their copy was loaded (or since
    loading it failed), sorted."""
    return sorted(
        [name for name, copy in engine.accelerated.items() if copy.stale()]
        + [
            name
            for name, (paths, signature) in engine.unaccelerated.items()
            if files_version(paths) != signature
        ]
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class CatalogHolder:
    """Thread-safe access to the current catalog; reloads when contracts change."""

    def __init__(
        self,
        mesh_dir: Path,
        settings: EngineSettings,
        domains: frozenset[str] | None = None,
        partitions: int = 1,
        watchdog: Watchdog | None = None,
    ) -> None:
        """``watchdog``: the one every catalog's engine gets (a new one by default)."""
        self._mesh_dir = mesh_dir
        self._settings = settings
        self._domains = domains
        self._partitions = partitions
        self.watchdog = watchdog if watchdog is not None else Watchdog()
        self._lock = threading.Lock()
        self._current = load_catalog(
            mesh_dir, settings, domains, partitions=partitions, watchdog=self.watchdog
        )

    @property
    def current(self) -> Catalog:
        return self._current

    def reload_if_changed(self) -> bool:
        """Load a new snapshot when contract files changed, or the files of an
        accelerated product (its copy is refreshed); True when it swapped. Queries read
        the current snapshot meanwhile: a refreshed copy is served only once complete."""
        with self._lock:
            current = self._current
            contracts_changed = (
                contracts_signature(self._mesh_dir, self._domains) != current.signature
            )
            refreshed = _changed_data(current.engine)
            if not contracts_changed and not refreshed:
                return False
            started = time.perf_counter()
            log.info("catalog_reloading", contracts_changed=contracts_changed, refreshed=refreshed)
            fresh = load_catalog(
                self._mesh_dir,
                self._settings,
                self._domains,
                self._current.contracts_by_file(),
                partitions=self._partitions,
                watchdog=self.watchdog,
            )
            self._current = fresh
            log.info(
                "catalog_reloaded",
                products=len(fresh),
                problems=len(fresh.problems),
                seconds=round(time.perf_counter() - started, 3),
            )
            return True
