"""A prepared statement's parameter schema carries the types DuckDB infers for the
parameters (ADBC ``adbc_prepare`` and the raw CreatePreparedStatement action)."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, flight_client

from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql.protocol import pack

BY_ID_AND_AMOUNT = "SELECT * FROM sales.orders WHERE order_id = ? AND amount > ?"


@pytest.fixture(scope="module")
def connections(gateway):
    opened = {user: adbc_connect(gateway.uri, user) for user in ("bob", "alice", "erin")}
    yield opened
    for conn in opened.values():
        conn.close()


def parameter_types(conn, sql: str) -> list[pa.DataType]:
    cur = conn.cursor()
    try:
        schema = cur.adbc_prepare(sql)
    finally:
        cur.close()
    assert schema.names == [f"${n}" for n in range(1, len(schema) + 1)]
    return schema.types


def test_order_id_and_amount_parameters_are_bigint_and_decimal(connections):
    assert parameter_types(connections["bob"], BY_ID_AND_AMOUNT) == [
        pa.int64(),
        pa.decimal128(12, 2),
    ]


def test_raw_create_prepared_statement_answers_the_typed_parameter_schema(gateway):
    client, options = flight_client(gateway.uri, "bob")
    try:
        request = pb.ActionCreatePreparedStatementRequest(query=BY_ID_AND_AMOUNT)
        results = list(
            client.do_action(flight.Action("CreatePreparedStatement", pack(request)), options)
        )
        answer = pb.ActionCreatePreparedStatementResult()
        assert pb_any(results[0].body.to_pybytes()).Unpack(answer)
        schema = pa.ipc.read_schema(pa.py_buffer(answer.parameter_schema))
        close = pb.ActionClosePreparedStatementRequest(
            prepared_statement_handle=answer.prepared_statement_handle
        )
        list(client.do_action(flight.Action("ClosePreparedStatement", pack(close)), options))
    finally:
        client.close()
    assert list(zip(schema.names, schema.types, strict=True)) == [
        ("$1", pa.int64()),
        ("$2", pa.decimal128(12, 2)),
    ]


def pb_any(raw: bytes):
    from google.protobuf import any_pb2

    envelope = any_pb2.Any()
    envelope.ParseFromString(raw)
    return envelope


def test_types_across_a_join_of_parquet_and_duckdb_products_and_in_ctes(connections):
    bob = connections["bob"]
    joined = (
        "SELECT count(*) FROM sales.orders o JOIN crm.customers c USING (customer_id) "
        "WHERE c.email LIKE ? AND o.order_date < ? AND c.customer_id = ?"
    )
    assert parameter_types(bob, joined) == [pa.string(), pa.date32(), pa.int64()]
    cte = (
        "WITH eu AS (SELECT * FROM sales.orders WHERE region = $1) "
        "SELECT count(*) FROM eu WHERE amount > $2 LIMIT $3"
    )
    assert parameter_types(bob, cte) == [pa.string(), pa.decimal128(12, 2), pa.int64()]
    shipped = "SELECT count(*) FROM logistics.shipments WHERE shipped_at >= ?"
    assert parameter_types(bob, shipped) == [pa.timestamp("us")]


def test_types_follow_what_the_user_reads(connections):
    # the same statement under a row filter (alice) and a mask (erin) binds the same way
    for user in ("alice", "erin"):
        assert parameter_types(connections[user], BY_ID_AND_AMOUNT) == [
            pa.int64(),
            pa.decimal128(12, 2),
        ], user


def test_a_parameter_duckdb_cannot_type_stays_null_and_still_binds(connections):
    bob = connections["bob"]
    assert parameter_types(bob, "SELECT ? AS x, order_id FROM sales.orders LIMIT 1") == [pa.null()]
    # one parameter meeting two types: DuckDB's binder says both, so neither is announced
    two = "SELECT count(*) FROM sales.orders WHERE order_id = $1 OR region = $1 OR amount > $2"
    assert parameter_types(bob, two) == [pa.null(), pa.decimal128(12, 2)]
    cur = bob.cursor()
    try:
        cur.execute("SELECT ? AS x, count(*) AS n FROM sales.orders WHERE order_id = ?", ("a", 7))
        assert cur.fetchall() == [("a", 1)]
    finally:
        cur.close()


def test_values_of_the_announced_types_bind_and_filter(connections):
    cur = connections["bob"].cursor()
    try:
        cur.execute(
            "SELECT count(*) FROM sales.orders WHERE order_id <= ? AND amount > ? "
            "AND order_date >= ?",
            (1000, decimal.Decimal("2500.00"), datetime.date(2024, 1, 1)),
        )
        (count,) = cur.fetchone()
        cur.execute(
            "SELECT count(*) FROM sales.orders WHERE order_id <= 1000 AND amount > 2500.00 "
            "AND order_date >= DATE '2024-01-01'"
        )
        assert cur.fetchone() == (count,)
        assert count > 0
    finally:
        cur.close()
