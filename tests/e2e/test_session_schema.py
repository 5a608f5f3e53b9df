"""A session's default schema (ADBC's current db_schema, Flight's SetSessionOptions):
unqualified product names resolve against it, governed exactly as qualified ones."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, flight_client, message

from gateway.flightsql import flightsql_pb2 as pb

DENIED = (
    "unknown product sales.orders (or you may not read it); `meshgate products --user <you>` "
    "lists the products you can read"
)


def with_schema(uri: str, user: str, schema: str | None = "sales"):
    conn = adbc_connect(uri, user)
    if schema is not None:
        conn.adbc_current_db_schema = schema
    return conn


def rows(conn, sql: str, params: tuple | None = None) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()
    finally:
        cur.close()


def refusal(conn, sql: str) -> str:
    cur = conn.cursor()
    try:
        with pytest.raises(adbc_driver_manager.Error) as refused:
            cur.execute(sql)
            cur.fetchall()
    finally:
        cur.close()
    return message(refused.value)


def test_bob_counts_orders_by_their_bare_name(gateway):
    conn = with_schema(gateway.uri, "bob")
    try:
        assert conn.adbc_current_db_schema == "sales"
        assert conn.adbc_current_catalog == "mesh"
        assert rows(conn, "SELECT count(*) FROM orders") == [(200_000,)]
        assert rows(conn, 'SELECT count(*) FROM "Orders" AS o WHERE o.amount > 0') == [(200_000,)]
        # qualified names keep working beside bare ones
        joined = (
            "SELECT count(*) FROM orders JOIN crm.customers USING (customer_id) "
            "WHERE orders.region = 'EU'"
        )
        assert rows(conn, joined) == rows(
            conn,
            "SELECT count(*) FROM sales.orders JOIN crm.customers USING (customer_id) "
            "WHERE sales.orders.region = 'EU'",
        )
    finally:
        conn.close()


def test_alice_sees_only_eu_rows_through_the_bare_name(gateway):
    conn = with_schema(gateway.uri, "alice")
    try:
        assert rows(conn, "SELECT DISTINCT region FROM orders") == [("EU",)]
        assert rows(conn, "SELECT count(*) FROM orders") == rows(
            conn, "SELECT count(*) FROM sales.orders"
        )
        (eu,) = rows(conn, "SELECT count(*) FROM orders")[0]
        assert eu < 200_000
    finally:
        conn.close()


def test_carol_gets_the_same_refusal_as_for_the_qualified_name(gateway):
    conn = with_schema(gateway.uri, "carol")
    try:
        bare = refusal(conn, "SELECT count(*) FROM orders")
        qualified = refusal(conn, "SELECT count(*) FROM sales.orders")
        assert bare == qualified
        assert DENIED in bare
        # a product that does not exist reads the same as one she may not read
        assert refusal(conn, "SELECT * FROM nothing_here").replace(
            "sales.nothing_here", "sales.orders"
        ) == refusal(conn, "SELECT count(*) FROM orders")
        # and what she may read is there, qualified
        assert rows(conn, "SELECT count(*) FROM crm.customers") == [(20_000,)]
    finally:
        conn.close()


def test_a_cte_shadows_the_product_of_the_same_name(gateway):
    conn = with_schema(gateway.uri, "bob")
    try:
        assert rows(conn, "WITH orders AS (SELECT 42 AS n) SELECT n FROM orders") == [(42,)]
        nested = (
            "WITH orders AS (SELECT 1 AS n) "
            "SELECT (SELECT count(*) FROM sales.orders) AS products, n FROM orders"
        )
        assert rows(conn, nested) == [(200_000, 1)]
    finally:
        conn.close()


def test_without_a_schema_bare_names_are_refused_as_before(gateway):
    conn = with_schema(gateway.uri, "bob", schema=None)
    try:
        text = refusal(conn, "SELECT count(*) FROM orders")
        assert "unknown product 'orders': address products as <domain>.<product>" in text
        assert "did you mean sales.orders" in text
    finally:
        conn.close()


def test_the_same_text_means_each_sessions_own_schema(gateway):
    sales = with_schema(gateway.uri, "bob", "sales")
    logistics = with_schema(gateway.uri, "bob", "logistics")
    try:
        sql = "SELECT count(*) AS n FROM orders"
        assert rows(sales, sql) == [(200_000,)]
        # the plan cached for the sales session is not the logistics session's
        assert "unknown product logistics.orders (or you may not read it)" in refusal(
            logistics, sql
        )
        assert rows(logistics, "SELECT count(*) AS n FROM shipments") == [(150_000,)]
        assert rows(sales, sql) == [(200_000,)]
    finally:
        sales.close()
        logistics.close()


def test_switching_schema_and_prepared_statements_keep_their_schema(gateway):
    conn = with_schema(gateway.uri, "bob", "sales")
    try:
        cur = conn.cursor()
        schema = cur.adbc_prepare("SELECT count(*) FROM orders WHERE order_id <= ?")
        assert [str(t) for t in schema.types] == ["int64"]
        cur.execute("SELECT count(*) FROM orders WHERE order_id <= ?", (10,))
        assert cur.fetchall() == [(10,)]
        conn.adbc_current_db_schema = "crm"
        assert rows(conn, "SELECT count(*) FROM customers") == [(20_000,)]
        cur.close()
    finally:
        conn.close()


# ------------------------------------------------------------------ the Flight actions


def action(client, options, name: str, body: bytes = b"") -> bytes:
    results = list(client.do_action(flight.Action(name, body), options))
    return results[0].body.to_pybytes()


def set_options(client, options, **values: str | None) -> pb.SetSessionOptionsResult:
    request = pb.SetSessionOptionsRequest()
    for name, value in values.items():
        entry = request.session_options[name]
        if value is not None:
            entry.string_value = value
        else:
            entry.SetInParent()  # no value: unset
    result = pb.SetSessionOptionsResult()
    result.ParseFromString(
        action(client, options, "SetSessionOptions", request.SerializeToString())
    )
    return result


def get_options(client, options) -> dict[str, str]:
    result = pb.GetSessionOptionsResult()
    result.ParseFromString(action(client, options, "GetSessionOptions"))
    return {k: v.string_value for k, v in result.session_options.items()}


def run(client, options, sql: str) -> list[dict]:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    return client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()


def test_session_actions_set_get_unset_and_close(gateway):
    client, options = flight_client(gateway.uri, "bob")
    try:
        assert get_options(client, options) == {"catalog": "mesh"}
        result = set_options(client, options, schema="Sales", catalog="mesh", colour="blue")
        assert {k: v.value for k, v in result.errors.items()} == {
            "colour": pb.SetSessionOptionsResult.INVALID_NAME
        }
        assert get_options(client, options) == {"catalog": "mesh", "schema": "sales"}
        assert run(client, options, "SELECT count(*) AS n FROM orders") == [{"n": 200_000}]
        wrong = set_options(client, options, catalog="elsewhere", schema="")
        assert {k: v.value for k, v in wrong.errors.items()} == {
            "catalog": pb.SetSessionOptionsResult.INVALID_VALUE,
            "schema": pb.SetSessionOptionsResult.INVALID_VALUE,
        }
        assert get_options(client, options)["schema"] == "sales"  # unchanged
        assert not set_options(client, options, schema=None).errors
        assert get_options(client, options) == {"catalog": "mesh"}
        set_options(client, options, schema="sales")
        closed = pb.CloseSessionResult()
        closed.ParseFromString(action(client, options, "CloseSession"))
        assert closed.status == pb.CloseSessionResult.CLOSED
        assert get_options(client, options) == {"catalog": "mesh"}
        with pytest.raises(Exception, match="unknown product 'orders'"):
            run(client, options, "SELECT count(*) AS n FROM orders")
    finally:
        client.close()


def test_a_session_belongs_to_its_own_login(gateway):
    bob_one, bob_one_options = flight_client(gateway.uri, "bob")
    bob_two, bob_two_options = flight_client(gateway.uri, "bob")
    alice, alice_options = flight_client(gateway.uri, "alice")
    try:
        set_options(bob_one, bob_one_options, schema="sales")
        assert get_options(bob_one, bob_one_options)["schema"] == "sales"
        # another login of the same user, and another user, have their own sessions
        assert "schema" not in get_options(bob_two, bob_two_options)
        assert "schema" not in get_options(alice, alice_options)
        set_options(alice, alice_options, schema="crm")
        assert get_options(bob_one, bob_one_options)["schema"] == "sales"
        assert run(alice, alice_options, "SELECT count(*) AS n FROM customers") == [{"n": 20_000}]
        with pytest.raises(Exception, match="unknown product 'customers'"):
            run(bob_two, bob_two_options, "SELECT count(*) AS n FROM customers")
    finally:
        for client in (bob_one, bob_two, alice):
            client.close()
