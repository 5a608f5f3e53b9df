"""Escape attempts against the governed gateway, through real clients on a real server.

Each case (``support.attacks.CASES``) sends one statement as one demo user and accepts
exactly two kinds of answer: a clean refusal, or a result holding nothing outside that
user's view. "Nothing" is checked against the oracle's facts read from the raw files
(``support.oracle``): no hash key, no raw SSN or email, no ssn at all for carol, no
logistics data for alice, no order outside the EU for alice, no server path or internal
engine name; in results (rows, column and struct field names) and in error messages alike.
Cases with a sharper expectation (a count that must equal the EU-only count, a probe that
must find nothing) check it too.

A failing case here is a leak (or a crash) in the product: keep it failing until fixed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pytest
from google.protobuf import any_pb2
from pyarrow import flight
from support.attacks import CASES, Case, case_params
from support.clients import CLIENT_ERRORS, adbc_connect, error_text, flight_client
from support.leaks import assert_no_leak
from support.oracle import Oracle
from support.servers import start_gateway

from gateway.flightsql import flightsql_pb2 as pb
from gateway.flightsql import protocol as flightsql
from gateway.planning.query import PlanLimits


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_escape_attempt(case: Case, clients, oracle: Oracle) -> None:
    outcome = clients.run(case.user, case.text(oracle), case_params(case, oracle))
    assert_no_leak(outcome, oracle, case.user, orders_only=case.orders_only)
    if outcome.refused:
        assert "Traceback" not in outcome.error, outcome.error[:500]
        assert not case.answer, f"expected an answer, got {outcome.describe()}"
        return
    assert not case.refuse, f"expected a refusal, got {outcome.describe()}".replace(
        oracle.hash_key, "<HASH KEY>"
    )
    if case.check is not None:
        case.check(outcome, oracle)


def test_case_ids_are_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- baselines
# The leak checks only mean something if the oracle matches what the gateway serves.


def test_oracle_matches_what_bob_sees(clients, oracle: Oracle) -> None:
    outcome = clients.run(
        "bob", "SELECT customer_id, email, ssn FROM crm.customers WHERE customer_id = 1"
    )
    assert outcome.rows == [
        {
            "customer_id": 1,
            "email": oracle.sample_customer["email"],
            "ssn": oracle.sample_customer["ssn"],
        }
    ]


def test_oracle_matches_alice_masks(clients, oracle: Oracle) -> None:
    outcome = clients.run("alice", "SELECT email, ssn FROM crm.customers WHERE customer_id = 1")
    email = oracle.sample_customer["email"]
    assert outcome.rows == [
        {
            "email": email[0] + "***@" + email.split("@")[1],
            "ssn": oracle.hashed(oracle.sample_customer["ssn"]),
        }
    ]


def test_oracle_matches_carol_masks(clients, oracle: Oracle) -> None:
    outcome = clients.run("carol", "SELECT * FROM crm.customers WHERE customer_id = 1")
    assert outcome.columns == ["customer_id", "name", "email", "region"]
    assert outcome.rows[0]["email"] == oracle.hashed(oracle.sample_customer["email"])


def test_oracle_matches_alice_row_filter(clients, oracle: Oracle) -> None:
    outcome = clients.run("alice", "SELECT count(*) AS n FROM sales.orders")
    assert outcome.rows == [{"n": oracle.orders_by_region["EU"]}]
    assert oracle.orders_by_region["EU"] < sum(oracle.orders_by_region.values())


# --------------------------------------------------------------------------- EXPLAIN and metadata


def _plan(clients, sql: str) -> str:
    outcome = clients.run("alice", "EXPLAIN " + sql)
    if outcome.refused:
        return ""
    return "\n".join(
        row["explain_value"] for row in outcome.rows if row["explain_key"] == "physical_plan"
    )


def test_explain_does_not_reveal_bounds_of_filtered_out_rows(clients, oracle: Oracle) -> None:
    """alice's view holds no order above the EU maximum, so whether a plan is empty for
    ``order_id > x`` must not depend on x there. DuckDB prunes with the base table's
    statistics (all regions), so EXPLAIN tells apart ids only non-EU orders have: the
    same leak as stats(), by binary search."""
    global_max = oracle.eu_max_order_id + 1  # order 200000 is not in the EU
    assert global_max not in oracle.eu_order_ids
    below = _plan(clients, f"SELECT * FROM sales.orders WHERE order_id > {oracle.eu_max_order_id}")
    above = _plan(clients, f"SELECT * FROM sales.orders WHERE order_id > {global_max}")
    assert ("Empty Result" in below) == ("Empty Result" in above), (
        "EXPLAIN reveals that orders outside alice's row filter exist with "
        f"{oracle.eu_max_order_id} < order_id <= {global_max}:\n{below}\n---\n{above}"
    )


def test_metadata_alice_lists_no_logistics(gateway, oracle: Oracle) -> None:
    with adbc_connect(gateway.uri, "alice") as conn:
        objects = str(conn.adbc_get_objects(depth="all").read_all().to_pylist())
        assert "shipments" not in objects and "carrier" not in objects
        with pytest.raises(CLIENT_ERRORS):
            conn.adbc_get_table_schema("shipments", db_schema_filter="logistics")


def test_metadata_carol_sees_no_ssn(gateway) -> None:
    with adbc_connect(gateway.uri, "carol") as conn:
        assert "ssn" not in conn.adbc_get_table_schema("customers", db_schema_filter="crm").names
        assert "'ssn'" not in str(conn.adbc_get_objects(depth="all").read_all().to_pylist())


def test_metadata_dave_sees_nothing(gateway) -> None:
    with adbc_connect(gateway.uri, "dave") as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        assert all(not catalog["catalog_db_schemas"] for catalog in objects), objects


def test_metadata_tables_with_schema_carol(gateway) -> None:
    client, options = flight_client(gateway.uri, "carol")
    try:
        command = _pack(pb.CommandGetTables(include_schema=True))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        seen = {
            (r["db_schema_name"], r["table_name"]): pa.ipc.read_schema(
                pa.py_buffer(r["table_schema"])
            ).names
            for r in table.to_pylist()
        }
        assert set(seen) == {("crm", "customers")}, seen
        assert "ssn" not in seen[("crm", "customers")]
        keys = _pack(pb.CommandGetPrimaryKeys(db_schema="logistics", table="shipments"))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(keys), options)
        assert client.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 0
    finally:
        client.close()


# --------------------------------------------------------------------------- handles


def _pack(message) -> bytes:
    return flightsql.pack(message)


def _unpack(raw: bytes, cls):
    envelope = any_pb2.Any()
    envelope.ParseFromString(raw)
    message = cls()
    assert envelope.Unpack(message), f"not a {cls.__name__}"
    return message


def _prepare(client, options, sql: str) -> bytes:
    request = pb.ActionCreatePreparedStatementRequest(query=sql)
    results = list(
        client.do_action(flight.Action("CreatePreparedStatement", _pack(request)), options)
    )
    return _unpack(
        results[0].body.to_pybytes(), pb.ActionCreatePreparedStatementResult
    ).prepared_statement_handle


def _read(client, options, command: bytes) -> pa.Table:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
    return client.do_get(info.endpoints[0].ticket, options).read_all()


@pytest.fixture(scope="module")
def flights(gateway):
    opened = {}

    def get(user: str):
        if user not in opened:
            opened[user] = flight_client(gateway.uri, user)
        return opened[user]

    yield get
    for client, _ in opened.values():
        client.close()


def _refused_text(call: Callable[[], object]) -> str:
    with pytest.raises((*CLIENT_ERRORS, KeyError)) as info:
        call()
    return error_text(info.value)


def test_prepared_handle_of_bob_replayed_by_alice(flights, oracle: Oracle) -> None:
    bob, bob_options = flights("bob")
    alice, alice_options = flights("alice")
    handle = _prepare(bob, bob_options, "SELECT customer_id, ssn FROM crm.customers LIMIT 5")
    command = _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    assert _read(bob, bob_options, command).column("ssn").to_pylist()[0] in oracle.raw_ssns
    message = _refused_text(lambda: _read(alice, alice_options, command))
    assert oracle.hash_key not in message and not re.search(r"\d{3}-\d{2}-\d{4}", message)
    # bob's handle still works: alice could not close it either
    _refused_text(
        lambda: list(
            alice.do_action(
                flight.Action(
                    "ClosePreparedStatement",
                    _pack(pb.ActionClosePreparedStatementRequest(prepared_statement_handle=handle)),
                ),
                alice_options,
            )
        )
    )
    assert _read(bob, bob_options, command).num_rows == 5


def test_prepared_handle_of_bob_bound_by_alice(flights, oracle: Oracle) -> None:
    bob, bob_options = flights("bob")
    alice, alice_options = flights("alice")
    handle = _prepare(
        bob, bob_options, "SELECT customer_id, ssn FROM crm.customers WHERE region = ?"
    )
    command = _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    parameters = pa.table({"$1": ["US"]})

    def bind_and_read():
        writer, reader = alice.do_put(
            flight.FlightDescriptor.for_command(command), parameters.schema, alice_options
        )
        writer.write_table(parameters)
        writer.done_writing()
        reader.read()
        writer.close()
        return _read(alice, alice_options, command)

    _refused_text(bind_and_read)


def test_ticket_of_bob_replayed_by_alice(flights, oracle: Oracle) -> None:
    bob, bob_options = flights("bob")
    alice, alice_options = flights("alice")
    info = bob.get_flight_info(
        flight.FlightDescriptor.for_command(b"SELECT customer_id, ssn FROM crm.customers LIMIT 5"),
        bob_options,
    )
    ticket = info.endpoints[0].ticket
    message = _refused_text(lambda: alice.do_get(ticket, alice_options).read_all())
    assert not re.search(r"\d{3}-\d{2}-\d{4}", message)
    assert bob.do_get(ticket, bob_options).read_all().num_rows == 5  # bob's ticket still valid


def test_ticket_of_alice_replayed_by_carol(flights, oracle: Oracle) -> None:
    alice, alice_options = flights("alice")
    carol, carol_options = flights("carol")
    info = alice.get_flight_info(
        flight.FlightDescriptor.for_command(b"SELECT order_id, region FROM sales.orders LIMIT 5"),
        alice_options,
    )
    _refused_text(lambda: carol.do_get(info.endpoints[0].ticket, carol_options).read_all())


def test_raw_sql_ticket_is_planned_for_the_caller(flights, oracle: Oracle) -> None:
    alice, alice_options = flights("alice")
    table = alice.do_get(
        flight.Ticket(b"SELECT count(*) AS n FROM sales.orders WHERE region <> 'EU'"), alice_options
    ).read_all()
    assert table.column("n").to_pylist() == [0]


def test_forged_prepared_handle(flights) -> None:
    alice, alice_options = flights("alice")
    command = _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=b"\x00" * 16))
    _refused_text(lambda: _read(alice, alice_options, command))


def test_prepared_statement_with_parameter_placeholder_as_sql(flights, oracle: Oracle) -> None:
    """A parameter value is data, never SQL, even through the raw protobuf path."""
    alice, alice_options = flights("alice")
    handle = _prepare(
        alice, alice_options, "SELECT count(*) AS n FROM sales.orders WHERE region = ?"
    )
    command = _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    parameters = pa.table({"$1": ["EU' OR region <> 'EU"]})
    writer, reader = alice.do_put(
        flight.FlightDescriptor.for_command(command), parameters.schema, alice_options
    )
    writer.write_table(parameters)
    writer.done_writing()
    reader.read()
    writer.close()
    assert _read(alice, alice_options, command).column("n").to_pylist() == [0]


def test_oversized_bound_parameters_are_refused_and_not_kept(flights) -> None:
    """A prepared statement keeps its bound row for its life (up to 256 per user): a row
    over the bound limit is refused, naming it, and the statement keeps no value."""
    alice, alice_options = flights("alice")
    handle = _prepare(alice, alice_options, "SELECT length(?) AS n")
    command = _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    parameters = pa.table({"$1": ["x" * 200_000]})
    writer, reader = alice.do_put(
        flight.FlightDescriptor.for_command(command), parameters.schema, alice_options
    )
    writer.write_table(parameters)
    writer.done_writing()
    with pytest.raises(pa.ArrowInvalid) as refused:  # the DoPut's status, at its end
        reader.read()
        writer.close()
    assert "at most 65,536 may be bound" in str(refused.value)
    # nothing was bound: the statement still asks for its parameter
    with pytest.raises(pa.ArrowInvalid, match="bind them first"):
        _read(alice, alice_options, command)


def test_a_streamed_bind_is_refused_before_the_stream_ends(flights) -> None:
    """A DoPut streaming batch after batch (64 MiB here) is refused at the first batch past
    the bound limit: the client's writes fail long before its stream is sent, and the
    refusal names the limit."""
    alice, alice_options = flights("alice")
    handle = _prepare(alice, alice_options, "SELECT length(?) AS n")
    command = _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    batch = pa.record_batch({"$1": [b"x" * (1 << 20)]})
    writer, reader = alice.do_put(
        flight.FlightDescriptor.for_command(command), batch.schema, alice_options
    )
    written = 0
    with pytest.raises(pa.ArrowException) as refused:
        for _ in range(64):
            writer.write_batch(batch)
            written += 1
        writer.done_writing()
        reader.read()
    assert written < 64, "the whole stream was taken before the refusal"
    assert "at most 65,536 may be bound" in str(refused.value)
    with pytest.raises(pa.ArrowInvalid, match="at most 65,536 may be bound"):
        writer.close()  # the call's status, once more
    with pytest.raises(pa.ArrowInvalid, match="bind them first"):
        _read(alice, alice_options, command)


# --------------------------------------------------------------------------- size and depth


def _refusal_naming(run_it: Callable[[], object], limit: str) -> str:
    """The refusal of ``run_it``, which must name the ``limit`` that refused it before it
    ran (no bound on one call's wall-clock time: a loaded machine is slow)."""
    message = _refused_text(run_it)
    assert limit in message, message
    return message


def test_ten_thousand_nested_parentheses_refused_by_its_limit(clients) -> None:
    sql = "SELECT " + "(" * 10_000 + "1" + ")" * 10_000
    cursor = clients("alice").cursor()
    try:
        message = _refusal_naming(lambda: (cursor.execute(sql), cursor.fetchall()), "deep")
    finally:
        cursor.close()
    assert "Traceback" not in message


def test_ten_thousand_nested_subqueries_refused_by_its_limit(clients) -> None:
    sql = "SELECT * FROM " + "(SELECT * FROM " * 10_000 + "sales.orders" + ")" * 10_000
    cursor = clients("alice").cursor()
    try:
        _refusal_naming(lambda: (cursor.execute(sql), cursor.fetchall()), "deep")
    finally:
        cursor.close()


def test_deep_unary_chain_refused_by_its_limit(clients) -> None:
    sql = "SELECT " + "NOT " * 20_000 + "true"
    cursor = clients("alice").cursor()
    try:
        _refusal_naming(lambda: (cursor.execute(sql), cursor.fetchall()), "deep")
    finally:
        cursor.close()


def test_ten_megabyte_statement_refused_by_its_limit_adbc(clients) -> None:
    sql = "SELECT 1 AS x -- " + "x" * (10 * 1024 * 1024)
    cursor = clients("alice").cursor()
    try:
        _refusal_naming(lambda: (cursor.execute(sql), cursor.fetchall()), "over the limit")
    finally:
        cursor.close()


def test_ten_megabyte_statement_refused_by_its_limit_flight(flights) -> None:
    alice, options = flights("alice")
    command = b"SELECT '" + b"a" * (10 * 1024 * 1024) + b"' AS x"
    _refusal_naming(lambda: _read(alice, options, command), "over the limit")


@pytest.mark.timeout(120)
def test_just_under_limit_statement_is_answered(clients) -> None:
    """Harmless text just under the statement size limit is answered (a hang is caught by
    the timeout), and one byte over it is refused naming the limit."""
    limit = PlanLimits().max_statement_bytes
    head, tail = "SELECT 1 AS x /* ", " */"
    sql = head + "y" * (limit - len(head) - len(tail)) + tail
    assert len(sql.encode()) == limit
    cursor = clients("alice").cursor()
    try:
        cursor.execute(sql)
        assert cursor.fetchall() == [(1,)]
        with pytest.raises(CLIENT_ERRORS) as refused:
            cursor.execute(head + "y" + sql[len(head) :])
        assert f"statement is {limit + 1} bytes, over the limit of {limit}" in str(refused.value)
    finally:
        cursor.close()


def test_long_and_chain_is_planned_in_bounded_time(mesh_copy, tmp_path) -> None:
    """A user with no grants at all sends ~45 KB: 2,500 predicates joined by AND.

    Planning calls ``function_refusal`` on every AND node (sqlglot's ``And`` is a ``Func``)
    and ``function_name`` renders each node's whole subtree to SQL: quadratic time, over a
    minute of CPU here (a 1 MB statement, within the size limit, would run for hours). Runs
    on a private gateway so that a hang cannot disturb the rest of the suite.
    """
    private = start_gateway(mesh_copy, tmp_path / "dos.log")
    try:
        sql = "SELECT 1 AS x WHERE " + " AND ".join(["true"] * 2_500)
        done = threading.Event()
        answer: dict[str, object] = {}

        def attack() -> None:
            try:
                with adbc_connect(private.uri, "dave") as conn, conn.cursor() as cursor:
                    cursor.execute(sql)
                    answer["rows"] = cursor.fetchall()
            except CLIENT_ERRORS as exc:
                answer["error"] = str(exc)[:200]
            finally:
                done.set()

        started = time.monotonic()
        threading.Thread(target=attack, daemon=True).start()
        finished = done.wait(timeout=60.0)
        elapsed = time.monotonic() - started
        assert finished, (
            f"a {len(sql):,}-byte statement from a user without grants was still being planned after "
            f"{elapsed:.0f} s (quadratic planning of AND chains: a denial of service)"
        )
        # a left-deep chain of 2,500 ANDs is deeper than the planner accepts
        assert "rows" not in answer, answer
        assert "statement is more than 400 expressions deep; split it up" in answer["error"], answer
    finally:
        private.process.kill()
        private.process.wait()


# --------------------------------------------------------------------------- still up


def test_zz_server_still_up_and_still_governed(gateway, clients, oracle: Oracle) -> None:
    """After every attempt above: the server answers, and governance is unchanged."""
    assert gateway.process.poll() is None, "the gateway process died"
    with adbc_connect(gateway.uri, "alice") as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM sales.orders")
        assert cursor.fetchall() == [(oracle.orders_by_region["EU"],)]
        cursor.execute("SELECT ssn FROM crm.customers WHERE customer_id = 1")
        assert cursor.fetchall() == [(oracle.hashed(oracle.sample_customer["ssn"]),)]
    with adbc_connect(gateway.uri, "carol") as conn, conn.cursor() as cursor:
        cursor.execute("SELECT * FROM crm.customers LIMIT 1")
        assert [d[0] for d in cursor.description] == ["customer_id", "name", "email", "region"]
    with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM sales.orders")
        assert cursor.fetchall() == [(sum(oracle.orders_by_region.values()),)]
