"""Rows of a product that meet a row filter, counted on the engine and kept per snapshot
and data version."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import duckdb
from sqlglot import exp

from gateway.catalog.catalog import Catalog, Product
from gateway.engine.errors import engine_failure
from gateway.errors import QueryFailed
from gateway.memo import WeakSlot

_ENTRIES = 1024


class VisibleRows:
    """``count(catalog, product, row_filter)``: how many rows of ``product`` meet
    ``row_filter`` (what the user it applies to may see), counted once per catalog
    snapshot, filter and data version; thread-safe, bounded."""

    def __init__(self) -> None:
        self._counts: OrderedDict[tuple[int, str, str, Hashable], int] = OrderedDict()
        self._catalog = WeakSlot()
        self._lock = threading.Lock()

    def count(
        self,
        catalog: Catalog,
        product: Product,
        row_filter: exp.Expr,
        timeout: float | None,
        version: Hashable = None,
    ) -> int:
        """``version``: the product's data version (its files'), None when it has none."""
        key = (id(catalog), product.key, row_filter.sql("duckdb"), version)
        with self._lock:
            if not self._catalog.holds(catalog):
                self._counts.clear()
                self._catalog.set(catalog)
            known = self._counts.get(key)
        if known is not None:
            return known
        engine = catalog.engine
        try:
            counted = engine.row_count(product.domain, product.name, row_filter, timeout)
        except duckdb.InterruptException as exc:
            raise QueryFailed(
                "planning the query exceeded its time limit while estimating its cost"
            ) from exc
        except duckdb.Error as exc:
            raise engine_failure(engine, exc, (product.key,)) from exc
        with self._lock:
            self._counts[key] = counted
            while len(self._counts) > _ENTRIES:
                self._counts.popitem(last=False)
        return counted
