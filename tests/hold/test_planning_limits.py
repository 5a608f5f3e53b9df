"""Planning is bounded and counted like execution, through real gateways (issue 11, point 6):
an oversized statement is refused right after parsing, planning needs one of the user's
concurrent-query slots, the statement size limit is the configured one, and the number of
open prepared statements per user is enforced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_manager
import pytest
from pyarrow import flight
from support.clients import STATUS_ERRORS, adbc_connect, error_text, message, run_sql
from support.polling import poll_for, timed
from support.servers import NO_COST_LIMIT, Private, all_heavy_at_once, private_gateway

CROSS_JOIN = "SELECT count(*) FROM sales.orders a, sales.orders b, sales.orders c"


def daves_statement() -> str:
    """The review's statement: 6,500 CTEs and 35,000 references to the first (205 KB)."""
    bodies = ["a AS (SELECT 1 AS x)"] + [f"c{i} AS (SELECT 1)" for i in range(1, 6_500)]
    return "WITH " + ", ".join(bodies) + " SELECT 1 AS one FROM " + ", ".join(["a"] * 35_000)


@pytest.fixture(scope="module")
def one_slot(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("one_slot"),
        gateway={"max_concurrent_queries_per_user": 1, "max_prepared_statements_per_user": 3},
        engine={"query_timeout_seconds": 60},
        # refused, never queued; 1 each in every group (the demo's interactive group says 4)
        workload={**NO_COST_LIMIT, "max_queue_wait_seconds": 0, "max_running_per_user": 1},
        prepare=all_heavy_at_once,  # per-user limits are the subject, not the heavy lane
    ) as running:
        yield running


def test_a_statement_too_large_to_plan_is_refused_naming_the_limit(one_slot: Private) -> None:
    """dave (no product access) held the planner for 73-133 s with this statement."""
    _, _, error = timed(run_sql, one_slot, "dave", daves_statement(), timeout=60)
    assert isinstance(error, STATUS_ERRORS), "dave's statement was answered"
    text = message(error)
    assert "syntax tree nodes" in text and "100,000" in text and "split it" in text, text
    assert run_sql(one_slot, "bob", "SELECT 1 AS one").column(0).to_pylist() == [1]


@pytest.mark.slow
def test_planning_needs_a_concurrent_query_slot(one_slot: Private) -> None:
    """With erin's only slot held by a running query, her next GetFlightInfo (planning) is
    refused, not planned; once the query ends she plans again."""
    client, options = one_slot.client("erin")
    long_options = flight.FlightCallOptions(headers=options.headers, timeout=20)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(CROSS_JOIN.encode()), options)
    outcome: dict = {}

    def read_long():
        return client.do_get(info.endpoints[0].ticket, long_options).read_all()

    def hold_slot() -> None:
        outcome["result"] = timed(read_long)

    holder = threading.Thread(target=hold_slot)
    holder.start()

    def planning_refused() -> str | None:
        _, _, error = timed(run_sql, one_slot, "erin", "SELECT 1 AS one", timeout=10)
        if error is not None and "resource exhausted" in message(error).lower():
            return message(error)
        return None

    refused = poll_for(planning_refused, 15, interval=0.2)
    holder.join()
    assert refused, "erin planned a statement while her only slot was running a query"
    assert "retry" in refused
    _, _, error = outcome["result"]
    assert error is not None  # the cross join was stopped by the client's deadline

    def planned_again():
        return timed(run_sql, one_slot, "erin", "SELECT 2 AS two", timeout=10)[1]

    after = poll_for(planned_again, 30, 0.2)
    assert after is not None and after.column(0).to_pylist() == [2]


def test_open_prepared_statements_per_user_are_limited(one_slot: Private) -> None:
    with adbc_connect(one_slot.uri, "carol") as conn:
        cursors = [conn.cursor() for _ in range(4)]
        try:
            for cursor in cursors[:3]:
                cursor.adbc_prepare("SELECT count(*) AS n FROM crm.customers WHERE region = ?")
            with pytest.raises(adbc_driver_manager.Error) as caught:
                cursors[3].adbc_prepare("SELECT 1 AS one")
            text = error_text(caught.value)
            assert "3 open prepared statements" in text, text
            assert "max_prepared_statements_per_user" in text, text
            assert "close" in text
            with adbc_connect(one_slot.uri, "bob") as other, other.cursor() as cursor:
                cursor.adbc_prepare("SELECT 1 AS one")  # another user is not affected
            cursors[0].close()  # ADBC closes its prepared statement
            cursors[3].close()  # a statement whose prepare failed is not reused
            cursors[0] = cursors[3] = conn.cursor()
            cursors[3].adbc_prepare("SELECT 2 AS two")  # a closed one made room
            cursors[3].execute("SELECT 2 AS two")
            assert cursors[3].fetchall() == [(2,)]
        finally:
            for cursor in cursors[1:]:
                cursor.close()


@pytest.mark.slow
def test_statement_size_limit_is_configurable(demo_mesh: Path, tmp_path: Path) -> None:
    with private_gateway(demo_mesh, tmp_path, gateway={"max_statement_bytes": 2048}) as running:
        padding = "x" * 3000
        _, _, error = timed(run_sql, running, "alice", f"SELECT 1 AS one -- {padding}", timeout=10)
        assert isinstance(error, STATUS_ERRORS)
        text = message(error)
        assert "over the limit of 2048" in text and "max_statement_bytes" in text, text
        small = run_sql(running, "alice", f"SELECT 1 AS one -- {padding[:1500]}", timeout=10)
        assert small.column(0).to_pylist() == [1]
