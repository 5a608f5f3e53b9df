"""Faults injected while the gateway serves; each test asserts the outcome.

- clients that disconnect mid-stream, cancel, or never read;
- product files that disappear, are truncated or are overwritten with garbage;
- contract and policy files edited into an invalid state;
- SIGKILL during queries (the audit log must stay whole), SIGTERM (graceful drain).

Every test runs its own gateway process on its own mesh copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pyarrow import flight
from support.clients import STATUS_ERRORS, health, message, run_sql, serves
from support.logs import AUDIT_FILE
from support.polling import poll_for, timed
from support.servers import NO_COST_LIMIT, Private, private_gateway, start_private

pytestmark = pytest.mark.slow

#: 4e10 rows for bob: streams for as long as anybody reads.
ENDLESS = "SELECT a.*, b.order_id AS other FROM sales.orders a, sales.orders b"
#: 7e14 rows to count for alice: computes for as long as it is allowed to.
LONG_COUNT = "SELECT count(*) FROM sales.orders a, sales.orders b, sales.orders c"

_CLIENT = r"""
import sys, time
import pyarrow.flight as flight
uri, sql, mode = sys.argv[1:4]
client = flight.FlightClient(uri)
options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("bob", "bob")])
info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
reader = client.do_get(info.endpoints[0].ticket, options)
if mode == "read_one":
    reader.read_chunk()
print("streaming", flush=True)
time.sleep(600)
"""


def _client_process(private: Private, sql: str, mode: str) -> subprocess.Popen:
    """A separate client process that starts ``sql`` streaming and then holds it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, private.uri, sql, mode], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "streaming"
    return process


def _new_query_events(private: Private, before: int) -> list[dict]:
    return private.events("query")[before:]


# --------------------------------------------------------------------------- clients


@pytest.mark.parametrize("mode", ["read_one", "never_read"])
def test_client_killed_mid_stream_stops_the_query(
    demo_mesh: Path, tmp_path: Path, mode: str
) -> None:
    with private_gateway(
        demo_mesh, tmp_path, gateway={"max_concurrent_queries_per_user": 1}
    ) as running:
        before = len(running.events("query"))
        client = _client_process(running, ENDLESS, mode)
        time.sleep(0.5)
        client.kill()
        client.wait()
        events = poll_for(lambda: _new_query_events(running, before), 5)
        assert events, "no `query` log line within 5 s of the client's death: the query still runs"
        assert events[0]["outcome"] in ("cancelled", "disconnected"), events[0]
        assert "internal_error" not in running.log(), (
            "a client's disconnect was logged as an internal error"
        )
        # its slot is free again (max 1 concurrent query per user) and others are served
        assert run_sql(running, "bob", "SELECT count(*) AS n FROM sales.orders", timeout=10).column(
            0
        ).to_pylist() == [200_000]
        assert serves(running, "alice")


def test_client_cancel_stops_the_query(demo_mesh: Path, tmp_path: Path) -> None:
    with private_gateway(
        demo_mesh, tmp_path, gateway={"max_concurrent_queries_per_user": 1}
    ) as running:
        before = len(running.events("query"))
        client, options = running.client("bob")
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(ENDLESS.encode()), options
        )
        reader = client.do_get(info.endpoints[0].ticket, options)
        reader.read_chunk()
        reader.cancel()
        events = poll_for(lambda: _new_query_events(running, before), 5)
        assert events and events[0]["outcome"] in ("cancelled", "disconnected"), events
        assert "internal_error" not in running.log(), (
            "a client's cancel was logged as an internal error"
        )
        assert run_sql(running, "bob", "SELECT 1 AS one", timeout=10).num_rows == 1


def test_client_that_never_reads_is_stopped_by_the_timeout(demo_mesh: Path, tmp_path: Path) -> None:
    """A connected client that opens a stream and never reads must not hold the query (its
    DuckDB cursor and the user's slot) past the query timeout."""
    with private_gateway(
        demo_mesh,
        tmp_path,
        gateway={"max_concurrent_queries_per_user": 1},
        engine={"query_timeout_seconds": 1},
    ) as running:
        before = len(running.events("query"))
        client = _client_process(running, ENDLESS, "never_read")
        try:
            events = poll_for(lambda: _new_query_events(running, before), 4)
            _, _, error = timed(run_sql, running, "bob", "SELECT 1 AS one", timeout=5)
        finally:
            client.kill()
            client.wait()
        assert events, (
            "4 s after a never-reading client opened its stream (query_timeout_seconds = 1) the "
            "query has not ended"
        )
        assert error is None, f"bob's slot is still held by the stalled stream: {message(error)}"


# --------------------------------------------------------------------------- product files


def _assert_fails_naming(private: Private, sql: str, product: str) -> str:
    _, _, error = timed(run_sql, private, "bob", sql, timeout=20)
    assert isinstance(error, STATUS_ERRORS), f"{sql} still answered after its files broke"
    text = message(error)
    assert product in text, f"the error does not name {product}: {text}"
    assert "Traceback" not in text
    return text


def _assert_others_serve(private: Private, *sql: str) -> None:
    for statement in sql:
        table = run_sql(private, "bob", statement, timeout=20)
        assert table.num_rows >= 1


def _assert_unhealthy(private: Private, product: str) -> None:
    products = health(private)["products"]
    assert products[product] != "ok", f"Health still says {product} is ok: {products}"


@pytest.fixture
def files_gateway(demo_mesh: Path, tmp_path: Path):
    with private_gateway(demo_mesh, tmp_path) as running:
        assert set(health(running)["products"].values()) == {"ok"}
        yield running


def test_parquet_file_deleted(files_gateway: Private) -> None:
    (files_gateway.mesh / "crm/data/customers.parquet").unlink()
    _assert_fails_naming(files_gateway, "SELECT count(*) FROM crm.customers", "crm.customers")
    _assert_others_serve(
        files_gateway,
        "SELECT count(*) FROM sales.orders",
        "SELECT count(*) FROM logistics.shipments",
    )
    _assert_unhealthy(files_gateway, "crm.customers")
    assert health(files_gateway)["products"]["sales.orders"] == "ok"


def test_parquet_partition_truncated(files_gateway: Private) -> None:
    part = min((files_gateway.mesh / "logistics/data/shipments").rglob("*.parquet"))
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    _assert_fails_naming(
        files_gateway, "SELECT sum(order_id) FROM logistics.shipments", "logistics.shipments"
    )
    _assert_others_serve(
        files_gateway, "SELECT count(*) FROM sales.orders", "SELECT count(*) FROM crm.customers"
    )
    _assert_unhealthy(files_gateway, "logistics.shipments")
    assert health(files_gateway)["products"]["crm.customers"] == "ok"


def test_parquet_file_replaced_by_garbage(files_gateway: Private) -> None:
    path = files_gateway.mesh / "crm/data/customers.parquet"
    size = path.stat().st_size
    path.write_bytes(os.urandom(size))
    _assert_fails_naming(files_gateway, "SELECT * FROM crm.customers", "crm.customers")
    _assert_others_serve(files_gateway, "SELECT count(*) FROM sales.orders")
    _assert_unhealthy(files_gateway, "crm.customers")


def test_partition_directory_removed(files_gateway: Private) -> None:
    import shutil

    shutil.rmtree(files_gateway.mesh / "logistics/data/shipments")
    _assert_fails_naming(
        files_gateway, "SELECT count(*) FROM logistics.shipments", "logistics.shipments"
    )
    _assert_others_serve(files_gateway, "SELECT count(*) FROM sales.orders")
    _assert_unhealthy(files_gateway, "logistics.shipments")


def test_duckdb_file_overwritten_with_garbage(files_gateway: Private) -> None:
    path = files_gateway.mesh / "sales/data/orders.duckdb"
    size = path.stat().st_size
    with path.open("r+b") as handle:  # in place: the attached descriptor sees it
        handle.write(os.urandom(size))
    _assert_fails_naming(files_gateway, "SELECT sum(amount) FROM sales.orders", "sales.orders")
    assert files_gateway.alive()
    _assert_others_serve(
        files_gateway,
        "SELECT count(*) FROM crm.customers",
        "SELECT count(*) FROM logistics.shipments",
    )
    _assert_unhealthy(files_gateway, "sales.orders")


def test_health_of_a_restricted_user_lists_only_their_products(files_gateway: Private) -> None:
    assert set(health(files_gateway, "carol")["products"]) == {"crm.customers"}
    assert health(files_gateway, "dave")["products"] == {}


# --------------------------------------------------------------------------- descriptors


def test_policy_file_edited_invalid_keeps_the_last_good_version(files_gateway: Private) -> None:
    path = files_gateway.mesh / "sales/policy.csv"
    good = path.read_text(encoding="utf-8")
    broken_line = len(good.splitlines()) + 1
    path.write_text(
        good + "p, analyst_eu, sales.orders, filter, allow, region = = {user.region}\n",
        encoding="utf-8",
    )
    rejected = poll_for(lambda: files_gateway.events("policy_rejected"), 5)
    assert rejected, "no policy_rejected log line within 5 s"
    assert (
        rejected[0]["file"].endswith("sales/policy.csv") and rejected[0]["line"] == broken_line
    ), rejected[0]
    assert f"policy.csv:{broken_line}" in rejected[0]["error"]
    # the last good version is in force: alice still reads, still only EU
    table = run_sql(files_gateway, "alice", "SELECT DISTINCT region FROM sales.orders")
    assert table.column(0).to_pylist() == ["EU"]
    assert run_sql(
        files_gateway, "erin", "SELECT count(*) FROM sales.orders WHERE amount % 100 <> 0"
    ).column(0).to_pylist() == [0]


def test_policy_file_truncated_to_garbage_keeps_the_last_good_version(
    files_gateway: Private,
) -> None:
    path = files_gateway.mesh / "crm/policy.csv"
    path.write_bytes(b"p, analyst_eu, crm.cust\x00\xff\xfe")
    assert poll_for(lambda: files_gateway.events("policy_rejected"), 5)
    table = run_sql(files_gateway, "alice", "SELECT email FROM crm.customers LIMIT 5")
    assert all("***@" in email for email in table.column(0).to_pylist())
    assert run_sql(files_gateway, "carol", "SELECT count(*) FROM crm.customers").column(
        0
    ).to_pylist() == [20_000]


def test_contract_edited_into_invalid_yaml_keeps_the_last_good_version(
    files_gateway: Private,
) -> None:
    path = files_gateway.mesh / "crm/customers.odcs.yaml"
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("schema:", "schema: [\n  oops: {", 1), encoding="utf-8")
    rejected = poll_for(lambda: files_gateway.events("contract_rejected"), 5)
    assert rejected, "no contract_rejected log line within 5 s"
    assert "customers.odcs.yaml" in rejected[0]["error"] and "line " in rejected[0]["error"], (
        rejected[0]
    )
    _, table, error = timed(run_sql, files_gateway, "bob", "SELECT count(*) FROM crm.customers")
    assert error is None, (
        f"crm.customers is no longer served after its contract turned invalid "
        f"(the last good version should stay in force): {message(error)[:120]}"
    )
    assert table.column(0).to_pylist() == [20_000]


def test_contract_edited_to_contradict_the_data_keeps_the_last_good_version(
    files_gateway: Private,
) -> None:
    path = files_gateway.mesh / "sales/orders.odcs.yaml"
    good = path.read_text(encoding="utf-8")
    path.write_text(
        good.replace("physicalType: VARCHAR", "physicalType: INTEGER", 1), encoding="utf-8"
    )
    assert poll_for(lambda: files_gateway.events("contract_rejected"), 5), (
        "no contract_rejected log line"
    )
    _, table, error = timed(
        run_sql, files_gateway, "alice", "SELECT DISTINCT region FROM sales.orders"
    )
    assert error is None, f"sales.orders is no longer served: {message(error)[:120]}"
    assert table.column(0).to_pylist() == ["EU"]


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_during_queries_leaves_a_whole_audit_log_and_serving_resumes(
    demo_mesh: Path, tmp_path: Path
) -> None:
    marker = "/* killed-query-7c1e */"
    with private_gateway(demo_mesh, tmp_path) as running:
        # background load so that the audit log is being written at the moment of the kill
        stop = threading.Event()

        def churn(user: str) -> None:
            while not stop.is_set():
                timed(run_sql, running, user, "SELECT count(*) FROM sales.orders", timeout=5)

        workers = [
            threading.Thread(target=churn, args=(u,), daemon=True)
            for u in ("alice", "erin", "dave", "bob")
        ]
        for worker in workers:
            worker.start()
        client = _client_process(running, f"{marker} {ENDLESS}", "read_one")
        time.sleep(0.5)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(timeout=10)
        stop.set()
        client.kill()
        client.wait()
        for worker in workers:
            worker.join(timeout=10)

        raw = (running.mesh / AUDIT_FILE).read_bytes()
        assert raw.endswith(b"\n"), "the audit log ends with a half-written record"
        records = [json.loads(line) for line in raw.splitlines()]  # every line is whole JSON
        begins = [r for r in records if r["event"] == "query_begin"]
        assert len(begins) > 4
        killed = [r for r in begins if marker in r["sql"]]
        assert len(killed) == 1, "the killed query's begin record is missing"
        ended = {r["query_id"] for r in records if r["event"] == "query_end"}
        assert killed[0]["query_id"] not in ended
        for record in begins:
            assert {"time", "query_id", "user", "sql", "decision", "products"} <= record.keys()

        restarted = start_private(running.mesh, tmp_path / "restarted.log")
        try:
            assert serves(restarted, "alice")
            assert run_sql(restarted, "alice", "SELECT count(*) FROM sales.orders").column(
                0
            ).to_pylist() == [89_906]
            after = [
                json.loads(line) for line in (running.mesh / AUDIT_FILE).read_bytes().splitlines()
            ]
            assert after[: len(records)] == records, "records written before the kill changed"
            assert any(r["event"] == "query_begin" for r in after[len(records) :])
        finally:
            restarted.kill()


# --------------------------------------------------------------------------- SIGTERM


def _prepared_stream(private: Private, user: str, sql: str):
    client, options = private.client(user)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    return lambda: client.do_get(info.endpoints[0].ticket, options).read_all()


def test_sigterm_lets_an_in_flight_query_finish_and_refuses_new_ones(
    demo_mesh: Path, tmp_path: Path
) -> None:
    """A 1M-row stream (about 45 MB, far more than gRPC buffers) is being read when SIGTERM
    arrives: once the gateway says it is draining (Health), a new query is refused, then the
    stream is read to the end, complete, and the process exits within the grace."""
    grace = 5
    sql = (
        "SELECT a.*, b.order_id AS k FROM sales.orders a, "
        "(SELECT order_id FROM sales.orders ORDER BY order_id LIMIT 5) b"
    )
    with private_gateway(demo_mesh, tmp_path, gateway={"shutdown_grace_seconds": grace}) as running:
        client, options = running.client("bob")
        newcomer = running.client("erin")
        watcher = running.client("carol")
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        reader = client.do_get(info.endpoints[0].ticket, options)
        first = reader.read_chunk().data
        sent = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        draining = poll_for(lambda: health(running, client=watcher)["status"] == "draining", 3)
        _, _, refused = timed(run_sql, running, "erin", "SELECT 1", timeout=5, client=newcomer)
        _, rest, error = timed(reader.read_all)
        try:
            running.process.wait(timeout=grace + 3)
        except subprocess.TimeoutExpired:
            pytest.fail("the gateway did not exit within grace + 3 s of SIGTERM")
        exited = time.monotonic() - sent

    assert draining, "Health never said draining after SIGTERM"
    assert isinstance(refused, STATUS_ERRORS), "a query sent while draining was accepted"
    assert "shutting down" in message(refused)
    assert error is None, f"the in-flight stream failed: {message(error)}"
    assert first.num_rows + rest.num_rows == 200_000 * 5
    assert exited < grace + 3
    assert running.process.returncode == 0


def test_sigterm_stops_the_gateway_despite_a_client_that_stopped_reading(
    demo_mesh: Path, tmp_path: Path
) -> None:
    """A client that reads one batch of a large stream and then neither reads nor goes away
    holds its gRPC call for ever (flow control), and pyarrow's shutdown waits for every
    call: the gateway still exits after the grace, its query ended in the audit as
    "shutdown", the audit log closed and its spill directory removed."""
    grace = 1
    sql = (
        "SELECT a.*, b.order_id AS k FROM sales.orders a, "
        "(SELECT order_id FROM sales.orders ORDER BY order_id LIMIT 10) b"
    )
    with private_gateway(demo_mesh, tmp_path, gateway={"shutdown_grace_seconds": grace}) as running:
        spill = Path(tempfile.gettempdir()).glob(f"meshgate-spill-{running.process.pid}-*")
        spill_dirs = list(spill)
        client, options = running.client("bob")
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        reader = client.do_get(info.endpoints[0].ticket, options)
        assert reader.read_chunk().data.num_rows > 0  # then it reads no more
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=grace + 30)
        except subprocess.TimeoutExpired:
            pytest.fail("the gateway never exited: SIGTERM waited for the stalled client")
        finally:
            reader.cancel()
            client.close()
        events = running.events()
        ends = [r for r in running.audit() if r.get("event") == "query_end"]
    assert running.process.returncode == 0
    assert any(e.get("event") == "shutdown_abandons_calls" for e in events)
    assert [e["outcome"] for e in ends] == ["shutdown"]
    assert spill_dirs and not any(d.exists() for d in spill_dirs)


def test_sigterm_cancels_a_query_still_running_at_the_end_of_the_grace(
    demo_mesh: Path, tmp_path: Path
) -> None:
    grace = 2
    with private_gateway(
        demo_mesh, tmp_path, gateway={"shutdown_grace_seconds": grace}, workload=NO_COST_LIMIT
    ) as running:
        run = _prepared_stream(running, "alice", LONG_COUNT)  # default timeout: 300 s
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(r=timed(run)), daemon=True)
        thread.start()
        time.sleep(0.3)
        sent = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=grace + 4)
            exited = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            exited = None
        log = running.events()
        thread.join(timeout=5)
    assert any(e.get("event") == "shutdown_cancels_queries" for e in log)
    assert exited is not None, (
        f"the gateway logged shutdown_cancels_queries but was still running {grace + 4} s after "
        f"SIGTERM (shutdown_grace_seconds = {grace}): the running query was not cancelled"
    )
    assert "r" in result, "the client of the running query never returned"
    _, table, error = result["r"]
    assert error is not None, (
        f"the query cancelled at shutdown ended as a successful result "
        f"({table.num_rows} rows of {table.column_names}, no error): a wrong answer, not a cancellation"
    )
