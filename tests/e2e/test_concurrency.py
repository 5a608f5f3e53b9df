"""Concurrent clients and cancellation, against real server processes.

Every wait here is bounded: threads are joined with a timeout and the server log is
polled for a few seconds at most, so the whole file stays well under a minute.
"""

from __future__ import annotations

import contextlib
import threading
import time

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, flight_client
from support.logs import log_records, wait_for_query_log
from support.servers import start_gateway, stop_gateway

#: A result of about 4e9 rows: it never finishes within a test, it can only be stopped.
ENDLESS = "SELECT a.*, b.name FROM sales.orders a CROSS JOIN crm.customers b"
#: About 4e10 rows aggregated into one row: minutes of work before the first batch exists.
LONG_AGGREGATE = "SELECT sum(a.order_id * b.order_id % 7) AS s FROM sales.orders a, sales.orders b"
STOPPED = {"cancelled", "disconnected"}
#: Deadline for the server to notice that a client went away (without noticing, the
#: query runs to the 300 s time limit). Generous for a loaded machine: not a speed figure.
STOP_WITHIN_SECONDS = 60.0
#: The user of the cancellation tests. Data tests run as bob, the admin of the demo
#: mesh, who reads every product unmasked: governance does not change their results.
CANCEL_USER = "bob"

QUERIES = [
    (
        "SELECT region, count(*) AS n, sum(amount) AS s FROM sales.orders GROUP BY region ORDER BY region",
        None,
    ),
    ("SELECT * FROM crm.customers WHERE region = ? ORDER BY customer_id", ["APAC"]),
    (
        "SELECT carrier, region, count(*) AS n FROM logistics.shipments GROUP BY ALL ORDER BY ALL",
        None,
    ),
    (
        (
            "SELECT c.region, count(*) AS n, sum(o.amount) AS s FROM sales.orders o "
            "JOIN crm.customers c USING (customer_id) GROUP BY 1 ORDER BY 1"
        ),
        None,
    ),
    ("SELECT * FROM sales.orders WHERE order_date = ? ORDER BY order_id", ["2024-02-29"]),
    (
        (
            "SELECT order_id, amount, row_number() OVER (PARTITION BY customer_id ORDER BY order_id) AS rn "
            "FROM sales.orders WHERE customer_id < 300 ORDER BY order_id"
        ),
        None,
    ),
    ("SELECT * FROM sales.orders ORDER BY order_id", None),
    (
        (
            "SELECT s.carrier, sum(o.amount) AS value FROM logistics.shipments s "
            "JOIN sales.orders o USING (order_id) GROUP BY 1 ORDER BY 1"
        ),
        None,
    ),
]


#: What a client sees when its stream is cancelled: ADBC errors, or the Arrow C stream's
#: error (OSError / ArrowException) when reading a RecordBatchReader from fetch_record_batch.
CLIENT_ERRORS = (adbc_driver_manager.Error, OSError, pa.ArrowException)


def close_quietly(*resources) -> None:
    """Close readers, cursors and connections now, not in a garbage-collector callback."""
    for resource in resources:
        if resource is None:
            continue
        # Closing what a cancelled or failed call left behind may fail in any way.
        with contextlib.suppress(Exception):
            resource.close()


def run_in_threads(target, count: int, timeout: float) -> list:
    """Run ``target(i)`` in ``count`` threads at once; return results (or exceptions)."""
    results: list = [None] * count

    def wrapper(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            results[i] = exc

    threads = [threading.Thread(target=wrapper, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout} s"
    return results


@pytest.mark.slow
def test_eight_concurrent_adbc_clients_get_correct_results(gateway, direct_arrow):
    expected = [direct_arrow(sql, params) for sql, params in QUERIES]
    barrier = threading.Barrier(len(QUERIES), timeout=20)

    def client(i: int):
        sql, params = QUERIES[i]
        with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cur:
            barrier.wait()
            tables = []
            for _ in range(2):
                cur.execute(sql, params)
                tables.append(cur.fetch_arrow_table())
            return tables

    results = run_in_threads(client, len(QUERIES), timeout=45)
    for i, result in enumerate(results):
        assert not isinstance(result, BaseException), f"client {i} failed: {result!r}"
        for table in result:
            assert table.schema.types == expected[i].schema.types, i
            assert table.equals(expected[i]), f"client {i} ({QUERIES[i][0][:40]}...) got wrong rows"


#: An answer that differs per user: bob reads emails, alice's are masked, carol's hashed;
#: erin and dave may not read ``crm.customers``.
PER_USER_SQL = (
    "SELECT region, count(*) AS n, min(email) AS e FROM crm.customers GROUP BY 1 ORDER BY 1"
)


def test_concurrent_users_each_get_their_own_rows(gateway):
    """Each call's identity reaches its own RPC only (``CallIdentities``): users with
    different masks, two connections each, interleaved on the server's threads, always
    get their own answer; erin and dave, who may not read the product, never get rows."""
    users = ["alice", "bob", "carol"]

    def answer(cur) -> list:
        cur.execute(PER_USER_SQL)
        return cur.fetchall()

    alone = {}
    for user in users:
        with adbc_connect(gateway.uri, user) as conn, conn.cursor() as cur:
            alone[user] = answer(cur)
    assert len({repr(rows) for rows in alone.values()}) == len(users), alone
    clients = [*users, *users, "erin", "dave"]
    barrier = threading.Barrier(len(clients), timeout=20)

    def client(i: int):
        with adbc_connect(gateway.uri, clients[i]) as conn, conn.cursor() as cur:
            barrier.wait()
            answers = []
            for _ in range(80):  # enough interleaved calls to catch a shared slot
                try:
                    answers.append(answer(cur))
                except adbc_driver_manager.Error as exc:
                    answers.append(type(exc))
            return answers

    results = run_in_threads(client, len(clients), timeout=90)
    for user, result in zip(clients, results, strict=True):
        assert not isinstance(result, BaseException), f"{user} failed: {result!r}"
        if user in ("erin", "dave"):
            assert all(a is adbc_driver_manager.ProgrammingError for a in result), result
        else:
            assert all(a == alone[user] for a in result), (user, result)


def test_concurrent_prepared_statements_keep_their_own_parameters(gateway, direct):
    sql = "SELECT count(*) AS n, min(customer_id) AS lo FROM sales.orders WHERE customer_id >= ?"
    thresholds = [1, 2_500, 5_000, 7_500, 10_000, 12_500, 15_000, 17_500]
    expected = [direct.execute(sql, [t]).fetchall() for t in thresholds]
    barrier = threading.Barrier(len(thresholds), timeout=20)

    def client(i: int):
        with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cur:
            barrier.wait()
            answers = []
            for _ in range(5):
                cur.execute(sql, (thresholds[i],))
                answers.append(cur.fetchall())
            return answers

    results = run_in_threads(client, len(thresholds), timeout=45)
    for i, result in enumerate(results):
        assert not isinstance(result, BaseException), f"client {i} failed: {result!r}"
        assert all(answer == expected[i] for answer in result), (i, result, expected[i])


def test_concurrent_plain_flight_streams(gateway, direct_arrow):
    sql = "SELECT * FROM logistics.shipments WHERE region = '{}' ORDER BY shipment_id"
    regions = ["EU", "US", "APAC", "EU", "US", "APAC", "EU", "US"]
    expected = {r: direct_arrow(sql.format(r)) for r in set(regions)}

    def client(i: int):
        client, options = flight_client(gateway.uri, "bob")
        try:
            return client.do_get(flight.Ticket(sql.format(regions[i]).encode()), options).read_all()
        finally:
            client.close()

    results = run_in_threads(client, len(regions), timeout=45)
    for region, table in zip(regions, results, strict=True):
        assert not isinstance(table, BaseException), repr(table)
        assert table.equals(expected[region])


# --------------------------------------------------------------------------- cancellation


def _query_lines(gateway) -> int:
    return len(log_records(gateway.log(), "query"))


def _assert_answers(gateway) -> None:
    with adbc_connect(gateway.uri, "bob") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM crm.customers")
        assert cur.fetchall() == [(20_000,)]


def test_closing_a_flight_reader_stops_the_query(gateway):
    before = _query_lines(gateway)
    client, options = flight_client(gateway.uri, CANCEL_USER)
    try:
        reader = client.do_get(flight.Ticket(ENDLESS.encode()), options)
        chunk = reader.read_chunk()
        assert chunk.data.num_rows > 0
        reader.cancel()
        line = wait_for_query_log(
            gateway, user=CANCEL_USER, after=before, timeout=STOP_WITHIN_SECONDS, outcomes=STOPPED
        )
    finally:
        client.close()
    assert line is not None, f"the server did not stop the query within {STOP_WITHIN_SECONDS} s"
    assert line["products"] == ["crm.customers", "sales.orders"]
    assert 0 < line["rows"] < 50_000_000
    _assert_answers(gateway)


def test_closing_an_adbc_reader_stops_the_query(gateway):
    before = _query_lines(gateway)
    with adbc_connect(gateway.uri, CANCEL_USER) as conn:
        cur = conn.cursor()
        reader = None
        try:
            cur.execute(ENDLESS)
            reader = cur.fetch_record_batch()
            batch = reader.read_next_batch()
            assert batch.num_rows > 0
        finally:
            close_quietly(reader, cur)
        closed_at = time.monotonic()
        line = wait_for_query_log(
            gateway, user=CANCEL_USER, after=before, timeout=STOP_WITHIN_SECONDS, outcomes=STOPPED
        )
    assert line is not None, f"the server did not stop the query within {STOP_WITHIN_SECONDS} s"
    assert time.monotonic() - closed_at < STOP_WITHIN_SECONDS
    assert line["rows"] < 50_000_000
    _assert_answers(gateway)


def test_adbc_cancel_after_first_batch_stops_the_query(gateway):
    before = _query_lines(gateway)
    with adbc_connect(gateway.uri, CANCEL_USER) as conn:
        cur = conn.cursor()
        reader = None
        try:
            cur.execute(ENDLESS)
            reader = cur.fetch_record_batch()
            assert reader.read_next_batch().num_rows > 0
            cur.adbc_cancel()
            with pytest.raises(CLIENT_ERRORS):
                for _ in range(10_000):
                    reader.read_next_batch()
            line = wait_for_query_log(
                gateway,
                user=CANCEL_USER,
                after=before,
                timeout=STOP_WITHIN_SECONDS,
                outcomes=STOPPED,
            )
        finally:
            close_quietly(reader, cur)
    assert line is not None, f"the server did not stop the query within {STOP_WITHIN_SECONDS} s"
    _assert_answers(gateway)


@pytest.mark.slow
def test_adbc_cancel_stops_a_query_before_its_first_batch(mesh_copy, tmp_path):
    """A query still computing its first batch is stopped too, not left to run for minutes.

    Runs on a private gateway: if the query is not stopped it keeps that server's
    engine busy, and the server is killed at the end of the test.
    """
    private = start_gateway(mesh_copy, tmp_path / "gateway.log")
    conn = cur = None
    try:
        before = _query_lines(private)
        conn = adbc_connect(private.uri, CANCEL_USER)
        cur = conn.cursor()
        outcome: dict = {}

        def run() -> None:
            try:
                cur.execute(LONG_AGGREGATE)
                outcome["rows"] = cur.fetchall()
            except CLIENT_ERRORS as exc:
                outcome["error"] = type(exc).__name__

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        time.sleep(1.5)  # the engine is now busy on the aggregate
        assert worker.is_alive(), f"the aggregate finished too early: {outcome}"
        cur.adbc_cancel()
        worker.join(10)
        assert not worker.is_alive(), "adbc_cancel() did not unblock the client"
        assert "error" in outcome, outcome
        line = wait_for_query_log(
            private, user=CANCEL_USER, after=before, timeout=STOP_WITHIN_SECONDS, outcomes=STOPPED
        )
        assert line is not None, (
            f"the server was still running the cancelled query {STOP_WITHIN_SECONDS} s after "
            f"the client cancelled it (no 'query' log line with outcome cancelled/disconnected)"
        )
        _assert_answers(private)
    finally:
        close_quietly(cur, conn)
        stop_gateway(private)


def test_server_still_answers_after_cancellations(gateway, direct_arrow):
    sql = "SELECT region, count(*) AS n FROM logistics.shipments GROUP BY region ORDER BY region"
    with adbc_connect(gateway.uri, CANCEL_USER) as conn, conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetch_arrow_table().equals(direct_arrow(sql))
    assert gateway.process.poll() is None
