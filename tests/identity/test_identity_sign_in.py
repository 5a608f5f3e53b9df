"""Sign-in with a real OpenID provider's tokens (oidc-provider): through ADBC's
``adbc.flight.sql.authorization_header`` and pyarrow.flight call headers, roles and row
filters from the token's claims, service accounts, and passwords beside them."""

from __future__ import annotations

import json

import pytest
from google.protobuf import any_pb2
from pyarrow import flight
from support.clients import STATUS_ERRORS, adbc_connect, normalized_error
from support.oidc import adbc_rows, bearer, flight_query
from support.polling import wait_until

from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql import protocol as flightsql

pytestmark = pytest.mark.slow  # a gateway and an OpenID provider of their own

ORDERS = "SELECT order_id, region, amount FROM sales.orders ORDER BY order_id"
RAW_ORDERS = "SELECT order_id, region, amount FROM sales.orders WHERE region = ? ORDER BY order_id"


def test_adbc_token_rows_follow_the_attributes_of_each_token(identity_gateway, provider, oracle):
    """The same user (alice, role analyst_eu) signs in with region=EU, then region=US, then
    EU again: each query sees its own token's region and nothing else (decision and plan
    caches are keyed by the attributes in force, not by the user name)."""
    eu, us = provider.token("alice-eu"), provider.token("alice-us")
    expected = {region: oracle.raw_rows(RAW_ORDERS, [region]) for region in ("EU", "US")}
    assert expected["EU"] and expected["US"]
    for token, region in ((eu, "EU"), (us, "US"), (eu, "EU"), (us, "US")):
        rows = adbc_rows(identity_gateway.uri, token, ORDERS)
        assert [tuple(r) for r in rows] == [tuple(r) for r in expected[region]], region
    eu_ids = {r[0] for r in expected["EU"]}
    us_rows = adbc_rows(identity_gateway.uri, us, "SELECT order_id FROM sales.orders")
    assert not eu_ids & {r[0] for r in us_rows}  # no EU row leaked to the US token


def test_pyarrow_flight_call_headers_carry_the_token(identity_gateway, provider, oracle):
    """One channel, bearer tokens in the call headers, alternating attributes: rows and
    masks are those of the token of each call."""
    eu, us = provider.token("alice-eu"), provider.token("alice-us")
    client = flight.FlightClient(identity_gateway.uri)
    try:
        for token, region in ((eu, "EU"), (us, "US"), (eu, "EU")):
            table = flight_query(identity_gateway.uri, token, ORDERS, client)
            assert set(table.column("region").to_pylist()) == {region}
            assert table.num_rows == len(oracle.raw_rows(RAW_ORDERS, [region]))
        customers = flight_query(
            identity_gateway.uri, eu, "SELECT * FROM crm.customers ORDER BY customer_id", client
        )
    finally:
        client.close()
    alice = oracle.run("alice", "SELECT * FROM crm.customers ORDER BY customer_id")
    assert customers.column_names == alice.column_names
    assert customers.column("email").to_pylist() == alice.column("email").to_pylist()
    assert customers.column("ssn").to_pylist() == alice.column("ssn").to_pylist()  # hashed


def test_unmapped_groups_grant_nothing(identity_gateway, provider):
    """mallory's token names only groups no [identity.roles] entry maps: no product, and
    the refusal is the one of a product that does not exist."""
    token = provider.token("mallory")
    with pytest.raises(STATUS_ERRORS) as denied:
        flight_query(identity_gateway.uri, token, "SELECT count(*) FROM sales.orders")
    with pytest.raises(STATUS_ERRORS) as unknown:
        flight_query(identity_gateway.uri, token, "SELECT count(*) FROM sales.nothing_here")
    assert type(denied.value) is type(unknown.value)
    assert normalized_error(denied.value, "orders") == normalized_error(
        unknown.value, "nothing_here"
    )


def test_a_service_account_signs_in_with_its_own_roles(identity_gateway, provider, oracle):
    """reporting-bot's client-credentials token is the service account's: role ops (its
    claims, which name bob and an analysts group, are ignored), and audit says so."""
    token = provider.token("reporting-bot")
    shipments = flight_query(
        identity_gateway.uri, token, "SELECT * FROM logistics.shipments ORDER BY shipment_id"
    )
    assert shipments.equals(
        oracle.run("erin", "SELECT * FROM logistics.shipments ORDER BY shipment_id")
    )
    with pytest.raises(STATUS_ERRORS):  # bob (admin) would read customers
        flight_query(identity_gateway.uri, token, "SELECT * FROM crm.customers")
    flight_query(identity_gateway.uri, provider.token("carol"), "SELECT 1 AS one")

    def begun() -> dict[str, dict]:
        records = [r for r in identity_gateway.audit() if r.get("event") == "query_begin"]
        return {r["user"]: r for r in records if r["user"] in ("reporting-bot", "carol")}

    seen = wait_until(lambda: len(begun()) == 2 and begun(), what="the queries' audit records")
    assert seen["reporting-bot"]["auth"] == "service"
    assert seen["reporting-bot"]["roles"] == ["ops"]
    assert seen["carol"]["auth"] == "token"
    assert seen["carol"]["roles"] == ["marketing"]  # "unmapped" grants nothing


def test_es256_tokens_are_accepted(identity_gateway, provider):
    token = provider.token("alice-eu", "urn:meshgate:ec")
    table = flight_query(identity_gateway.uri, token, "SELECT DISTINCT region FROM sales.orders")
    assert table.column(0).to_pylist() == ["EU"]


def test_passwords_and_the_gateways_own_tokens_still_work(identity_gateway, oracle):
    connection = adbc_connect(identity_gateway.uri, "alice")
    try:
        with connection.cursor() as cursor:
            cursor.execute(ORDERS)
            rows = cursor.fetchall()
    finally:
        connection.close()
    assert [tuple(r) for r in rows] == [tuple(r) for r in oracle.raw_rows(RAW_ORDERS, ["EU"])]
    client, options = identity_gateway.client("erin")  # Basic, then the gateway's bearer
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1"), options)
        assert client.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 1
    finally:
        client.close()


def test_a_statement_ticket_serves_only_the_token_that_planned_it(identity_gateway, provider):
    """alice's EU token plans a statement; the ticket presented with her US token is
    unknown to it (it carries the EU plan): no EU row reaches the US token."""
    eu, us = bearer(provider.token("alice-eu")), bearer(provider.token("alice-us"))
    client = flight.FlightClient(identity_gateway.uri)
    try:
        descriptor = flight.FlightDescriptor.for_command(ORDERS.encode())
        info = client.get_flight_info(descriptor, eu)
        with pytest.raises(STATUS_ERRORS) as refused:
            client.do_get(info.endpoints[0].ticket, us).read_all()
        assert "unknown or expired ticket" in str(refused.value)
        info = client.get_flight_info(descriptor, eu)
        rows = client.do_get(info.endpoints[0].ticket, eu).read_all()
    finally:
        client.close()
    assert set(rows.column("region").to_pylist()) == {"EU"}


def test_a_prepared_statement_runs_for_the_token_that_executes_it(identity_gateway, provider):
    """alice prepares with her EU token and executes with her US token (same user, so the
    handle is hers): the execution is governed for the US token, never by the EU plan."""
    eu, us = bearer(provider.token("alice-eu")), bearer(provider.token("alice-us"))
    client = flight.FlightClient(identity_gateway.uri)
    try:
        request = pb.ActionCreatePreparedStatementRequest(query=ORDERS)
        results = list(
            client.do_action(flight.Action("CreatePreparedStatement", flightsql.pack(request)), eu)
        )
        envelope = any_pb2.Any()
        envelope.ParseFromString(results[0].body.to_pybytes())
        prepared = pb.ActionCreatePreparedStatementResult()
        assert envelope.Unpack(prepared)
        command = flightsql.pack(
            pb.CommandPreparedStatementQuery(
                prepared_statement_handle=prepared.prepared_statement_handle
            )
        )
        regions = {}
        for name, options in (("us", us), ("eu", eu)):
            info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
            table = client.do_get(info.endpoints[0].ticket, options).read_all()
            regions[name] = set(table.column("region").to_pylist())
    finally:
        client.close()
    assert regions == {"us": {"US"}, "eu": {"EU"}}


def test_accepted_tokens_never_reach_the_log_or_the_audit(identity_gateway, provider):
    tokens = [provider.token(client) for client in ("alice-eu", "carol", "reporting-bot")]
    for token in tokens:
        flight_query(identity_gateway.uri, token, "SELECT 1 AS one")
    written = identity_gateway.log() + json.dumps(identity_gateway.audit())
    for token in tokens:
        assert token not in written
        assert token.rsplit(".", 1)[-1] not in written  # nor its signature alone
