"""The ``meshgate://`` SQLAlchemy dialect: SQL for DuckDB, sent through the ADBC Flight SQL driver.

Meshgate pushes queries down to DuckDB, whose SQL follows PostgreSQL's; so the dialect
builds on SQLAlchemy's PostgreSQL dialect for compiling (as ``duckdb-engine`` does) and
replaces everything that would ask a PostgreSQL server something (``pg_catalog``
reflection, ``SHOW``, transactions) with Flight SQL metadata through ADBC. Values are
always sent as bound parameters (ADBC's ``qmark``), never rendered into the SQL text.
Works with SQLAlchemy 1.4 and 2.x.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

from sqlalchemy.dialects.postgresql.base import PGDialect, PGIdentifierPreparer
from sqlalchemy.engine import default
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import NoSuchTableError

from meshgate_sqlalchemy import metadata
from meshgate_sqlalchemy.types import sqlalchemy_type
from meshgate_sqlalchemy.url import DB_SCHEMA_OPTION, connect_args, default_schema

try:  # SQLAlchemy 2 may render casts on bound values; Meshgate infers their types
    from sqlalchemy.engine.interfaces import BindTyping
except ImportError:  # SQLAlchemy 1.4 renders none
    BindTyping = None  # type: ignore[assignment,misc]


def _cached(method: Callable[..., Any]) -> Callable[..., Any]:
    """Keep a reflection answer in the inspector's ``info_cache`` (as SQLAlchemy's own
    ``reflection.cache``, whose 1.4 version cannot copy annotated signatures)."""

    @functools.wraps(method)
    def wrapper(self: Any, connection: Any, *args: Any, **kw: Any) -> Any:
        info_cache = kw.get("info_cache")
        if info_cache is None:
            return method(self, connection, *args, **kw)
        key = (
            method.__name__,
            args,
            tuple(
                sorted(
                    (k, v)
                    for k, v in kw.items()
                    if k != "info_cache" and isinstance(v, (str, type(None)))
                )
            ),
        )
        if key not in info_cache:
            info_cache[key] = method(self, connection, *args, **kw)
        return info_cache[key]

    return wrapper


class MeshgateIdentifierPreparer(PGIdentifierPreparer):
    """Quotes like PostgreSQL (and DuckDB): double quotes, lower case unquoted."""


class MeshgateDialect(PGDialect):
    """SQLAlchemy dialect for a Meshgate gateway (``meshgate://user:password@host:port``)."""

    name = "meshgate"
    driver = "adbc"
    default_paramstyle = "qmark"
    supports_statement_cache = True
    preparer = MeshgateIdentifierPreparer
    if BindTyping is not None:
        bind_typing = BindTyping.NONE

    # A read-only gateway: no DDL, no DML, no sequences, no transactions.
    supports_alter = False
    supports_sequences = False
    supports_comments = False
    supports_native_enum = False
    supports_identity_columns = False
    supports_server_side_cursors = False
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    supports_multivalues_insert = False
    postfetch_lastrowid = False
    implicit_returning = False
    insert_returning = False
    update_returning = False
    delete_returning = False
    use_insertmanyvalues = False
    supports_native_decimal = True
    _backslash_escapes = False

    @classmethod
    def import_dbapi(cls) -> ModuleType:  # SQLAlchemy 2
        import adbc_driver_flightsql.dbapi

        return adbc_driver_flightsql.dbapi

    @classmethod
    def dbapi(cls) -> ModuleType:  # type: ignore[override]  # SQLAlchemy 1.4
        return cls.import_dbapi()

    #: the domain of the URL's path (``meshgate://.../sales``): the connection's default schema
    url_schema: str | None = None

    def create_connect_args(self, url: URL) -> Any:
        self.url_schema = default_schema(url)
        return connect_args(url)

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        """A DB-API connection; with a default schema, one the user may read products of."""
        conn = super().connect(*cargs, **cparams)
        schema = (cparams.get("conn_kwargs") or {}).get(DB_SCHEMA_OPTION)
        if schema is not None:
            try:
                metadata.check_schema(conn, schema)
            except BaseException:
                conn.close()
                raise
        return conn

    # --------------------------------------------------------------- connection set-up

    def initialize(self, connection: Any) -> None:
        # DefaultDialect's, not PostgreSQL's: that one asks SHOW and pg_catalog.
        default.DefaultDialect.initialize(self, connection)

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        info = _adbc(connection).adbc_get_info()
        numbers = re.findall(r"\d+", str(info.get("vendor_version", "")))
        return tuple(int(n) for n in numbers[:3]) or (0,)

    def _get_default_schema_name(self, connection: Any) -> Any:
        """The URL's domain; without one, none: products are addressed as <domain>.<product>."""
        return self.url_schema

    def get_isolation_level(self, dbapi_connection: Any) -> Any:
        return "AUTOCOMMIT"

    def get_default_isolation_level(self, dbapi_conn: Any) -> Any:
        return "AUTOCOMMIT"

    def get_isolation_level_values(self, dbapi_conn: Any) -> Any:
        return ["AUTOCOMMIT"]

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        if level != "AUTOCOMMIT":
            raise NotImplementedError("Meshgate is read-only: every statement autocommits")

    def do_begin(self, dbapi_connection: Any) -> None:
        """Nothing to begin: the gateway is read-only and the connection autocommits."""

    def do_commit(self, dbapi_connection: Any) -> None:
        """Nothing to commit."""

    def do_rollback(self, dbapi_connection: Any) -> None:
        """Nothing to roll back."""

    # --------------------------------------------------------------- reflection

    @_cached
    def get_schema_names(self, connection: Any, **kw: Any) -> list[str]:
        return metadata.schema_names(_adbc(connection))

    @_cached
    def get_table_names(self, connection: Any, schema: str | None = None, **kw: Any) -> list[str]:
        schema = schema or self.url_schema
        if schema is None:
            return []
        return metadata.table_names(_adbc(connection), schema)

    def has_table(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> bool:
        schema = schema or self.url_schema
        if schema is None:
            return False
        return metadata.table_schema(_adbc(connection), schema, table_name) is not None

    def has_schema(self, connection: Any, schema: Any, **kw: Any) -> bool:  # type: ignore[override]
        return schema in self.get_schema_names(connection, **kw)

    @_cached
    def get_columns(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        found = None
        schema = schema or self.url_schema
        if schema is not None:
            found = metadata.table_schema(_adbc(connection), schema, table_name)
        if found is None:
            raise NoSuchTableError(f"{schema}.{table_name}" if schema else table_name)
        return [
            {
                "name": field.name,
                "type": sqlalchemy_type(field.type),
                "nullable": field.nullable,
                "default": None,
                "autoincrement": False,
                "comment": None,
            }
            for field in found
        ]

    def get_pk_constraint(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> Any:
        return {"constrained_columns": [], "name": None}

    def get_table_comment(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> Any:
        return {"text": None}

    def get_table_options(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> Any:
        return {}

    def _nothing(self, *args: Any, **kw: Any) -> list[Any]:
        """Products have no views, keys, indexes, constraints nor sequences."""
        return []

    get_view_names = _nothing
    get_materialized_view_names = _nothing
    get_temp_table_names = _nothing
    get_temp_view_names = _nothing
    get_foreign_table_names = _nothing
    get_sequence_names = _nothing
    get_foreign_keys = _nothing
    get_indexes = _nothing
    get_unique_constraints = _nothing
    get_check_constraints = _nothing

    def has_sequence(self, *args: Any, **kw: Any) -> bool:
        return False

    def get_view_definition(self, connection: Any, view_name: str, *args: Any, **kw: Any) -> str:
        raise NoSuchTableError(view_name)


# SQLAlchemy 2 reflects a Table through get_multi_*; PostgreSQL answers those from
# pg_catalog, DefaultDialect by calling the single-table methods above.
for _method in (
    "get_multi_columns",
    "get_multi_pk_constraint",
    "get_multi_foreign_keys",
    "get_multi_indexes",
    "get_multi_unique_constraints",
    "get_multi_check_constraints",
    "get_multi_table_comment",
    "get_multi_table_options",
    "has_multi_table",
):
    if hasattr(default.DefaultDialect, _method):
        setattr(MeshgateDialect, _method, getattr(default.DefaultDialect, _method))


def _adbc(connection: Any) -> Any:
    """The ADBC DB-API connection under a SQLAlchemy ``Connection`` (SQLAlchemy 1.4 hands
    ``initialize`` one whose ``connection`` is that DB-API connection itself)."""
    raw = connection.connection
    return getattr(raw, "dbapi_connection", raw)
