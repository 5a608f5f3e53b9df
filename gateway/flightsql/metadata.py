"""Flight SQL metadata results (catalogs, schemas, tables, keys, SqlInfo) from the catalog."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import pyarrow as pa

from gateway import __version__
from gateway.catalog.catalog import Product
from gateway.errors import NotSupported
from gateway.flightsql import dialect, schemas, xdbc
from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql.schemas import Int32Bitmask
from gateway.memo import memoize_short
from gateway.planning.naming import FLIGHT_SQL_CATALOG

TABLE_TYPE = "TABLE"

#: The SqlInfo the gateway reports (GetSqlInfo); values follow FlightSql.proto's kinds.
SQL_INFO: dict[int, schemas.SqlInfoValue] = {
    pb.FLIGHT_SQL_SERVER_NAME: "Meshgate",
    pb.FLIGHT_SQL_SERVER_VERSION: __version__,
    pb.FLIGHT_SQL_SERVER_ARROW_VERSION: pa.__version__,
    pb.FLIGHT_SQL_SERVER_READ_ONLY: True,
    pb.FLIGHT_SQL_SERVER_SQL: True,
    pb.FLIGHT_SQL_SERVER_SUBSTRAIT: False,
    pb.FLIGHT_SQL_SERVER_TRANSACTION: Int32Bitmask(pb.SQL_SUPPORTED_TRANSACTION_NONE),
    pb.FLIGHT_SQL_SERVER_CANCEL: False,
    pb.FLIGHT_SQL_SERVER_BULK_INGESTION: False,
    pb.SQL_DDL_CATALOG: False,
    pb.SQL_DDL_SCHEMA: False,
    pb.SQL_DDL_TABLE: False,
    # DuckDB's identifiers, and the gateway's product names, match whatever their case
    pb.SQL_IDENTIFIER_CASE: Int32Bitmask(pb.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE),
    pb.SQL_IDENTIFIER_QUOTE_CHAR: '"',
    pb.SQL_QUOTED_IDENTIFIER_CASE: Int32Bitmask(pb.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE),
    pb.SQL_ALL_TABLES_ARE_SELECTABLE: True,
    pb.SQL_NULL_ORDERING: Int32Bitmask(pb.SQL_NULLS_SORTED_AT_END),
    # the escape of the LIKE patterns of GetDbSchemas / GetTables (see ``_like``)
    pb.SQL_SEARCH_STRING_ESCAPE: "\\",
    pb.SQL_EXTRA_NAME_CHARACTERS: "",
    pb.SQL_SCHEMA_TERM: "domain",
    pb.SQL_CATALOG_TERM: "catalog",
    pb.SQL_PROCEDURE_TERM: "procedure",
    pb.SQL_SUPPORTS_COLUMN_ALIASING: True,
    pb.SQL_NULL_PLUS_NULL_IS_NULL: True,
    pb.SQL_SUPPORTS_TABLE_CORRELATION_NAMES: True,
    pb.SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES: False,
    pb.SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY: True,
    pb.SQL_SUPPORTS_ORDER_BY_UNRELATED: True,
    pb.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE: True,
    pb.SQL_SUPPORTS_NON_NULLABLE_COLUMNS: True,
    pb.SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY: False,
    pb.SQL_CATALOG_AT_START: True,
    pb.SQL_SELECT_FOR_UPDATE_SUPPORTED: False,
    pb.SQL_STORED_PROCEDURES_SUPPORTED: False,
    pb.SQL_CORRELATED_SUBQUERIES_SUPPORTED: True,
    pb.SQL_SUPPORTED_UNIONS: Int32Bitmask(0b11),  # UNION and UNION ALL
    pb.SQL_TRANSACTIONS_SUPPORTED: False,
    pb.SQL_BATCH_UPDATES_SUPPORTED: False,
    pb.SQL_SAVEPOINTS_SUPPORTED: False,
    pb.SQL_NAMED_PARAMETERS_SUPPORTED: False,
    pb.SQL_LOCATORS_UPDATE_COPY: False,
    pb.SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED: False,
    pb.SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT: False,
    pb.SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED: False,
    **{info: Int32Bitmask(value) for info, value in dialect.GRAMMAR.items()},
}


#: The result schema of each metadata command but GetTables (see ``command_schema``).
_COMMAND_SCHEMAS: dict[type, pa.Schema] = {
    pb.CommandGetSqlInfo: schemas.GET_SQL_INFO,
    pb.CommandGetCatalogs: schemas.GET_CATALOGS,
    pb.CommandGetDbSchemas: schemas.GET_DB_SCHEMAS,
    pb.CommandGetTableTypes: schemas.GET_TABLE_TYPES,
    pb.CommandGetPrimaryKeys: schemas.GET_PRIMARY_KEYS,
    pb.CommandGetImportedKeys: schemas.GET_IMPORTED_KEYS,
    pb.CommandGetExportedKeys: schemas.GET_EXPORTED_KEYS,
    pb.CommandGetCrossReference: schemas.GET_CROSS_REFERENCE,
    pb.CommandGetXdbcTypeInfo: schemas.GET_XDBC_TYPE_INFO,
}


def command_schema(command: object) -> pa.Schema:
    """The result schema of a metadata command; NotSupported for any other command."""
    if isinstance(command, pb.CommandGetTables):
        return schemas.GET_TABLES_WITH_SCHEMA if command.include_schema else schemas.GET_TABLES
    schema = _COMMAND_SCHEMAS.get(type(command))
    if schema is None:
        raise NotSupported(f"{type(command).__name__} is not supported by this server")
    return schema


def command_table(
    command: object,
    visible: Callable[[], Iterable[Product]],
    server_info: Callable[[], Mapping[int, schemas.SqlInfoValue]] = dict,
) -> pa.Table:
    """The result of a metadata command; ``visible``: the products the user may see
    (asked only by the commands that list products); ``server_info``: the SqlInfo the
    server knows beyond ``SQL_INFO`` (its keywords, its limits)."""
    if isinstance(command, pb.CommandGetSqlInfo):
        return pa.Table.from_batches([sql_info(list(command.info), server_info())])
    if isinstance(command, pb.CommandGetCatalogs):
        return catalogs()
    if isinstance(command, pb.CommandGetTableTypes):
        return table_types()
    if isinstance(command, pb.CommandGetXdbcTypeInfo):
        return xdbc_type_info(command)
    if isinstance(
        command,
        (pb.CommandGetImportedKeys, pb.CommandGetExportedKeys, pb.CommandGetCrossReference),
    ):
        return no_keys()
    if isinstance(command, pb.CommandGetDbSchemas):
        return db_schemas(visible(), command)
    if isinstance(command, pb.CommandGetTables):
        return tables(visible(), command)
    if isinstance(command, pb.CommandGetPrimaryKeys):
        return primary_keys(visible(), command)
    raise NotSupported(f"{type(command).__name__} is not supported by this server")


def sql_info(
    requested: Sequence[int], server_info: Mapping[int, schemas.SqlInfoValue] | None = None
) -> pa.RecordBatch:
    """GetSqlInfo: the requested ids (all when empty) that the gateway knows: ``SQL_INFO``,
    the function lists (``gateway.flightsql.dialect``) and ``server_info``."""
    values: dict[int, schemas.SqlInfoValue] = {**SQL_INFO, **dialect.function_lists()}
    values.update(server_info or {})
    return schemas.sql_info_batch(values, list(requested))


def catalogs() -> pa.Table:
    return pa.Table.from_pylist([{"catalog_name": FLIGHT_SQL_CATALOG}], schema=schemas.GET_CATALOGS)


def db_schemas(products: Iterable[Product], command: pb.CommandGetDbSchemas) -> pa.Table:
    """GetDbSchemas: one row per domain with at least one visible product."""
    rows = []
    if _catalog_matches(command):
        pattern = _like(
            command.db_schema_filter_pattern
            if command.HasField("db_schema_filter_pattern")
            else None
        )
        domains = sorted({p.domain for p in products})
        rows = [
            {"catalog_name": FLIGHT_SQL_CATALOG, "db_schema_name": d}
            for d in domains
            if pattern.fullmatch(d)
        ]
    return pa.Table.from_pylist(rows, schema=schemas.GET_DB_SCHEMAS)


def tables(products: Iterable[Product], command: pb.CommandGetTables) -> pa.Table:
    """GetTables: products as tables, with their Arrow schema when asked."""
    schema = schemas.GET_TABLES_WITH_SCHEMA if command.include_schema else schemas.GET_TABLES
    rows = []
    types = set(command.table_types)
    if _catalog_matches(command) and (not types or TABLE_TYPE in types):
        domain_pattern = _like(
            command.db_schema_filter_pattern
            if command.HasField("db_schema_filter_pattern")
            else None
        )
        table_pattern = _like(
            command.table_name_filter_pattern
            if command.HasField("table_name_filter_pattern")
            else None
        )
        for product in products:
            if domain_pattern.fullmatch(product.domain) and table_pattern.fullmatch(product.name):
                row: dict[str, object] = {
                    "catalog_name": FLIGHT_SQL_CATALOG,
                    "db_schema_name": product.domain,
                    "table_name": product.name,
                    "table_type": TABLE_TYPE,
                }
                if command.include_schema:
                    row["table_schema"] = schemas.table_schema_bytes(_described(product))
                rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def _described(product: Product) -> pa.Schema:
    """The product's schema with each column's SQL type, XDBC description and contract
    description in its field metadata (see ``gateway.flightsql.xdbc``)."""
    return xdbc.described_schema(
        product.schema,
        product.column_types,
        FLIGHT_SQL_CATALOG,
        product.domain,
        product.name,
        {c.name: c.description for c in product.columns},
    )


def xdbc_type_info(command: pb.CommandGetXdbcTypeInfo) -> pa.Table:
    """GetXdbcTypeInfo: the DuckDB types the gateway serves (one XDBC code if asked)."""
    data_type = command.data_type if command.HasField("data_type") else None
    return pa.Table.from_pylist(
        list(xdbc.type_info_rows(data_type)), schema=schemas.GET_XDBC_TYPE_INFO
    )


def table_types() -> pa.Table:
    return pa.Table.from_pylist([{"table_type": TABLE_TYPE}], schema=schemas.GET_TABLE_TYPES)


def primary_keys(products: Iterable[Product], command: pb.CommandGetPrimaryKeys) -> pa.Table:
    """GetPrimaryKeys: the columns a contract marks ``primaryKey``."""
    rows = []
    domain = command.db_schema if command.HasField("db_schema") else None
    if _catalog_matches(command):
        for product in products:
            if product.name != command.table.lower() or (
                domain and product.domain != domain.lower()
            ):
                continue
            for column in product.columns:
                if column.primary_key_position is not None:
                    rows.append(
                        {
                            "catalog_name": FLIGHT_SQL_CATALOG,
                            "db_schema_name": product.domain,
                            "table_name": product.name,
                            "column_name": column.name,
                            "key_sequence": column.primary_key_position,
                            "key_name": None,
                        }
                    )
    return pa.Table.from_pylist(rows, schema=schemas.GET_PRIMARY_KEYS)


def no_keys() -> pa.Table:
    """Imported/exported keys and cross references: contracts declare none."""
    return schemas.GET_IMPORTED_KEYS.empty_table()


def _catalog_matches(command) -> bool:
    return not command.HasField("catalog") or command.catalog in ("", FLIGHT_SQL_CATALOG)


@memoize_short(maxsize=256, max_bytes=1024)
def _like(pattern: str | None) -> re.Pattern[str]:
    """A SQL LIKE pattern (``%``, ``_``, backslash escapes) as a regex; None matches all.
    Patterns up to 1 KB are compiled once (the usual ones, kept), longer ones each time."""
    if pattern is None:
        return re.compile(".*", re.DOTALL)
    out, escaped = [], False
    for char in pattern:
        if escaped:
            out.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)
