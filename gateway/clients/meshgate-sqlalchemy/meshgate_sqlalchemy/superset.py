"""Apache Superset engine spec for ``meshgate://`` databases (Superset loads it through the
``superset.db_engine_specs`` entry point; this module imports Superset and is never
imported elsewhere).

Time grains are DuckDB's ``date_trunc``; the gateway's refusals reach users as its own
sentence (``unknown product sales.orders (or you may not read it)``), instead of a driver's
stack of prefixes, typed for Superset (``custom_errors``): a product or schema the user may
not read as a missing table or schema, the gateway's syntax errors, its row limit as a
result too large, its time limit as a backend timeout, a refused login, an unreachable host.
"""

from __future__ import annotations

import re
from datetime import datetime
from re import Pattern
from typing import Any, ClassVar

import adbc_driver_manager
from flask_babel import gettext as __
from sqlalchemy import types
from superset.constants import TimeGrain
from superset.db_engine_specs.base import BaseEngineSpec
from superset.db_engine_specs.exceptions import (
    SupersetDBAPIConnectionError,
    SupersetDBAPIDatabaseError,
    SupersetDBAPIOperationalError,
    SupersetDBAPIProgrammingError,
)
from superset.errors import SupersetErrorType

#: the gateway's message inside an ADBC error text
_GATEWAY_MESSAGE = re.compile(
    r"\[FlightSQL\]\s*(?P<message>.*?)(?:\.\s*Detail:.*)?(?:\s*\(\w+; \w+\))?\s*$", re.DOTALL
)

#: a product the user may not read, or that does not exist (the gateway says both alike)
_UNKNOWN_PRODUCT = re.compile(r"unknown product (?P<product>[\w.]+) \(or you may not read it\)")
#: an unqualified name without a default schema: the gateway's sentence suggests the domain
_UNQUALIFIED = re.compile(r"unknown product '[^']*': address products as")
_UNKNOWN_SCHEMA = re.compile(r"unknown schema (?P<schema>[\w.]+) \(or you may not read any")
_SYNTAX = re.compile(r"SQL syntax error: ")
_TOO_LARGE = re.compile(r"the result exceeds the limit of [\d,]+ rows")
_UNKNOWN_COLUMN = re.compile(r'Referenced column "(?P<column>[^"]+)" not found')
_READ_ONLY = re.compile(r"the gateway is read-only|only read-only queries are allowed")
_BAD_LOGIN = re.compile(r"invalid username or password|token expired|UNAUTHENTICATED")
_UNREACHABLE = re.compile(r"UNAVAILABLE|connection refused|failed to connect", re.IGNORECASE)
_TIME_LIMIT = re.compile(
    r"exceeded (?:the|its) time limit|timed out|DEADLINE_EXCEEDED", re.IGNORECASE
)


def gateway_message(text: str) -> str:
    """The gateway's own sentence out of an ADBC error text (the text when none is found)."""
    found = _GATEWAY_MESSAGE.search(text)
    return found.group("message").strip() if found else text.strip()


class MeshgateEngineSpec(BaseEngineSpec):
    """Meshgate: governed Arrow Flight SQL over DuckDB."""

    engine = "meshgate"
    engine_name = "Meshgate"
    default_driver = "adbc"
    sqlalchemy_uri_placeholder = "meshgate://user:password@host:8815"

    # Read-only, one statement at a time, no uploads, no schema switching per query.
    supports_file_upload = False
    supports_dynamic_schema = False
    supports_catalog = False
    allows_sql_comments = True

    _time_grain_expressions: ClassVar[dict[str | None, str]] = {
        None: "{col}",
        TimeGrain.SECOND: "DATE_TRUNC('second', {col})",
        TimeGrain.MINUTE: "DATE_TRUNC('minute', {col})",
        TimeGrain.HOUR: "DATE_TRUNC('hour', {col})",
        TimeGrain.DAY: "DATE_TRUNC('day', {col})",
        TimeGrain.WEEK: "DATE_TRUNC('week', {col})",
        TimeGrain.MONTH: "DATE_TRUNC('month', {col})",
        TimeGrain.QUARTER: "DATE_TRUNC('quarter', {col})",
        TimeGrain.YEAR: "DATE_TRUNC('year', {col})",
    }

    custom_errors: ClassVar[dict[Pattern[str], tuple[str, SupersetErrorType, dict[str, Any]]]] = {
        _UNKNOWN_PRODUCT: (
            __("unknown product %(product)s (or you may not read it)"),
            SupersetErrorType.TABLE_DOES_NOT_EXIST_ERROR,
            {},
        ),
        _UNQUALIFIED: (
            "",  # the gateway's own sentence names the domains to qualify with
            SupersetErrorType.TABLE_DOES_NOT_EXIST_ERROR,
            {},
        ),
        _UNKNOWN_SCHEMA: (
            __("unknown schema %(schema)s (or you may not read any of its products)"),
            SupersetErrorType.SCHEMA_DOES_NOT_EXIST_ERROR,
            {},
        ),
        _SYNTAX: (
            "",  # the gateway's own sentence says where
            SupersetErrorType.SYNTAX_ERROR,
            {},
        ),
        _TOO_LARGE: (
            "",  # the gateway's own sentence names the limit and what to do
            SupersetErrorType.RESULT_TOO_LARGE_ERROR,
            {},
        ),
        _UNKNOWN_COLUMN: (
            __('unknown column "%(column)s" (or you may not read it)'),
            SupersetErrorType.COLUMN_DOES_NOT_EXIST_ERROR,
            {},
        ),
        _READ_ONLY: (
            __("Meshgate is read-only: only queries (SELECT, WITH, ...) are allowed"),
            SupersetErrorType.DML_NOT_ALLOWED_ERROR,
            {},
        ),
        _BAD_LOGIN: (
            __("Meshgate refused the login: check the user and password (or token)"),
            SupersetErrorType.CONNECTION_ACCESS_DENIED_ERROR,
            {},
        ),
        _UNREACHABLE: (
            __("Meshgate cannot be reached: check the host and port"),
            SupersetErrorType.CONNECTION_HOST_DOWN_ERROR,
            {},
        ),
        _TIME_LIMIT: (
            "",  # the gateway's own sentence names the limit
            SupersetErrorType.BACKEND_TIMEOUT_ERROR,
            {},
        ),
    }

    @classmethod
    def epoch_to_dttm(cls) -> str:
        return "to_timestamp({col})"

    @classmethod
    def epoch_ms_to_dttm(cls) -> str:
        return "epoch_ms({col})"

    @classmethod
    def convert_dttm(
        cls, target_type: str, dttm: datetime, db_extra: dict[str, Any] | None = None
    ) -> str | None:
        sqla_type = cls.get_sqla_column_type(target_type)
        if isinstance(sqla_type, types.Date) and not isinstance(sqla_type, types.DateTime):
            return f"CAST('{dttm.date().isoformat()}' AS DATE)"
        if isinstance(sqla_type, types.DateTime):
            timestamp = dttm.isoformat(sep=" ", timespec="microseconds")
            return f"CAST('{timestamp}' AS TIMESTAMP)"
        return None

    @classmethod
    def _extract_error_message(cls, ex: Exception) -> str:
        # SQL Lab hands extract_errors the text of extract_error_message: "meshgate error: ..."
        return gateway_message(str(ex)).removeprefix(f"{cls.engine} error: ")

    @classmethod
    def get_dbapi_exception_mapping(cls) -> dict[type[Exception], type[Exception]]:
        return {
            adbc_driver_manager.ProgrammingError: SupersetDBAPIProgrammingError,
            adbc_driver_manager.OperationalError: SupersetDBAPIOperationalError,
            adbc_driver_manager.DatabaseError: SupersetDBAPIDatabaseError,
            adbc_driver_manager.InterfaceError: SupersetDBAPIConnectionError,
        }

    @classmethod
    def get_dbapi_mapped_exception(cls, exception: Exception) -> Exception:
        mapped = cls.get_dbapi_exception_mapping().get(type(exception))
        if mapped is None:
            return exception
        # the message users read where Superset shows no error type (charts, samples)
        return mapped(cls.extract_errors(exception)[0].message)


def _parse_as_duckdb() -> None:
    """Superset parses SQL with sqlglot in the dialect of the engine's name: Meshgate's SQL
    is DuckDB's."""
    try:
        from sqlglot.dialects.dialect import Dialects
        from superset.sql import parse
    except ImportError:  # a Superset without that table: it parses generically
        return
    dialects = getattr(parse, "SQLGLOT_DIALECTS", None)
    if isinstance(dialects, dict):
        dialects.setdefault(MeshgateEngineSpec.engine, Dialects.DUCKDB)


_parse_as_duckdb()
