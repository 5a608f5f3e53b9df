"""Turn DuckDB exceptions into messages that are safe to send to a client.

Conversion and range errors quote data values (``Could not convert string 'x'``), which
may come from rows the caller may not see, so they become a generic message; errors
about names (binder, catalog, parser) keep their first line only, without DuckDB's
echo of the executed SQL. The full original stays in the server log.
"""

from __future__ import annotations

import duckdb
import structlog

from gateway.errors import QueryFailed, first_line
from gateway.planning.recursion import is_recursion_limit_message
from policies.safe_sql import COLLECTOR_LIMIT_MESSAGES

log = structlog.get_logger("meshgate.engine")

_NAME_ERRORS = (duckdb.BinderException, duckdb.CatalogException, duckdb.ParserException)
_VALUE_ERRORS = (
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
    duckdb.TypeMismatchException,
    duckdb.ConstraintException,
)


def is_data_error(exc: BaseException) -> bool:
    """True when DuckDB failed reading a product's files (gone, truncated, corrupt)."""
    text = str(exc).lower()
    if isinstance(exc, (duckdb.IOException, duckdb.PermissionException)):
        return True
    if isinstance(exc, (duckdb.InvalidInputException, duckdb.Error)) and not isinstance(
        exc, (duckdb.BinderException, duckdb.ParserException, duckdb.ConversionException)
    ):
        return any(
            word in text
            for word in (
                "parquet",
                "magic bytes",
                "no files found",
                "file",
                "database",
                "checksum",
                "block",
            )
        )
    return False


def safe_engine_error(exc: BaseException, products: tuple[str, ...] = ()) -> QueryFailed:
    """A QueryFailed whose message never quotes data values."""
    log.warning("engine_error", error_type=type(exc).__name__, error=str(exc), products=products)
    where = f" (products: {', '.join(products)})" if products else ""
    guard = _guard_message(exc)
    if guard is not None:
        return QueryFailed(guard)
    if is_data_error(exc):
        return QueryFailed(
            f"the data of {', '.join(products) or 'a product'} could not be read (files missing, "
            "truncated or corrupt); the product is marked unhealthy and its owners see the "
            "details in the server log"
        )
    if isinstance(exc, _NAME_ERRORS):
        return QueryFailed(_first_line(exc) + where)
    if isinstance(exc, duckdb.InterruptException):
        return QueryFailed("query cancelled")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return QueryFailed(
            f"query exceeded the engine memory limit{where}; add filters or aggregate"
        )
    if isinstance(exc, _VALUE_ERRORS):
        return QueryFailed(
            f"{type(exc).__name__.removesuffix('Exception')} error while evaluating the query"
            f"{where}; the offending value is not shown. Check casts and function arguments"
        )
    return QueryFailed(f"the query failed ({type(exc).__name__}){where}")


def _guard_message(exc: BaseException) -> str | None:
    """The message of a guard the gateway put into the SQL (``gateway.planning.bounds`` and
    ``.recursion``), or None: only those exact, constant texts are passed on (no user text
    reaches ``error()``)."""
    if not isinstance(exc, duckdb.InvalidInputException):
        return None
    text = str(exc).strip().removeprefix("Invalid Input Error: ")
    if text in COLLECTOR_LIMIT_MESSAGES or is_recursion_limit_message(text):
        return text
    return None


def _first_line(exc: BaseException) -> str:
    return first_line(exc)  # DuckDB's "LINE 1: ..." context is on a later line
