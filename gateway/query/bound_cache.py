"""What binding a governed statement told, kept for the next time it is bound alike.

Binding a statement in DuckDB for its result schema and EXPLAINing it for its estimated
cost (admission, the heavy lane, Spark routing) takes about a millisecond: too much to
pay on every execution of a prepared statement, or every prepare of a one-off statement
a dashboard sends again. ``BoundCache`` keeps such results by (plan-cache key, typed
parameter values) for one catalog and policy version at a time, each entry valid only
while the files of the products it read are unchanged (path, size, mtime, inode), so a
cached estimate is always the one EXPLAIN would give now. A statement reading a product
whose files cannot be versioned is never cached. Thread-safe, an LRU bounded in entries
and in the bytes of their keys (a key holds its statement's text).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from connectors.file_versions import FileVersion, files_version
from connectors.registry import connector_for
from gateway.catalog.catalog import Catalog
from gateway.errors import MeshgateError
from gateway.memo import WeakSlot, WeightedLRU
from gateway.query.plan_cache import MAX_ENTRY_BYTES

DEFAULT_CAPACITY = 4096
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_Value = TypeVar("_Value")
Versions = tuple[FileVersion, ...]


class BoundCache(Generic[_Value]):
    """A bounded LRU of values per key, for one (catalog, policy version) at a time, each
    valid for the data versions it was computed under."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._entries: WeightedLRU[Hashable, tuple[Versions, _Value]] = WeightedLRU(
            max_bytes, capacity
        )
        self._catalog = WeakSlot()
        self._policy_version: int | None = None
        self._paths: dict[str, tuple[Path, ...] | None] = {}
        self._lock = threading.Lock()

    def versions(self, catalog: Catalog, products: Sequence[str]) -> Versions | None:
        """The data versions of ``products`` now, or None: one cannot be versioned."""
        versions = []
        for key in products:
            paths = self._paths_of(catalog, key)
            if paths is None:
                return None
            versions.append(files_version(paths))
        return tuple(versions)

    def _paths_of(self, catalog: Catalog, key: str) -> tuple[Path, ...] | None:
        with self._lock:
            if self._catalog.holds(catalog) and key in self._paths:
                return self._paths[key]
        paths = _data_paths(catalog, key)
        with self._lock:
            if self._catalog.holds(catalog):
                self._paths[key] = paths
        return paths

    def get(
        self, catalog: object, policy_version: int, key: Hashable, versions: Versions
    ) -> _Value | None:
        """The value of ``key`` computed under this catalog, policy and data, if any."""
        with self._lock:
            if not self._catalog.holds(catalog) or policy_version != self._policy_version:
                return None
            entry = self._entries.get(key)
            if entry is None or entry[0] != versions:
                return None
            return entry[1]

    def put(
        self,
        catalog: object,
        policy_version: int,
        key: Hashable,
        versions: Versions,
        value: _Value,
        key_bytes: int,
        value_bytes: int = 0,
    ) -> None:
        """Keep ``value`` unless its key (``key_bytes`` of text: a statement and its
        parameters) is larger than a plan the plan cache would keep; the entry weighs
        both (``value_bytes``: a schema's)."""
        if key_bytes > MAX_ENTRY_BYTES:
            return
        weight = key_bytes + value_bytes
        with self._lock:
            if not self._catalog.holds(catalog) or policy_version != self._policy_version:
                self._entries.clear()
                self._paths.clear()
                self._catalog.set(catalog)
                self._policy_version = policy_version
            self._entries.put(key, (versions, value), weight)

    def __len__(self) -> int:
        return len(self._entries)


def parameters_key(parameters: Sequence[object]) -> str:
    """The bound values, typed and as written (1, 1.0, True and '1' differ; so do
    Decimal('1.0') and Decimal('1.00'), whose types differ)."""
    return repr(tuple((type(value).__name__, value) for value in parameters))


def _data_paths(catalog: Catalog, key: str) -> tuple[Path, ...] | None:
    """The files ``key``'s data lives in, or None (an unknown product, a source without
    files)."""
    product = catalog.product(*key.split(".", 1))
    if product is None:
        return None
    try:
        paths = connector_for(product.contract.source).data_paths
    except MeshgateError:
        return None
    return tuple(paths) if paths else None
