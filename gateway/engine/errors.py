"""Turn DuckDB exceptions into messages that are safe to send to a client.

Conversion and range errors quote data values (``Could not convert string 'x'``), which
may come from rows the caller may not see, so they become a generic message; errors
about names (binder, catalog, parser) keep their first line only, without DuckDB's
echo of the executed SQL. The full original stays in the server log.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import duckdb
import structlog

from gateway.config import EngineSettings
from gateway.engine.failures import Diagnosis, Failure, diagnose, engine_type
from gateway.errors import QueryFailed, first_line
from gateway.planning.recursion import is_recursion_limit_message
from policies.safe_sql import COLLECTOR_LIMIT_MESSAGES

if TYPE_CHECKING:
    from gateway.engine.database import Engine

log = structlog.get_logger("meshgate.engine")

_REDUCE = "; add filters, aggregate before joining, or select fewer columns"

_NAME_ERRORS = (duckdb.BinderException, duckdb.CatalogException, duckdb.ParserException)
_VALUE_ERRORS = (
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
    duckdb.TypeMismatchException,
    duckdb.ConstraintException,
)


def engine_failure(engine: Engine, exc: BaseException, products: tuple[str, ...]) -> QueryFailed:
    """The client's error for ``exc``, raised by ``engine`` running a query of ``products``.
    Only a data failure (``Failure.DATA``) marks products unhealthy: those whose files the
    error names, or all of them when it names none."""
    diagnosis = engine.diagnose(exc, products)
    if diagnosis.kind is Failure.DATA:
        engine.mark_health(
            diagnosis.products,
            f"unhealthy: {engine_type(exc).__name__} at {time.strftime('%H:%M:%S')}",
        )
    return safe_engine_error(exc, products, diagnosis, engine.settings)


def safe_engine_error(
    exc: BaseException,
    products: tuple[str, ...] = (),
    diagnosis: Diagnosis | None = None,
    limits: EngineSettings | None = None,
) -> QueryFailed:
    """A QueryFailed whose message never quotes data values; ``limits``: the engine's
    settings, to name the memory and spill limits."""
    diagnosis = diagnosis or diagnose(exc, {})
    kind = engine_type(exc)
    log.warning(
        "engine_error",
        error_type=kind.__name__,
        failure=diagnosis.kind.value,
        error=str(exc),
        products=products,
    )
    where = f" (products: {', '.join(products)})" if products else ""
    guard = _guard_message(exc)
    if guard is not None:
        return QueryFailed(guard)
    if diagnosis.kind is Failure.DATA:
        return QueryFailed(
            f"the data of {', '.join(diagnosis.products or products) or 'a product'} could not "
            "be read (files missing, truncated or corrupt); the product is marked unhealthy "
            "and its owners see the details in the server log"
        )
    if diagnosis.kind is Failure.MEMORY:
        limit = f" of {limits.memory_limit}" if limits else ""
        return QueryFailed(
            f"the query needs more memory than the engine's limit{limit}{where}{_REDUCE}"
        )
    if diagnosis.kind is Failure.SPILL:
        limit = f" of {limits.max_spill_size}" if limits else ""
        return QueryFailed(
            f"the query needs more memory than the engine has and more temporary disk than its "
            f"spill limit{limit} (max_spill_size){where}{_REDUCE}"
        )
    if diagnosis.kind is Failure.INTERRUPTED:
        return QueryFailed("the query was cancelled")
    if issubclass(kind, _NAME_ERRORS):
        return QueryFailed(_first_line(exc) + where)
    if issubclass(kind, _VALUE_ERRORS):
        return QueryFailed(
            f"{kind.__name__.removesuffix('Exception')} error while evaluating the query"
            f"{where}; the offending value is not shown. Check casts and function arguments"
        )
    return QueryFailed(f"the query failed ({kind.__name__}){where}")


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
