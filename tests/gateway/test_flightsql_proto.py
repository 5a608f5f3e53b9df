"""The committed Flight SQL protobuf module: in sync with its .proto, and on the wire contract.

Wire facts below are the ones Flight SQL clients (ADBC, JDBC) depend on; their
values come from the Apache Arrow specification (format/FlightSql.proto).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2

from gateway.flightsql import flightsql_pb2 as pb

GATEWAY_DIR = Path(pb.__file__).resolve().parent


def _field_numbers(message_cls: type) -> dict[str, int]:
    return {f.name: f.number for f in message_cls.DESCRIPTOR.fields}


def test_committed_gencode_matches_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    from gateway.flightsql.proto_build import compile_proto

    generated = compile_proto(tmp_path)

    assert generated == tmp_path / "gateway" / "flightsql" / "flightsql_pb2.py"
    hint = (
        "stale generated code: run `python -m gateway.flightsql.proto_build` and commit the result"
    )
    assert generated.read_bytes() == (GATEWAY_DIR / "flightsql_pb2.py").read_bytes(), hint
    stub = generated.with_suffix(".pyi")
    assert stub.read_bytes() == (GATEWAY_DIR / "flightsql_pb2.pyi").read_bytes(), hint


def test_module_depends_on_nothing_but_protobuf() -> None:
    assert pb.DESCRIPTOR.name == "gateway/flightsql/flightsql.proto"
    assert pb.DESCRIPTOR.package == "arrow.flight.protocol.sql"
    assert list(pb.DESCRIPTOR.dependencies) == []


def test_any_type_url_of_statement_query() -> None:
    wrapped = any_pb2.Any()
    wrapped.Pack(pb.CommandStatementQuery(query="SELECT 1"))

    assert wrapped.type_url == "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    unpacked = pb.CommandStatementQuery()
    assert wrapped.Unpack(unpacked)
    assert unpacked.query == "SELECT 1"
    assert not unpacked.HasField("transaction_id")


@pytest.mark.parametrize(
    ("message_cls", "expected"),
    [
        (
            pb.ActionCreatePreparedStatementResult,
            {
                "prepared_statement_handle": 1,
                "dataset_schema": 2,
                "parameter_schema": 3,
                "is_update": 4,
            },
        ),
        (
            pb.CommandGetTables,
            {
                "catalog": 1,
                "db_schema_filter_pattern": 2,
                "table_name_filter_pattern": 3,
                "table_types": 4,
                "include_schema": 5,
            },
        ),
        (pb.CommandStatementQuery, {"query": 1, "transaction_id": 2}),
        (pb.CommandPreparedStatementQuery, {"prepared_statement_handle": 1}),
        (pb.TicketStatementQuery, {"statement_handle": 1}),
        (pb.DoPutUpdateResult, {"record_count": 1}),
        (
            pb.CommandStatementIngest,
            {
                "table_definition_options": 1,
                "table": 2,
                "schema": 3,
                "catalog": 4,
                "temporary": 5,
                "transaction_id": 6,
                "options": 1000,
            },
        ),
    ],
)
def test_field_numbers(message_cls: type, expected: dict[str, int]) -> None:
    assert _field_numbers(message_cls) == expected


def test_optional_presence_is_tracked() -> None:
    # An unset catalog means "do not filter"; an empty one means "no catalog".
    unset = pb.CommandGetTables()
    empty = pb.CommandGetTables(catalog="")
    assert not unset.HasField("catalog")
    assert empty.HasField("catalog")
    assert not unset.HasField("db_schema_filter_pattern")

    decoded = pb.CommandGetTables.FromString(empty.SerializeToString())
    assert decoded.HasField("catalog") and decoded.catalog == ""


def test_sql_info_ids() -> None:
    assert pb.SqlInfo.Value("FLIGHT_SQL_SERVER_NAME") == 0
    assert pb.FLIGHT_SQL_SERVER_NAME == 0
    assert pb.FLIGHT_SQL_SERVER_VERSION == 1
    assert pb.FLIGHT_SQL_SERVER_ARROW_VERSION == 2
    assert pb.FLIGHT_SQL_SERVER_READ_ONLY == 3
    assert pb.FLIGHT_SQL_SERVER_TRANSACTION == 8
    assert pb.FLIGHT_SQL_SERVER_BULK_INGESTION == 10
    assert pb.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT == 100
    assert pb.SQL_DDL_CATALOG == 500
    assert pb.SQL_IDENTIFIER_QUOTE_CHAR == 504
    assert pb.SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED == 576
    assert len(pb.SqlInfo.keys()) == 91


def test_nested_enum_values() -> None:
    options = pb.CommandStatementIngest.TableDefinitionOptions
    assert options.TABLE_NOT_EXIST_OPTION_CREATE == 1
    assert options.TABLE_EXISTS_OPTION_APPEND == 2
    assert options.TABLE_EXISTS_OPTION_REPLACE == 3
    assert pb.ActionEndTransactionRequest.END_TRANSACTION_COMMIT == 1
    assert pb.ActionEndTransactionRequest.END_TRANSACTION_ROLLBACK == 2
    assert pb.SQL_SUPPORTED_TRANSACTION_TRANSACTION == 1
