"""What moving a whole governed product would cost, for the ``federated_query`` log line;
and the gateway's row estimates of fragments, kept a minute (``EstimateCache``).

An estimate, measured on the product's node: its governed rows counted, times the Arrow
widths of the governed columns, plus the bytes of its variable-width values. It costs the
node a scan of the product, so it runs in the background, once at a time per product,
and is kept a minute (``SizeCache``): a query never waits for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pyarrow as pa
import structlog
from sqlglot import exp, parse_one

from gateway.errors import first_line
from gateway.memo import held_bytes
from gateway.mesh.fragments import Fragment
from gateway.security.principal import Principal

if TYPE_CHECKING:
    from gateway.mesh.federation import NodeDirectory

log = structlog.get_logger("meshgate.federation")

_SIZE_CACHE_SECONDS = 60.0
_SIZE_CACHE_ENTRIES = 256
_SIZE_MEASURING = 4  # whole-product size estimates measured at once, at most
_ESTIMATE_SECONDS = 60.0
_ESTIMATE_ENTRIES = 1024
_ESTIMATE_SQL_BYTES = 64 * 1024  # a longer fragment is estimated each time (memory)


class SizeCache:
    """Estimated sizes of whole governed products, by (domain, governed SQL), for a minute;
    and which estimates are being measured (so that each is measured once at a time)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sizes: dict[tuple[str, str], tuple[float, int]] = {}
        self._measuring: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> int | None:
        cached = self._sizes.get(key)
        return (
            cached[1]
            if cached is not None and self._clock() - cached[0] < _SIZE_CACHE_SECONDS
            else None
        )

    def put(self, key: tuple[str, str], size: int) -> None:
        if len(self._sizes) >= _SIZE_CACHE_ENTRIES:
            self._sizes.clear()
        self._sizes[key] = (self._clock(), size)

    def claim(self, key: tuple[str, str]) -> bool:
        """True (and the caller measures ``key``) unless it is known or being measured."""
        with self._lock:
            if (
                self.get(key) is not None
                or key in self._measuring
                or len(self._measuring) >= _SIZE_MEASURING
            ):
                return False
            self._measuring.add(key)
            return True

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._measuring.discard(key)


class EstimateCache:
    """DuckDB's row estimate of each fragment SQL, kept ``_ESTIMATE_SECONDS``: a repeated
    query's fragments are not planned again on the gateway before they start. An estimate
    only steers which side is fetched first and how DuckDB plans around a stream, never
    which rows a query returns, so one a little stale after the data changed is harmless."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rows: dict[str, tuple[float, int | None]] = {}
        self._lock = threading.Lock()

    def cached(self, rows_of: Callable[[str], int | None]) -> Callable[[str], int | None]:
        """``rows_of``, answered from the cache when it knows the SQL."""

        def rows(sql: str) -> int | None:
            if held_bytes(sql) > _ESTIMATE_SQL_BYTES:
                return rows_of(sql)
            with self._lock:
                kept = self._rows.get(sql)
            if kept is not None and self._clock() - kept[0] < _ESTIMATE_SECONDS:
                return kept[1]
            estimate = rows_of(sql)
            with self._lock:
                if len(self._rows) >= _ESTIMATE_ENTRIES:
                    self._rows.clear()
                self._rows[sql] = (self._clock(), estimate)
            return estimate

        return rows


def measure_in_background(
    nodes: NodeDirectory,
    product: Fragment,
    principal: Principal,
    decisions: Mapping[str, str],
    schema_of: Callable[[str], pa.Schema],
) -> None:
    """Measure ``product``'s whole size on its node in a background thread (once at a time
    per product; the result lands in ``nodes.sizes``)."""
    key = (product.domain, product.sql)
    if not nodes.sizes.claim(key):
        return

    def measure() -> None:
        try:
            whole_size(nodes, product, principal, decisions, schema_of)
        finally:
            nodes.sizes.release(key)

    threading.Thread(target=measure, name="whole-product-size", daemon=True).start()


def whole_size(
    nodes: NodeDirectory,
    product: Fragment,
    principal: Principal,
    decisions: Mapping[str, str],
    schema_of: Callable[[str], pa.Schema],
) -> int | None:
    """Estimated Arrow bytes of one whole governed product (cached a minute); None when
    the node could not tell (the query itself is not affected)."""
    key = (product.domain, product.sql)
    cached = nodes.sizes.get(key)
    if cached is not None:
        return cached
    try:
        schema = schema_of(product.sql)
        query = Fragment(
            product.name, product.domain, _size_sql(product.sql, schema), product.products, "size"
        )
        counts = nodes.fetch_table(query, principal, decisions).to_pylist()[0]
    except Exception as exc:  # noqa: BLE001 - an estimate for the log must never fail a query
        log.warning("whole_product_size_unknown", domain=product.domain, error=first_line(exc))
        return None
    rows = int(counts["rows"])
    fixed = sum(_fixed_width(f.type) for f in schema)
    size = rows * fixed + -(-rows // 8) * len(schema) + int(counts["varbytes"] or 0)
    nodes.sizes.put(key, size)
    return size


def _size_sql(sql: str, schema: pa.Schema) -> str:
    """Rows of a governed product and the bytes of its variable-width values (strings,
    blobs; any other non-fixed type by its text length)."""
    varying = [
        _value_bytes(f)
        for f in schema
        if _fixed_width(f.type) == 0 and not pa.types.is_boolean(f.type)
    ]
    sums = [exp.Sum(this=exp.Add(this=v, expression=exp.Literal.number(4))) for v in varying]
    total: exp.Expr = sums[0] if sums else exp.Literal.number(0)  # all fixed-width: none
    for term in sums[1:]:
        total = exp.Add(this=total, expression=term)
    select = exp.select(
        exp.alias_(exp.Count(this=exp.Star(), big_int=True), "rows", quoted=True),
        exp.alias_(total, "varbytes", quoted=True),
    ).from_(
        exp.Subquery(
            this=parse_one(sql, dialect="duckdb"), alias=exp.TableAlias(this=exp.to_identifier("p"))
        )
    )
    return select.sql("duckdb")


def _fixed_width(data_type: pa.DataType) -> int:
    try:
        return max(0, data_type.bit_width // 8)
    except ValueError:
        return 0


def _value_bytes(field: pa.Field) -> exp.Expr:
    """Bytes of one value of a variable-width column: a string's or blob's own length,
    any other type's text length (an approximation)."""
    column = exp.column(field.name, quoted=True)
    if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
        return exp.func("octet_length", column)
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        return exp.func("strlen", column)
    return exp.func("strlen", exp.cast(column, "VARCHAR"))
