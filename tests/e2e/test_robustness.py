"""Odd but legal requests get a result or a clean, specific error from a real gateway:
never INTERNAL, never a broken stream, never internals in the message (issue 11, point 7)."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, error_text, flight_client
from support.logs import log_records

#: Nested ENUM results: a list, a struct, a map key, a list of an aggregated enum column.
NESTED_ENUMS = {
    "list_literal": "SELECT [CAST('a' AS ENUM('a', 'b'))] AS l",
    "struct": "SELECT {'x': CAST('b' AS ENUM('a', 'b'))} AS s",
    "map": "SELECT MAP {CAST('a' AS ENUM('a', 'b')): 1} AS m",
    "list_of_column": (
        "SELECT list(CAST(region AS ENUM('EU', 'US', 'APAC')) ORDER BY customer_id) AS l "
        "FROM (SELECT * FROM crm.customers ORDER BY customer_id LIMIT 5)"
    ),
    "list_in_list": "SELECT [[CAST('a' AS ENUM('a', 'b')), NULL]] AS ll",
}


@pytest.fixture(scope="module")
def bob_flight(gateway):
    client, options = flight_client(gateway.uri, "bob")
    yield client, options
    client.close()


def _internal_errors(gateway) -> int:
    return len(log_records(gateway.log(), "internal_error"))


@pytest.mark.parametrize("sql", list(NESTED_ENUMS.values()), ids=list(NESTED_ENUMS))
def test_enum_nested_in_a_result_streams_as_its_values(gateway, bob_flight, direct_arrow, sql):
    """DuckDB sends an ENUM inside a list/struct/map as a nested Arrow dictionary, which a
    Flight generator stream cannot carry: the gateway sends the values instead."""
    expected = direct_arrow(sql).to_pylist()
    client, options = bob_flight
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    got = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert got.to_pylist() == expected
    assert got.schema == info.schema
    with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetch_arrow_table().to_pylist() == expected


def test_nested_enum_is_announced_as_plain_strings(bob_flight):
    client, options = bob_flight
    descriptor = flight.FlightDescriptor.for_command(NESTED_ENUMS["list_literal"].encode())
    schema = client.get_schema(descriptor, options).schema
    assert schema.field("l").type == pa.list_(pa.field("l", pa.string()))


def test_path_descriptor_is_not_supported_cleanly(gateway, bob_flight):
    client, options = bob_flight
    before = _internal_errors(gateway)
    path = flight.FlightDescriptor.for_path("sales", "orders")
    calls = {
        "GetFlightInfo": lambda: client.get_flight_info(path, options),
        "GetSchema": lambda: client.get_schema(path, options),
        "DoPut": lambda: _put(client, options, path),
    }
    for rpc, call in calls.items():
        with pytest.raises(pa.ArrowNotImplementedError) as caught:
            call()
        text = str(caught.value)
        assert "path descriptor" in text.lower(), f"{rpc}: {text}"
        assert "command" in text.lower(), f"{rpc} does not say what to send instead: {text}"
        assert "internal" not in text.lower(), f"{rpc}: {text}"
    assert _internal_errors(gateway) == before


def _put(client, options, descriptor) -> None:
    writer, _reader = client.do_put(descriptor, pa.schema([("a", pa.int64())]), options)
    writer.write_table(pa.table({"a": [1]}))
    writer.close()


def test_do_put_of_an_unsupported_command_is_refused_cleanly(gateway, bob_flight):
    """DoPut with a metadata command or a ticket: not a write, not a parameter binding."""
    from gateway.flightsql import flightsql_pb2 as pb
    from gateway.flightsql import protocol as flightsql

    client, options = bob_flight
    before = _internal_errors(gateway)
    for message in (pb.CommandGetCatalogs(), pb.TicketStatementQuery(statement_handle=b"x")):
        descriptor = flight.FlightDescriptor.for_command(flightsql.pack(message))
        with pytest.raises(pa.ArrowNotImplementedError) as caught:
            _put(client, options, descriptor)
        assert "DoPut" in str(caught.value) and "not supported" in str(caught.value)
    assert _internal_errors(gateway) == before


DATE32_MAX = 2_147_483_647


def test_out_of_range_date_parameter_is_a_clean_error(gateway):
    """A DATE parameter that Python cannot represent (date32 max) is refused naming the
    parameter, not answered INTERNAL."""
    before = _internal_errors(gateway)
    parameters = pa.record_batch([pa.array([DATE32_MAX], pa.date32())], names=["d"])
    with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT ? AS d", parameters)
            cur.fetchall()
        text = error_text(caught.value)
        assert not isinstance(caught.value, adbc_driver_manager.InternalError), text
        assert "internal error" not in text.lower(), text
        assert "parameter 1" in text and "out of range" in text, text
        valid = pa.record_batch([pa.array([19_000], pa.date32())], names=["d"])
        cur.execute("SELECT ? AS d", valid)
        assert cur.fetchall()[0][0].isoformat() == "2022-01-08"
    assert _internal_errors(gateway) == before
