"""Clients (ADBC, pyarrow.flight, DuckDB in-process), timing loops and statistics."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.flight as flight

# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict:
    """median / min / max / n of ``values`` (and the values themselves)."""
    values = list(values)
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def with_throughput(entry: dict, payload_bytes: int) -> dict:
    """``entry`` (a ``summary`` of times in ms) with MB/s at its median, and the MB/s range."""
    megabytes = payload_bytes / 1e6
    entry["mb_per_s"] = megabytes / (entry["median"] / 1000)
    entry["mb_per_s_min"] = megabytes / (entry["max"] / 1000)
    entry["mb_per_s_max"] = megabytes / (entry["min"] / 1000)
    return entry


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


def paired_ratio(numerators: list[float], denominators: list[float]) -> float | None:
    """The median of per-repetition ratios of two variants measured side by side
    (``interleaved`` blocks adjacent in time): a burst of noise on the machine hits both
    blocks of a pair, where it would move only one of two medians taken apart."""
    pairs = [n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]
    return statistics.median(pairs) if pairs else None


def geomean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and v > 0]
    if not kept:
        return None
    return math.exp(sum(math.log(v) for v in kept) / len(kept))


def timed(action: Callable[[], object]) -> tuple[float, object]:
    """(milliseconds, result) of one call."""
    started = time.perf_counter()
    result = action()
    return (time.perf_counter() - started) * 1000, result


def interleaved(
    variants: dict[str, Callable[[], object]],
    repetitions: int,
    calls: int = 1,
    warmup: int = 1,
    on_repetition: Callable[[], None] | None = None,
    raw: dict[str, list[float]] | None = None,
    alternate: bool = False,
) -> dict[str, list[float]]:
    """Run every variant in turn (A B C A B C ...), ``warmup`` rounds first (not kept);
    ``alternate``: every other repetition in reverse (A B C C B A ...), so that neither of
    two adjacent variants always runs first (``paired_ratio``).

    Each repetition runs each variant as a block of ``calls`` consecutive calls (a steady
    client), the variants one after the other; the repetition's value for a variant is
    the median of its block (ms). Returns variant -> one value per repetition; ``raw``,
    when given, receives every call's time.
    """
    for _ in range(warmup):
        for action in variants.values():
            action()
    results: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    for repetition in range(repetitions):
        reverse = alternate and repetition % 2 == 1
        for name, action in reversed(order) if reverse else order:
            block = [timed(action)[0] for _ in range(calls)]
            results[name].append(statistics.median(block))
            if raw is not None:
                raw.setdefault(name, []).extend(block)
        if on_repetition is not None:
            on_repetition()
    return results


# --------------------------------------------------------------------------- result comparison


def _normalise(value: object) -> object:
    if isinstance(value, float):
        return float(f"{value:.9g}") if math.isfinite(value) else repr(value)
    if isinstance(value, Decimal):
        return repr(value) if value.is_nan() else value.normalize()
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def canonical_rows(table: pa.Table) -> list[tuple]:
    """The rows of ``table`` as normalised tuples, sorted (order-insensitive comparison)."""
    rows = [tuple(_normalise(v) for v in row.values()) for row in table.to_pylist()]
    return sorted(
        rows,
        key=lambda row: tuple((v is None, str(type(v)), v if v is not None else 0) for v in row),
    )


def _close(a: object, b: object) -> bool:
    if isinstance(a, (float, Decimal)) and isinstance(b, (float, Decimal)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def same_result(left: pa.Table, right: pa.Table) -> tuple[bool, str]:
    """Whether two results hold the same rows (any order, floats to 1e-9); and why not."""
    if left.num_rows != right.num_rows:
        return False, f"row counts differ: {left.num_rows} vs {right.num_rows}"
    if left.num_columns != right.num_columns:
        return False, f"column counts differ: {left.num_columns} vs {right.num_columns}"
    for index, (a, b) in enumerate(zip(canonical_rows(left), canonical_rows(right), strict=True)):
        if len(a) != len(b) or not all(_close(x, y) for x, y in zip(a, b, strict=True)):
            return False, f"sorted row {index} differs: {a!r} vs {b!r}"
    return True, "identical"


# --------------------------------------------------------------------------- clients


class AdbcClient:
    """One ADBC Flight SQL connection and cursor, reused for every query."""

    def __init__(self, uri: str, user: str | None = None, password: str | None = None) -> None:
        import adbc_driver_flightsql.dbapi as flightsql

        kwargs = {"username": user, "password": password} if user else {}
        self.connection = flightsql.connect(uri, db_kwargs=kwargs, autocommit=True)
        self.cursor = self.connection.cursor()

    def query(self, sql: str) -> pa.Table:
        """Execute on the reused cursor: the driver prepares a statement when the text
        differs from the previous one and reuses it otherwise (DB-API semantics)."""
        self.cursor.execute(sql)
        return self.cursor.fetch_arrow_table()

    def query_new_statement(self, sql: str) -> pa.Table:
        """Execute as a one-off statement (a fresh cursor, closed afterwards): the server
        sees CreatePreparedStatement, GetFlightInfo, DoGet, ClosePreparedStatement."""
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql)
            return cursor.fetch_arrow_table()
        finally:
            cursor.close()

    def drain(self, sql: str) -> tuple[int, int]:
        """Stream the result batch by batch without keeping it: (rows, bytes)."""
        self.cursor.execute(sql)
        reader = self.cursor.fetch_record_batch()
        rows = size = 0
        for batch in reader:
            rows += batch.num_rows
            size += batch.nbytes
        return rows, size

    def close(self) -> None:
        for thing in (self.cursor, self.connection):
            # Best effort: a connection whose server is gone may fail to close in any way.
            with contextlib.suppress(Exception):
                thing.close()


class FlightClient:
    """One pyarrow.flight client (bearer token when ``user`` is given), reused."""

    def __init__(self, uri: str, user: str | None = None, password: str | None = None) -> None:
        self.client = flight.FlightClient(uri)
        headers = [self.client.authenticate_basic_token(user, password)] if user else []
        self.options = flight.FlightCallOptions(headers=headers)

    def _reader(self, sql: str) -> flight.FlightStreamReader:
        info = self.client.get_flight_info(
            flight.FlightDescriptor.for_command(sql.encode()), self.options
        )
        return self.client.do_get(info.endpoints[0].ticket, self.options)

    def query(self, sql: str) -> pa.Table:
        return self._reader(sql).read_all()

    def query_one_call(self, sql: str) -> pa.Table:
        """One DoGet whose ticket is the SQL text (a single round trip; no FlightInfo)."""
        return self.client.do_get(flight.Ticket(sql.encode()), self.options).read_all()

    def drain(self, sql: str) -> tuple[int, int]:
        rows = size = 0
        for chunk in self._reader(sql):
            rows += chunk.data.num_rows
            size += chunk.data.nbytes
        return rows, size

    def close(self) -> None:
        self.client.close()


def duck_query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """DuckDB in-process to an Arrow table, the relation API (the fast path)."""
    return con.sql(sql).to_arrow_table()


def duck_drain(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int) -> tuple[int, int]:
    reader = con.sql(sql).to_arrow_reader(batch_rows)
    rows = size = 0
    for batch in reader:
        rows += batch.num_rows
        size += batch.nbytes
    return rows, size
