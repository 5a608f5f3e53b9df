"""Plain ``pyarrow.flight`` and ``gateway.client`` against the real gateway."""

from __future__ import annotations

import secrets

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import flight_client

from gateway.client import connect as mesh_connect
from gateway.flightsql import flightsql_pb2 as pb

#: What a refused Flight call raises in pyarrow: FlightError for Flight statuses,
#: ArrowException subclasses for INVALID_ARGUMENT / NOT_FOUND / UNIMPLEMENTED.
REFUSED = (flight.FlightError, pa.ArrowException)


def descriptor(sql: str) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(sql.encode("utf-8"))


def pack(message) -> bytes:
    from google.protobuf import any_pb2

    envelope = any_pb2.Any()
    envelope.Pack(message)
    return envelope.SerializeToString()


@pytest.fixture(scope="module")
def bob(gateway):
    client, options = flight_client(gateway.uri, "bob")
    yield client, options
    client.close()


@pytest.fixture(scope="module")
def alice(gateway):
    client, options = flight_client(gateway.uri, "alice")
    yield client, options
    client.close()


def test_raw_sql_descriptor_flight_info_then_do_get_read_pandas(bob, direct_arrow):
    client, options = bob
    sql = "SELECT region, count(*) AS n, sum(amount) AS total FROM sales.orders GROUP BY region ORDER BY region"
    info = client.get_flight_info(descriptor(sql), options)
    assert len(info.endpoints) == 1
    assert info.descriptor.command == sql.encode()
    frame = client.do_get(info.endpoints[0].ticket, options).read_pandas()
    expected = direct_arrow(sql).to_pandas()
    assert list(frame["region"]) == ["APAC", "EU", "US"]
    assert frame["n"].sum() == 200_000
    pd.testing.assert_frame_equal(frame, expected)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM sales.orders LIMIT 10",
        "SELECT * FROM crm.customers WHERE customer_id < 0",
        "SELECT * FROM logistics.shipments ORDER BY shipment_id LIMIT 3",
        (
            "SELECT c.region, sum(o.amount) AS s, avg(o.amount) AS a FROM sales.orders o "
            "JOIN crm.customers c USING (customer_id) GROUP BY 1"
        ),
        "SELECT NULL AS nothing, [1, 2] AS l, {'a': 1} AS s, INTERVAL 1 DAY AS i, 1::HUGEINT AS h",
    ],
)
def test_flight_info_schema_equals_stream_schema(bob, direct_arrow, sql):
    client, options = bob
    info = client.get_flight_info(descriptor(sql), options)
    reader = client.do_get(info.endpoints[0].ticket, options)
    table = reader.read_all()
    assert info.schema.equals(reader.schema)
    assert table.schema.equals(info.schema)
    assert info.schema.types == direct_arrow(sql).schema.types


def test_raw_sql_ticket_directly_in_do_get(bob):
    client, options = bob
    table = client.do_get(flight.Ticket(b"SELECT 1 AS x"), options).read_all()
    assert table.column_names == ["x"]
    assert table.to_pylist() == [{"x": 1}]


def test_raw_sql_ticket_reads_products(bob, direct_arrow):
    client, options = bob
    sql = "SELECT carrier, count(*) AS n FROM logistics.shipments GROUP BY carrier ORDER BY carrier"
    table = client.do_get(flight.Ticket(sql.encode()), options).read_all()
    assert table.equals(direct_arrow(sql))


def test_gateway_client_query_pandas_and_arrow(gateway, direct_arrow):
    sql = "SELECT * FROM crm.customers WHERE customer_id BETWEEN 100 AND 199 ORDER BY customer_id"
    expected = direct_arrow(sql)
    with mesh_connect(gateway.uri, "bob", "bob") as mesh:
        table = mesh.query_arrow(sql)
        frame = mesh.query_pandas(sql)
        reader = mesh.query_reader("SELECT * FROM sales.orders")
        rows = sum(batch.num_rows for batch in reader)
    assert table.num_rows == 100
    assert table.equals(expected)
    pd.testing.assert_frame_equal(frame, expected.to_pandas())
    assert rows == 200_000


def test_gateway_client_wrong_password(gateway):
    with pytest.raises(flight.FlightUnauthenticatedError):
        mesh_connect(gateway.uri, "bob", "not-bob")


def test_ticket_replayed_by_another_user_is_refused(bob, alice):
    bob_client, bob_options = bob
    alice_client, alice_options = alice
    info = bob_client.get_flight_info(
        descriptor("SELECT count(*) AS n FROM sales.orders"), bob_options
    )
    ticket = info.endpoints[0].ticket
    with pytest.raises(REFUSED) as refused:
        alice_client.do_get(ticket, alice_options).read_all()
    assert "unknown or expired ticket" in str(refused.value)
    # The ticket was valid: its owner can still use it.
    assert bob_client.do_get(ticket, bob_options).read_all().to_pylist() == [{"n": 200_000}]


def test_replayed_ticket_looks_like_an_unknown_one(bob, alice):
    """Another user's ticket is answered exactly like a ticket that never existed."""
    bob_client, bob_options = bob
    alice_client, alice_options = alice
    real = bob_client.get_flight_info(descriptor("SELECT 1 AS x"), bob_options).endpoints[0].ticket
    forged = flight.Ticket(pack(pb.TicketStatementQuery(statement_handle=secrets.token_bytes(16))))
    with pytest.raises(REFUSED) as replay:
        alice_client.do_get(real, alice_options).read_all()
    with pytest.raises(REFUSED) as unknown:
        alice_client.do_get(forged, alice_options).read_all()
    assert type(replay.value) is type(unknown.value)
    assert str(replay.value).split(". gRPC")[0] == str(unknown.value).split(". gRPC")[0]


def test_prepared_statement_of_another_user_is_refused(bob, alice):
    bob_client, bob_options = bob
    alice_client, alice_options = alice
    request = pb.ActionCreatePreparedStatementRequest(
        query="SELECT count(*) AS n FROM crm.customers"
    )
    results = list(
        bob_client.do_action(flight.Action("CreatePreparedStatement", pack(request)), bob_options)
    )
    from google.protobuf import any_pb2

    envelope = any_pb2.Any()
    envelope.ParseFromString(results[0].body.to_pybytes())
    created = pb.ActionCreatePreparedStatementResult()
    assert envelope.Unpack(created)
    command = flight.FlightDescriptor.for_command(
        pack(
            pb.CommandPreparedStatementQuery(
                prepared_statement_handle=created.prepared_statement_handle
            )
        )
    )
    with pytest.raises(REFUSED) as refused:
        alice_client.get_flight_info(command, alice_options)
    assert "unknown or expired prepared statement" in str(refused.value)
    info = bob_client.get_flight_info(command, bob_options)
    assert bob_client.do_get(info.endpoints[0].ticket, bob_options).read_all().to_pylist() == [
        {"n": 20_000}
    ]


def test_get_schema_on_a_descriptor(bob):
    client, options = bob
    result = client.get_schema(
        descriptor("SELECT order_id, amount, order_date FROM sales.orders"), options
    )
    assert result.schema.equals(
        pa.schema(
            [
                ("order_id", pa.int64()),
                ("amount", pa.decimal128(12, 2)),
                ("order_date", pa.date32()),
            ]
        )
    )


def test_get_schema_reads_no_data_and_reports_errors(bob):
    client, options = bob
    with pytest.raises(REFUSED) as failed:
        client.get_schema(descriptor("SELECT nope FROM sales.orders"), options)
    assert "nope" in str(failed.value)


def test_undecodable_ticket_is_refused_cleanly(bob):
    client, options = bob
    with pytest.raises(REFUSED) as refused:
        client.do_get(flight.Ticket(b"\xff\xfe\x00garbage"), options).read_all()
    assert "neither a Flight SQL message nor UTF-8 SQL" in str(refused.value)
    assert "Traceback" not in str(refused.value)


def test_list_flights_is_not_supported(bob):
    client, options = bob
    with pytest.raises(REFUSED) as refused:
        list(client.list_flights(options=options))
    assert "not supported" in str(refused.value)


def test_list_actions_names_prepared_statement_actions(bob):
    client, options = bob
    names = {action.type for action in client.list_actions(options)}
    assert {"CreatePreparedStatement", "ClosePreparedStatement"} <= names


# --------------------------------------------------------------------------- Flight SQL metadata


def _metadata(client, options, message) -> pa.Table:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(message)), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.schema.equals(info.schema)
    return table


def test_get_primary_keys_from_contracts(bob):
    client, options = bob
    keys = {}
    for domain, table in (("sales", "orders"), ("crm", "customers"), ("logistics", "shipments")):
        rows = _metadata(
            client, options, pb.CommandGetPrimaryKeys(db_schema=domain, table=table)
        ).to_pylist()
        keys[f"{domain}.{table}"] = [
            (r["catalog_name"], r["column_name"], r["key_sequence"]) for r in rows
        ]
    assert keys == {
        "sales.orders": [("mesh", "order_id", 1)],
        "crm.customers": [("mesh", "customer_id", 1)],
        "logistics.shipments": [("mesh", "shipment_id", 1)],
    }


def test_get_tables_with_schema(bob):
    client, options = bob
    table = _metadata(
        client, options, pb.CommandGetTables(include_schema=True, table_name_filter_pattern="ship%")
    )
    rows = table.to_pylist()
    assert [
        (r["catalog_name"], r["db_schema_name"], r["table_name"], r["table_type"]) for r in rows
    ] == [("mesh", "logistics", "shipments", "TABLE")]
    schema = pa.ipc.read_schema(pa.py_buffer(rows[0]["table_schema"]))
    assert schema.names == ["shipment_id", "order_id", "carrier", "shipped_at", "region"]
    assert schema.field("shipped_at").type == pa.timestamp("us")


def test_sql_info_says_read_only_meshgate(bob):
    client, options = bob
    rows = _metadata(
        client,
        options,
        pb.CommandGetSqlInfo(info=[pb.FLIGHT_SQL_SERVER_NAME, pb.FLIGHT_SQL_SERVER_READ_ONLY]),
    ).to_pylist()
    values = {r["info_name"]: r["value"] for r in rows}
    assert values == {pb.FLIGHT_SQL_SERVER_NAME: "Meshgate", pb.FLIGHT_SQL_SERVER_READ_ONLY: True}


def test_get_catalogs_and_db_schemas(bob):
    client, options = bob
    assert _metadata(client, options, pb.CommandGetCatalogs()).to_pylist() == [
        {"catalog_name": "mesh"}
    ]
    domains = _metadata(client, options, pb.CommandGetDbSchemas(catalog="mesh")).to_pylist()
    assert [d["db_schema_name"] for d in domains] == ["crm", "logistics", "sales"]


def test_do_put_of_raw_sql_is_refused_as_read_only(bob):
    client, options = bob
    data = pa.table({"x": [1]})
    with pytest.raises(REFUSED) as refused:
        writer, _ = client.do_put(
            descriptor("INSERT INTO sales.orders VALUES (1)"), data.schema, options
        )
        writer.write_table(data)
        writer.close()
    assert "read-only" in str(refused.value)
