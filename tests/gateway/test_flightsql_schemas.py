"""Flight SQL result schemas and the SqlInfo / table_schema encoders.

The expected values below were checked against arrow-go
``arrow/flight/flightsql/schema_ref/reference.go`` (used by the ADBC driver), arrow C++
``cpp/src/arrow/flight/sql/server.cc`` (``SqlSchema``) and ``format/FlightSql.proto``.
pyarrow's type equality ignores list item names, so nested names are asserted one by one.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from gateway.flightsql import schemas as fs
from gateway.flightsql.schemas import Int32Bitmask, SqlInfo, sql_info_batch

UTF8, BINARY, BOOL = pa.utf8(), pa.binary(), pa.bool_()
INT32, INT64, UINT8, UINT32 = pa.int32(), pa.int64(), pa.uint8(), pa.uint32()
NULL, NOT_NULL = True, False

KEYS = [
    ("pk_catalog_name", UTF8, NULL),
    ("pk_db_schema_name", UTF8, NULL),
    ("pk_table_name", UTF8, NOT_NULL),
    ("pk_column_name", UTF8, NOT_NULL),
    ("fk_catalog_name", UTF8, NULL),
    ("fk_db_schema_name", UTF8, NULL),
    ("fk_table_name", UTF8, NOT_NULL),
    ("fk_column_name", UTF8, NOT_NULL),
    ("key_sequence", INT32, NOT_NULL),
    ("fk_key_name", UTF8, NULL),
    ("pk_key_name", UTF8, NULL),
    ("update_rule", UINT8, NOT_NULL),
    ("delete_rule", UINT8, NOT_NULL),
]

EXPECTED_FLAT = {
    "GET_CATALOGS": [("catalog_name", UTF8, NOT_NULL)],
    "GET_DB_SCHEMAS": [("catalog_name", UTF8, NULL), ("db_schema_name", UTF8, NOT_NULL)],
    "GET_TABLES": [
        ("catalog_name", UTF8, NULL),
        ("db_schema_name", UTF8, NULL),
        ("table_name", UTF8, NOT_NULL),
        ("table_type", UTF8, NOT_NULL),
    ],
    "GET_TABLES_WITH_SCHEMA": [
        ("catalog_name", UTF8, NULL),
        ("db_schema_name", UTF8, NULL),
        ("table_name", UTF8, NOT_NULL),
        ("table_type", UTF8, NOT_NULL),
        ("table_schema", BINARY, NOT_NULL),
    ],
    "GET_TABLE_TYPES": [("table_type", UTF8, NOT_NULL)],
    "GET_PRIMARY_KEYS": [
        ("catalog_name", UTF8, NULL),
        ("db_schema_name", UTF8, NULL),
        ("table_name", UTF8, NOT_NULL),
        ("column_name", UTF8, NOT_NULL),
        ("key_sequence", INT32, NOT_NULL),
        ("key_name", UTF8, NULL),
    ],
    "GET_IMPORTED_KEYS": KEYS,
    "GET_EXPORTED_KEYS": KEYS,
    "GET_CROSS_REFERENCE": KEYS,
    "GET_XDBC_TYPE_INFO": [
        ("type_name", UTF8, NOT_NULL),
        ("data_type", INT32, NOT_NULL),
        ("column_size", INT32, NULL),
        ("literal_prefix", UTF8, NULL),
        ("literal_suffix", UTF8, NULL),
        ("create_params", pa.list_(pa.field("item", UTF8, nullable=False)), NULL),
        ("nullable", INT32, NOT_NULL),
        ("case_sensitive", BOOL, NOT_NULL),
        ("searchable", INT32, NOT_NULL),
        ("unsigned_attribute", BOOL, NULL),
        ("fixed_prec_scale", BOOL, NOT_NULL),
        ("auto_increment", BOOL, NULL),
        ("local_type_name", UTF8, NULL),
        ("minimum_scale", INT32, NULL),
        ("maximum_scale", INT32, NULL),
        ("sql_data_type", INT32, NOT_NULL),
        ("datetime_subcode", INT32, NULL),
        ("num_prec_radix", INT32, NULL),
        ("interval_precision", INT32, NULL),
    ],
}


def assert_fields(schema: pa.Schema, expected: list[tuple[str, pa.DataType, bool]]) -> None:
    assert [f.name for f in schema] == [name for name, _, _ in expected]
    for field, (name, type_, nullable) in zip(schema, expected, strict=True):
        assert field.type.equals(type_), (name, field.type, type_)
        assert field.nullable is nullable, name
        assert not field.metadata, name
    assert not schema.metadata


@pytest.mark.parametrize("name", sorted(EXPECTED_FLAT))
def test_flat_schema_matches_reference(name: str) -> None:
    assert_fields(getattr(fs, name), EXPECTED_FLAT[name])


def test_xdbc_create_params_item_is_non_nullable_item() -> None:
    item = fs.GET_XDBC_TYPE_INFO.field("create_params").type.value_field
    assert (item.name, item.type, item.nullable) == ("item", UTF8, False)


def test_keys_schemas_are_one_schema() -> None:
    assert fs.GET_IMPORTED_KEYS.equals(fs.GET_EXPORTED_KEYS)
    assert fs.GET_IMPORTED_KEYS.equals(fs.GET_CROSS_REFERENCE)


def test_sql_info_schema_top_level() -> None:
    schema = fs.GET_SQL_INFO
    assert [f.name for f in schema] == ["info_name", "value"]
    assert schema.field("info_name").type == UINT32
    assert schema.field("info_name").nullable is False
    assert schema.field("value").nullable is False
    assert schema.field("value").type.equals(fs.SQL_INFO_VALUE_TYPE)
    assert not schema.metadata


def test_sql_info_union_children() -> None:
    union = fs.SQL_INFO_VALUE_TYPE
    assert isinstance(union, pa.DenseUnionType)
    assert union.mode == "dense"
    assert list(union.type_codes) == [0, 1, 2, 3, 4, 5]
    expected = [
        ("string_value", UTF8),
        ("bool_value", BOOL),
        ("bigint_value", INT64),
        ("int32_bitmask", INT32),
        ("string_list", pa.list_(UTF8)),
        ("int32_to_int32_list_map", pa.map_(INT32, pa.list_(INT32))),
    ]
    assert union.num_fields == len(expected)
    for index, (name, type_) in enumerate(expected):
        child = union.field(index)
        assert child.name == name
        assert child.type.equals(type_), name
        assert child.nullable is False, name
    for code in fs.SqlInfoValueCode:
        assert union.field(code).name == code.name.lower()


def test_sql_info_nested_field_names() -> None:
    union = fs.SQL_INFO_VALUE_TYPE
    item = union.field(fs.SqlInfoValueCode.STRING_LIST).type.value_field
    assert (item.name, item.type, item.nullable) == ("item", UTF8, True)

    map_type = union.field(fs.SqlInfoValueCode.INT32_TO_INT32_LIST_MAP).type
    assert isinstance(map_type, pa.MapType)
    assert map_type.keys_sorted is False
    entries = map_type.field(0)
    assert (entries.name, entries.nullable) == ("entries", False)
    key, value = map_type.key_field, map_type.item_field
    assert (key.name, key.type, key.nullable) == ("key", INT32, False)
    assert (value.name, value.nullable) == ("value", True)
    inner = value.type.value_field
    assert (inner.name, inner.type, inner.nullable) == ("item", INT32, True)


# --------------------------------------------------------------------------------------
# sql_info_batch
# --------------------------------------------------------------------------------------

ALL_KINDS = {
    SqlInfo.FLIGHT_SQL_SERVER_NAME: "meshgate",
    SqlInfo.FLIGHT_SQL_SERVER_READ_ONLY: True,
    SqlInfo.FLIGHT_SQL_SERVER_SQL: False,
    10_001: -(2**63),
    10_002: 2**63 - 1,
    SqlInfo.FLIGHT_SQL_SERVER_TRANSACTION: Int32Bitmask(fs.SqlSupportedTransaction.NONE),
    SqlInfo.SQL_SUPPORTED_GROUP_BY: Int32Bitmask(2**31 - 1),
    SqlInfo.SQL_KEYWORDS: ["SELECT", "FROM", ""],
    SqlInfo.SQL_NUMERIC_FUNCTIONS: [],
    SqlInfo.SQL_SUPPORTS_CONVERT: {4: [4, 5, -1], 12: [], 2**31 - 1: [-(2**31)]},
    10_003: {},
}


def check_batch(batch: pa.RecordBatch) -> None:
    batch.validate(full=True)
    assert batch.schema.equals(fs.GET_SQL_INFO)
    assert batch.column(1).type.equals(fs.SQL_INFO_VALUE_TYPE)
    union = batch.column(1)
    for code in fs.SqlInfoValueCode:
        assert union.field(code).null_count == 0


def as_python(value: object) -> object:
    if isinstance(value, dict):
        return list(value.items())
    return int(value) if isinstance(value, Int32Bitmask) else value


def test_round_trip_every_kind() -> None:
    batch = sql_info_batch(ALL_KINDS, None)
    check_batch(batch)
    assert batch.column(0).to_pylist() == sorted(ALL_KINDS)
    union = batch.column(1)
    expected_codes = {
        str: 0,
        bool: 1,
        int: 2,
        Int32Bitmask: 3,
        list: 4,
        dict: 5,
    }
    got = dict(zip(batch.column(0).to_pylist(), union.to_pylist(), strict=True))
    for row, info_id in enumerate(batch.column(0).to_pylist()):
        value = ALL_KINDS[info_id]
        assert union.type_codes[row].as_py() == expected_codes[type(value)], info_id
        assert got[info_id] == as_python(value)
        assert type(got[info_id]) is type(as_python(value))


def test_offsets_index_each_child_densely() -> None:
    values = {10_001: "a", 10_002: True, 10_003: "b", 10_004: False, 10_005: "c"}
    batch = sql_info_batch(values, None)
    check_batch(batch)
    union = batch.column(1)
    assert union.type_codes.to_pylist() == [0, 1, 0, 1, 0]
    assert union.offsets.to_pylist() == [0, 0, 1, 1, 2]
    assert len(union.field(0)) == 3 and len(union.field(1)) == 2
    for code in (2, 3, 4, 5):
        assert len(union.field(code)) == 0


def test_survives_ipc_round_trip() -> None:
    batch = sql_info_batch(ALL_KINDS, None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    read = pa.ipc.open_stream(sink.getvalue()).read_all()
    assert read.schema.equals(fs.GET_SQL_INFO)
    assert read.to_batches()[0].equals(batch)
    union = read.schema.field("value").type
    assert union.field(4).type.value_field.name == "item"
    assert union.field(5).type.item_field.type.value_field.name == "item"


@pytest.mark.parametrize("requested", [None, []])
def test_nothing_requested_means_all_known_ids_ascending(requested: list[int] | None) -> None:
    batch = sql_info_batch({9: True, 0: "x", 504: '"'}, requested)
    check_batch(batch)
    assert batch.column(0).to_pylist() == [0, 9, 504]


def test_requested_order_kept_unknown_skipped_duplicates_once() -> None:
    values = {0: "meshgate", 1: "0.1.0", 3: True, 8: Int32Bitmask(0)}
    batch = sql_info_batch(values, [8, 424242, 0, 8, 7])
    check_batch(batch)
    assert batch.column(0).to_pylist() == [8, 0]
    assert batch.column(1).to_pylist() == [0, "meshgate"]


def test_only_unknown_requested_gives_empty_valid_batch() -> None:
    batch = sql_info_batch({0: "meshgate"}, [5, 6])
    check_batch(batch)
    assert batch.num_rows == 0


def test_empty_values() -> None:
    batch = sql_info_batch({}, None)
    check_batch(batch)
    assert batch.num_rows == 0


def test_adbc_connect_probe_reads_int32_child() -> None:
    # What the ADBC driver does on connect: request [8], then read child 3 as int32 at
    # the row's offset when the row's type code is 3.
    batch = sql_info_batch(
        {8: Int32Bitmask(fs.SqlSupportedTransaction.TRANSACTION), 0: "meshgate"}, [8]
    )
    union = batch.column(1)
    assert union.type.field(3).type == INT32
    assert union.type_codes[0].as_py() == 3
    assert union.field(3)[union.offsets[0].as_py()].as_py() == 1


@pytest.mark.parametrize(
    ("info_id", "value"),
    [
        (SqlInfo.FLIGHT_SQL_SERVER_TRANSACTION, 1),  # plain int would be int64
        (SqlInfo.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT, 0),
        (SqlInfo.FLIGHT_SQL_SERVER_NAME, True),
        (SqlInfo.FLIGHT_SQL_SERVER_SQL, "true"),
        (SqlInfo.SQL_KEYWORDS, "SELECT"),
        (SqlInfo.SQL_SUPPORTS_CONVERT, ["x"]),
        (SqlInfo.SQL_IDENTIFIER_QUOTE_CHAR, Int32Bitmask(34)),
    ],
)
def test_spec_kind_enforced_for_known_ids(info_id: int, value: object) -> None:
    with pytest.raises(TypeError, match=f"\\({int(info_id)}\\) must be"):
        sql_info_batch({info_id: value}, None)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, ValueError),
        (1.5, TypeError),
        (b"bytes", TypeError),
        (2**63, ValueError),
        (["a", 1], TypeError),
        ({1: [2**31]}, ValueError),
        ({2**31: []}, ValueError),
        ({1: 2}, TypeError),
        ({"a": [1]}, TypeError),
        ({1: [True]}, TypeError),
        ((1, 2), TypeError),
    ],
)
def test_unencodable_values_rejected(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        sql_info_batch({10_000: value}, None)


@pytest.mark.parametrize("info_id", [-1, 2**32, True, "0"])
def test_bad_ids_rejected(info_id: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        sql_info_batch({info_id: "x"}, None)  # type: ignore[dict-item]


def test_unencodable_value_rejected_even_when_not_requested() -> None:
    with pytest.raises(TypeError):
        sql_info_batch({0: "ok", 10_000: 1.5}, [0])


def test_int32_bitmask_range_and_type() -> None:
    assert Int32Bitmask(-(2**31)) == -(2**31)
    assert repr(Int32Bitmask(5)) == "Int32Bitmask(5)"
    with pytest.raises(ValueError):
        Int32Bitmask(2**31)
    with pytest.raises(TypeError):
        Int32Bitmask(True)
    with pytest.raises(TypeError):
        Int32Bitmask(1.0)  # type: ignore[arg-type]


def test_spec_ids_and_kinds_spot_checks() -> None:
    assert SqlInfo.FLIGHT_SQL_SERVER_TRANSACTION == 8
    assert SqlInfo.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT == 100
    assert SqlInfo.SQL_DDL_CATALOG == 500
    assert SqlInfo.SQL_SUPPORTS_CONVERT == 517
    assert SqlInfo.SQL_CATALOG_AT_START == 532
    kinds = fs.SQL_INFO_VALUE_KINDS
    assert kinds[8] is fs.SqlInfoValueCode.INT32_BITMASK
    assert kinds[0] is fs.SqlInfoValueCode.STRING_VALUE
    assert kinds[4] is fs.SqlInfoValueCode.BOOL_VALUE
    assert kinds[517] is fs.SqlInfoValueCode.INT32_TO_INT32_LIST_MAP
    assert set(kinds) == {int(i) for i in SqlInfo}


# --------------------------------------------------------------------------------------
# table_schema_bytes
# --------------------------------------------------------------------------------------


def table_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field(
                "id",
                INT64,
                nullable=False,
                metadata={"ARROW:FLIGHT:SQL:TYPE_NAME": "BIGINT"},
            ),
            pa.field("tags", pa.list_(UTF8)),
            pa.field("amount", pa.decimal128(18, 2)),
            pa.field("seen", pa.timestamp("us", tz="UTC")),
        ],
        metadata={"owner": "mesh"},
    )


def test_table_schema_bytes_is_one_encapsulated_ipc_schema_message() -> None:
    data = fs.table_schema_bytes(table_schema())
    assert isinstance(data, bytes)
    assert data[:4] == b"\xff\xff\xff\xff"  # continuation marker
    metadata_length = int.from_bytes(data[4:8], "little")
    assert 8 + metadata_length == len(data)  # no body, no end-of-stream marker
    assert len(data) % 8 == 0
    message = pa.ipc.read_message(pa.py_buffer(data))
    assert message.type == "schema"


def test_table_schema_bytes_round_trip_keeps_metadata() -> None:
    schema = table_schema()
    data = fs.table_schema_bytes(schema)
    read = pa.ipc.read_schema(pa.py_buffer(data))
    assert read.equals(schema, check_metadata=True)
    assert read.field("id").metadata == {b"ARROW:FLIGHT:SQL:TYPE_NAME": b"BIGINT"}
    # What the Go driver does (ipc.NewReader over the cell): read it as a stream.
    assert pa.ipc.open_stream(data).schema.equals(schema, check_metadata=True)


def test_table_schema_bytes_fit_get_tables_with_schema() -> None:
    cell = fs.table_schema_bytes(table_schema())
    batch = pa.RecordBatch.from_pylist(
        [
            {
                "catalog_name": None,
                "db_schema_name": "sales",
                "table_name": "orders",
                "table_type": "TABLE",
                "table_schema": cell,
            }
        ],
        schema=fs.GET_TABLES_WITH_SCHEMA,
    )
    batch.validate(full=True)
    assert batch.schema.equals(fs.GET_TABLES_WITH_SCHEMA)
