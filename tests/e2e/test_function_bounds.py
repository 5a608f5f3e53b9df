"""Functions that read other users' activity, or build values past the bounds, through a
real gateway (issue 11, point 2): refused or stopped with a clean error naming the function
and the fix; the same functions within bounds still answer."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, error_text, flight_client
from support.logs import log_records

from policies.safe_sql import MAX_COLLECTED_VALUES, collector_limit_message

REFUSED = (flight.FlightError, pa.ArrowException)


@pytest.fixture(scope="module")
def alice(gateway):
    client, options = flight_client(gateway.uri, "alice")
    yield client, options
    client.close()


def flight_error(client_options, sql: str) -> str:
    client, options = client_options
    with pytest.raises(REFUSED) as caught:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        client.do_get(info.endpoints[0].ticket, options).read_all()
    assert not isinstance(caught.value, flight.FlightInternalError), str(caught.value)
    return str(caught.value).split(". gRPC client debug context")[0]


def flight_rows(client_options, sql: str) -> list[dict]:
    client, options = client_options
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    return client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()


@pytest.mark.parametrize("user", ["alice", "dave"])
def test_txid_current_is_refused_for_every_user(gateway, user):
    """txid_current() counted every statement of every user: alice saw bob's activity."""
    with (
        adbc_connect(gateway.uri, user) as conn,
        conn.cursor() as cur,
        pytest.raises(adbc_driver_manager.Error) as caught,
    ):
        cur.execute("SELECT txid_current() AS t")
        cur.fetchall()
    text = error_text(caught.value)
    assert "txid_current() is not allowed" in text and "every user" in text, text


def test_damerau_levenshtein_of_long_computed_strings_is_refused(alice):
    """Was 800 MB outside memory_limit for two 10,000-character strings."""
    sql = "SELECT damerau_levenshtein(repeat('ab', 5000), repeat('ba', 5000)) AS d"
    text = flight_error(alice, sql)
    assert "damerau_levenshtein()" in text and "constant string" in text


def test_edit_distance_against_a_constant_answers(alice, direct_arrow):
    sql = (
        "SELECT levenshtein(region, 'EUR') AS d, count(*) AS n FROM sales.orders "
        "GROUP BY ALL ORDER BY d"
    )
    assert flight_rows(alice, sql) == [{"d": 1, "n": 89_906}]


def test_string_agg_past_the_bound_is_a_clean_error(gateway, alice):
    before = len(log_records(gateway.log(), "internal_error"))
    text = flight_error(alice, "SELECT length(string_agg(region, ',')) AS n FROM sales.orders")
    assert text.startswith(collector_limit_message("string_agg")), text
    assert f"{MAX_COLLECTED_VALUES:,}" in text
    assert len(log_records(gateway.log(), "internal_error")) == before


def test_list_under_the_bound_answers(alice):
    sql = "SELECT len(list(order_id)) AS n FROM sales.orders WHERE order_id <= 1000"
    rows = flight_rows(alice, sql)
    assert rows[0]["n"] > 0


def test_a_collected_value_may_not_be_amplified(alice):
    text = flight_error(
        alice,
        "SELECT len(repeat(s, 200)) AS n "
        "FROM (SELECT string_agg(region, ',') AS s FROM sales.orders)",
    )
    assert "repeat()" in text and "string_agg()" in text
