"""Flight SQL result schemas, the SqlInfo encoder, and the GetTables ``table_schema`` encoder.

The ADBC Flight SQL driver (Go) compares metadata result schemas strictly, nullability
included (``arrow.Schema.Equal``), and reads GetSqlInfo answers with unchecked Go type
assertions: a wrong union layout there panics, and after one panic the driver refuses every
later call in that client process. Every schema here therefore matches the reference
implementations field for field:

* arrow-go ``arrow/flight/flightsql/schema_ref/reference.go`` (what the ADBC driver uses);
* arrow C++ ``cpp/src/arrow/flight/sql/server.cc`` (``SqlSchema::Get*Schema``);
* the schema comments in ``format/FlightSql.proto``.

Where the proto comments and the two implementations differ, the implementations win,
because they are what clients compare against:

* GetPrimaryKeys: the comment lists ``key_name`` before ``key_sequence``; both
  implementations put ``key_sequence`` (column 4) before ``key_name`` (column 5).
* GetSqlInfo: the comment names the list items ``string_data`` / ``$data$``; both
  implementations use the default ``item``. Both make every union child non-nullable,
  which the comment does not say.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import cast

import pyarrow as pa

__all__ = [
    "GET_CATALOGS",
    "GET_CROSS_REFERENCE",
    "GET_DB_SCHEMAS",
    "GET_EXPORTED_KEYS",
    "GET_IMPORTED_KEYS",
    "GET_PRIMARY_KEYS",
    "GET_SQL_INFO",
    "GET_TABLES",
    "GET_TABLES_WITH_SCHEMA",
    "GET_TABLE_TYPES",
    "GET_XDBC_TYPE_INFO",
    "SQL_INFO_VALUE_KINDS",
    "SQL_INFO_VALUE_TYPE",
    "Int32Bitmask",
    "SqlInfo",
    "SqlInfoValue",
    "SqlInfoValueCode",
    "SqlSupportedTransaction",
    "sql_info_batch",
    "table_schema_bytes",
]


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


# --------------------------------------------------------------------------------------
# Catalog metadata result schemas
# --------------------------------------------------------------------------------------

#: CommandGetCatalogs.
GET_CATALOGS: pa.Schema = pa.schema([_required("catalog_name", pa.utf8())])

#: CommandGetDbSchemas.
GET_DB_SCHEMAS: pa.Schema = pa.schema(
    [
        _optional("catalog_name", pa.utf8()),
        _required("db_schema_name", pa.utf8()),
    ]
)

#: CommandGetTables with ``include_schema = false``.
GET_TABLES: pa.Schema = pa.schema(
    [
        _optional("catalog_name", pa.utf8()),
        _optional("db_schema_name", pa.utf8()),
        _required("table_name", pa.utf8()),
        _required("table_type", pa.utf8()),
    ]
)

#: CommandGetTables with ``include_schema = true``: one more column, ``table_schema``,
#: holding :func:`table_schema_bytes` of each table.
GET_TABLES_WITH_SCHEMA: pa.Schema = GET_TABLES.append(_required("table_schema", pa.binary()))

#: CommandGetTableTypes.
GET_TABLE_TYPES: pa.Schema = pa.schema([_required("table_type", pa.utf8())])

#: CommandGetPrimaryKeys (``key_sequence`` before ``key_name``, as the implementations).
GET_PRIMARY_KEYS: pa.Schema = pa.schema(
    [
        _optional("catalog_name", pa.utf8()),
        _optional("db_schema_name", pa.utf8()),
        _required("table_name", pa.utf8()),
        _required("column_name", pa.utf8()),
        _required("key_sequence", pa.int32()),
        _optional("key_name", pa.utf8()),
    ]
)

_KEYS_SCHEMA: pa.Schema = pa.schema(
    [
        _optional("pk_catalog_name", pa.utf8()),
        _optional("pk_db_schema_name", pa.utf8()),
        _required("pk_table_name", pa.utf8()),
        _required("pk_column_name", pa.utf8()),
        _optional("fk_catalog_name", pa.utf8()),
        _optional("fk_db_schema_name", pa.utf8()),
        _required("fk_table_name", pa.utf8()),
        _required("fk_column_name", pa.utf8()),
        _required("key_sequence", pa.int32()),
        _optional("fk_key_name", pa.utf8()),
        _optional("pk_key_name", pa.utf8()),
        _required("update_rule", pa.uint8()),
        _required("delete_rule", pa.uint8()),
    ]
)

#: CommandGetImportedKeys, CommandGetExportedKeys and CommandGetCrossReference share one
#: schema.
GET_IMPORTED_KEYS: pa.Schema = _KEYS_SCHEMA
GET_EXPORTED_KEYS: pa.Schema = _KEYS_SCHEMA
GET_CROSS_REFERENCE: pa.Schema = _KEYS_SCHEMA

#: CommandGetXdbcTypeInfo. ``create_params`` is a nullable list of non-nullable strings.
GET_XDBC_TYPE_INFO: pa.Schema = pa.schema(
    [
        _required("type_name", pa.utf8()),
        _required("data_type", pa.int32()),
        _optional("column_size", pa.int32()),
        _optional("literal_prefix", pa.utf8()),
        _optional("literal_suffix", pa.utf8()),
        _optional("create_params", pa.list_(_required("item", pa.utf8()))),
        _required("nullable", pa.int32()),
        _required("case_sensitive", pa.bool_()),
        _required("searchable", pa.int32()),
        _optional("unsigned_attribute", pa.bool_()),
        _required("fixed_prec_scale", pa.bool_()),
        _optional("auto_increment", pa.bool_()),
        _optional("local_type_name", pa.utf8()),
        _optional("minimum_scale", pa.int32()),
        _optional("maximum_scale", pa.int32()),
        _required("sql_data_type", pa.int32()),
        _optional("datetime_subcode", pa.int32()),
        _optional("num_prec_radix", pa.int32()),
        _optional("interval_precision", pa.int32()),
    ]
)

# --------------------------------------------------------------------------------------
# GetSqlInfo
# --------------------------------------------------------------------------------------


class SqlInfoValueCode(enum.IntEnum):
    """Type codes of the GetSqlInfo ``value`` union; each equals its child's index.

    The ADBC driver relies on code == child index: on connect it reads child 3 as an
    int32 array without checking.
    """

    STRING_VALUE = 0
    BOOL_VALUE = 1
    BIGINT_VALUE = 2
    INT32_BITMASK = 3
    STRING_LIST = 4
    INT32_TO_INT32_LIST_MAP = 5


# list<item: utf8> with a nullable item, and map<int32, list<item: int32>> whose key is
# non-nullable and whose value (and the inner list's item) are nullable: the defaults of
# both arrow-go (ListOf / MapOf) and arrow C++ (list / map), spelled out here.
_STRING_LIST_TYPE = pa.list_(_optional("item", pa.utf8()))
_INT32_LIST_MAP_TYPE = pa.map_(
    _required("key", pa.int32()),
    _optional("value", pa.list_(_optional("item", pa.int32()))),
)

#: The dense union of the ``value`` column. All children are non-nullable.
SQL_INFO_VALUE_TYPE: pa.DenseUnionType = pa.dense_union(
    [
        _required("string_value", pa.utf8()),
        _required("bool_value", pa.bool_()),
        _required("bigint_value", pa.int64()),
        _required("int32_bitmask", pa.int32()),
        _required("string_list", _STRING_LIST_TYPE),
        _required("int32_to_int32_list_map", _INT32_LIST_MAP_TYPE),
    ],
    type_codes=[code.value for code in SqlInfoValueCode],
)

#: CommandGetSqlInfo: one row per piece of information.
GET_SQL_INFO: pa.Schema = pa.schema(
    [
        _required("info_name", pa.uint32()),
        _required("value", SQL_INFO_VALUE_TYPE),
    ]
)


class SqlInfo(enum.IntEnum):
    """SqlInfo ids (``info_name``) from FlightSql.proto's ``SqlInfo`` enum (a subset)."""

    FLIGHT_SQL_SERVER_NAME = 0
    FLIGHT_SQL_SERVER_VERSION = 1
    FLIGHT_SQL_SERVER_ARROW_VERSION = 2
    FLIGHT_SQL_SERVER_READ_ONLY = 3
    FLIGHT_SQL_SERVER_SQL = 4
    FLIGHT_SQL_SERVER_SUBSTRAIT = 5
    FLIGHT_SQL_SERVER_SUBSTRAIT_MIN_VERSION = 6
    FLIGHT_SQL_SERVER_SUBSTRAIT_MAX_VERSION = 7
    FLIGHT_SQL_SERVER_TRANSACTION = 8
    FLIGHT_SQL_SERVER_CANCEL = 9
    FLIGHT_SQL_SERVER_BULK_INGESTION = 10
    FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED = 11
    FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT = 100
    FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT = 101
    SQL_DDL_CATALOG = 500
    SQL_DDL_SCHEMA = 501
    SQL_DDL_TABLE = 502
    SQL_IDENTIFIER_CASE = 503
    SQL_IDENTIFIER_QUOTE_CHAR = 504
    SQL_QUOTED_IDENTIFIER_CASE = 505
    SQL_ALL_TABLES_ARE_SELECTABLE = 506
    SQL_NULL_ORDERING = 507
    SQL_KEYWORDS = 508
    SQL_NUMERIC_FUNCTIONS = 509
    SQL_STRING_FUNCTIONS = 510
    SQL_SYSTEM_FUNCTIONS = 511
    SQL_DATETIME_FUNCTIONS = 512
    SQL_SEARCH_STRING_ESCAPE = 513
    SQL_EXTRA_NAME_CHARACTERS = 514
    SQL_SUPPORTS_COLUMN_ALIASING = 515
    SQL_NULL_PLUS_NULL_IS_NULL = 516
    SQL_SUPPORTS_CONVERT = 517
    SQL_SUPPORTS_TABLE_CORRELATION_NAMES = 518
    SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES = 519
    SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY = 520
    SQL_SUPPORTS_ORDER_BY_UNRELATED = 521
    SQL_SUPPORTED_GROUP_BY = 522
    SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE = 523
    SQL_SUPPORTS_NON_NULLABLE_COLUMNS = 524
    SQL_SUPPORTED_GRAMMAR = 525
    SQL_ANSI92_SUPPORTED_LEVEL = 526
    SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY = 527
    SQL_OUTER_JOINS_SUPPORT_LEVEL = 528
    SQL_SCHEMA_TERM = 529
    SQL_PROCEDURE_TERM = 530
    SQL_CATALOG_TERM = 531
    SQL_CATALOG_AT_START = 532


class SqlSupportedTransaction(enum.IntEnum):
    """Values of ``FLIGHT_SQL_SERVER_TRANSACTION`` (send them wrapped in Int32Bitmask)."""

    NONE = 0
    TRANSACTION = 1
    SAVEPOINT = 2


_S = SqlInfoValueCode.STRING_VALUE
_B = SqlInfoValueCode.BOOL_VALUE
_I32 = SqlInfoValueCode.INT32_BITMASK
_SL = SqlInfoValueCode.STRING_LIST
_MAP = SqlInfoValueCode.INT32_TO_INT32_LIST_MAP

#: The value kind FlightSql.proto prescribes for each id in :class:`SqlInfo`.
#: :func:`sql_info_batch` refuses a value of another kind for these ids: a client reads
#: them by kind (ADBC ignores FLIGHT_SQL_SERVER_TRANSACTION unless it is int32, and fails
#: GetInfo if the server name/version is not a string). "int32" ids (bitmasks and
#: ordinals alike) go in the ``int32_bitmask`` child: wrap them in :class:`Int32Bitmask`.
SQL_INFO_VALUE_KINDS: Mapping[int, SqlInfoValueCode] = {
    SqlInfo.FLIGHT_SQL_SERVER_NAME: _S,
    SqlInfo.FLIGHT_SQL_SERVER_VERSION: _S,
    SqlInfo.FLIGHT_SQL_SERVER_ARROW_VERSION: _S,
    SqlInfo.FLIGHT_SQL_SERVER_READ_ONLY: _B,
    SqlInfo.FLIGHT_SQL_SERVER_SQL: _B,
    SqlInfo.FLIGHT_SQL_SERVER_SUBSTRAIT: _B,
    SqlInfo.FLIGHT_SQL_SERVER_SUBSTRAIT_MIN_VERSION: _S,
    SqlInfo.FLIGHT_SQL_SERVER_SUBSTRAIT_MAX_VERSION: _S,
    SqlInfo.FLIGHT_SQL_SERVER_TRANSACTION: _I32,
    SqlInfo.FLIGHT_SQL_SERVER_CANCEL: _B,
    SqlInfo.FLIGHT_SQL_SERVER_BULK_INGESTION: _B,
    SqlInfo.FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED: _B,
    SqlInfo.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: _I32,
    SqlInfo.FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT: _I32,
    SqlInfo.SQL_DDL_CATALOG: _B,
    SqlInfo.SQL_DDL_SCHEMA: _B,
    SqlInfo.SQL_DDL_TABLE: _B,
    SqlInfo.SQL_IDENTIFIER_CASE: _I32,
    SqlInfo.SQL_IDENTIFIER_QUOTE_CHAR: _S,
    SqlInfo.SQL_QUOTED_IDENTIFIER_CASE: _I32,
    SqlInfo.SQL_ALL_TABLES_ARE_SELECTABLE: _B,
    SqlInfo.SQL_NULL_ORDERING: _I32,
    SqlInfo.SQL_KEYWORDS: _SL,
    SqlInfo.SQL_NUMERIC_FUNCTIONS: _SL,
    SqlInfo.SQL_STRING_FUNCTIONS: _SL,
    SqlInfo.SQL_SYSTEM_FUNCTIONS: _SL,
    SqlInfo.SQL_DATETIME_FUNCTIONS: _SL,
    SqlInfo.SQL_SEARCH_STRING_ESCAPE: _S,
    SqlInfo.SQL_EXTRA_NAME_CHARACTERS: _S,
    SqlInfo.SQL_SUPPORTS_COLUMN_ALIASING: _B,
    SqlInfo.SQL_NULL_PLUS_NULL_IS_NULL: _B,
    SqlInfo.SQL_SUPPORTS_CONVERT: _MAP,
    SqlInfo.SQL_SUPPORTS_TABLE_CORRELATION_NAMES: _B,
    SqlInfo.SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES: _B,
    SqlInfo.SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY: _B,
    SqlInfo.SQL_SUPPORTS_ORDER_BY_UNRELATED: _B,
    SqlInfo.SQL_SUPPORTED_GROUP_BY: _I32,
    SqlInfo.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE: _B,
    SqlInfo.SQL_SUPPORTS_NON_NULLABLE_COLUMNS: _B,
    SqlInfo.SQL_SUPPORTED_GRAMMAR: _I32,
    SqlInfo.SQL_ANSI92_SUPPORTED_LEVEL: _I32,
    SqlInfo.SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY: _B,
    SqlInfo.SQL_OUTER_JOINS_SUPPORT_LEVEL: _I32,
    SqlInfo.SQL_SCHEMA_TERM: _S,
    SqlInfo.SQL_PROCEDURE_TERM: _S,
    SqlInfo.SQL_CATALOG_TERM: _S,
    SqlInfo.SQL_CATALOG_AT_START: _B,
}

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT32_MAX = 2**32 - 1


class Int32Bitmask(int):
    """An int sent in the ``int32_bitmask`` child instead of ``bigint_value``.

    Use it for every SqlInfo the spec calls "int32": bitmasks, ordinals such as
    ``FLIGHT_SQL_SERVER_TRANSACTION``, and the timeouts. A plain ``int`` is sent as int64.
    """

    def __new__(cls, value: int) -> Int32Bitmask:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Int32Bitmask needs an int, got {type(value).__name__}")
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise ValueError(f"Int32Bitmask value {value} does not fit in int32")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Int32Bitmask({int(self)})"


#: What :func:`sql_info_batch` accepts as one value.
SqlInfoValue = str | bool | int | Int32Bitmask | list[str] | dict[int, list[int]]


def _value_code(info_id: int, value: object) -> SqlInfoValueCode:
    """The union child for ``value``, after checking its contents fit that child."""
    where = f"SqlInfo {info_id}"
    if value is None:
        raise ValueError(
            f"{where}: None cannot be encoded (the union children are non-nullable); "
            "leave the id out instead"
        )
    # Order matters: Int32Bitmask and bool are both ints.
    if isinstance(value, Int32Bitmask):
        return SqlInfoValueCode.INT32_BITMASK
    if isinstance(value, bool):
        return SqlInfoValueCode.BOOL_VALUE
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"{where}: {value} does not fit in int64")
        return SqlInfoValueCode.BIGINT_VALUE
    if isinstance(value, str):
        return SqlInfoValueCode.STRING_VALUE
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise TypeError(f"{where}: a string list holds only str, got {item!r}")
        return SqlInfoValueCode.STRING_LIST
    if isinstance(value, dict):
        for key, items in value.items():
            _check_int32(where, key)
            if not isinstance(items, list):
                raise TypeError(f"{where}: map value for key {key} must be a list of int")
            for item in items:
                _check_int32(where, item)
        return SqlInfoValueCode.INT32_TO_INT32_LIST_MAP
    raise TypeError(
        f"{where}: cannot encode a {type(value).__name__}; use str, bool, int, "
        "Int32Bitmask, list[str] or dict[int, list[int]]"
    )


def _check_int32(where: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: map keys and items must be int, got {value!r}")
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise ValueError(f"{where}: map key or item {value} does not fit in int32")


def _check_id(info_id: object) -> int:
    if isinstance(info_id, bool) or not isinstance(info_id, int):
        raise TypeError(f"SqlInfo id must be an int, got {info_id!r}")
    if not 0 <= info_id <= _UINT32_MAX:
        raise ValueError(f"SqlInfo id {info_id} does not fit in uint32")
    return int(info_id)


def sql_info_batch(
    values: Mapping[int, SqlInfoValue],
    requested: Sequence[int] | None,
) -> pa.RecordBatch:
    """Encode SqlInfo values as the GetSqlInfo result (schema :data:`GET_SQL_INFO`).

    ``values`` maps SqlInfo ids to values; the Python type picks the union child:
    ``str`` -> string_value, ``bool`` -> bool_value, ``int`` -> bigint_value,
    :class:`Int32Bitmask` -> int32_bitmask, ``list[str]`` -> string_list,
    ``dict[int, list[int]]`` -> int32_to_int32_list_map.

    ``requested`` is CommandGetSqlInfo.info: None or empty means every id in ``values``
    (ascending); otherwise the rows follow ``requested``, once per id, and ids without a
    value are skipped (the spec lets a server omit what it does not know).

    Raises TypeError or ValueError for a value that cannot be encoded, or whose kind
    differs from the one the spec prescribes for its id (:data:`SQL_INFO_VALUE_KINDS`);
    every value is checked, requested or not.
    """
    codes: dict[int, SqlInfoValueCode] = {}
    for raw_id, value in values.items():
        info_id = _check_id(raw_id)
        code = _value_code(info_id, value)
        expected = SQL_INFO_VALUE_KINDS.get(info_id)
        if expected is not None and code != expected:
            hint = " (wrap the int in Int32Bitmask)" if expected is _I32 else ""
            raise TypeError(
                f"SqlInfo {SqlInfo(info_id).name} ({info_id}) must be a {expected.name} "
                f"value per FlightSql.proto, got {code.name} {value!r}{hint}"
            )
        codes[info_id] = code

    if requested:
        ids = list(dict.fromkeys(i for i in map(_check_id, requested) if i in codes))
    else:
        ids = sorted(codes)

    children: list[list[object]] = [[] for _ in SqlInfoValueCode]
    type_ids: list[int] = []
    offsets: list[int] = []
    for info_id in ids:
        code = codes[info_id]
        cell: object = values[info_id]
        # _value_code chose ``code`` from the value's type
        if code is SqlInfoValueCode.INT32_TO_INT32_LIST_MAP:
            cell = list(cast(dict[int, list[int]], cell).items())
        elif code in (SqlInfoValueCode.BIGINT_VALUE, SqlInfoValueCode.INT32_BITMASK):
            cell = int(cast(int, cell))
        type_ids.append(code)
        offsets.append(len(children[code]))
        children[code].append(cell)

    child_arrays = [
        pa.array(children[code], type=SQL_INFO_VALUE_TYPE.field(code).type)
        for code in SqlInfoValueCode
    ]
    union = pa.UnionArray.from_dense(
        pa.array(type_ids, type=pa.int8()),
        pa.array(offsets, type=pa.int32()),
        child_arrays,
        [SQL_INFO_VALUE_TYPE.field(code).name for code in SqlInfoValueCode],
        [code.value for code in SqlInfoValueCode],
    )
    # from_dense marks every child nullable; the reference has them non-nullable. The
    # physical layout is identical and no child holds a null, so a view fixes the type.
    union = union.view(SQL_INFO_VALUE_TYPE)
    return pa.RecordBatch.from_arrays([pa.array(ids, type=pa.uint32()), union], schema=GET_SQL_INFO)


# --------------------------------------------------------------------------------------
# GetTables table_schema
# --------------------------------------------------------------------------------------


def table_schema_bytes(schema: pa.Schema) -> bytes:
    """One table's ``table_schema`` cell for :data:`GET_TABLES_WITH_SCHEMA`.

    FlightSql.proto: "schema of the table as described in Schema.fbs::Schema, it is
    serialized as an IPC message". This is the encapsulated IPC Schema message that
    arrow C++ ``ipc::SerializeSchema`` writes (continuation marker ``0xFFFFFFFF``,
    little-endian int32 metadata length, the flatbuffer padded to 8 bytes, no body, no
    end-of-stream marker). Readers: ``pyarrow.ipc.read_schema``, arrow-go
    ``flight.DeserializeSchema`` / ``ipc.NewReader`` (both used by the ADBC driver).
    Field metadata such as ``ARROW:FLIGHT:SQL:TYPE_NAME`` travels with the schema.
    """
    return schema.serialize().to_pybytes()
