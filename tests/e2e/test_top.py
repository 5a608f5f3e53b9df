"""``meshgate top`` and ``meshgate cancel`` against a real gateway with a long query running:
an admin sees it and cancels it (the client gets a cancelled error, the audit says who
cancelled whose query); anyone else is refused and sees nothing of it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyarrow import flight
from support.clients import CLIENT_ERRORS, adbc_connect, run_sql
from support.metrics import metrics_url, scrape
from support.polling import wait_until
from support.servers import (
    NO_COST_LIMIT,
    Private,
    configure,
    configure_groups,
    copy_mesh,
    start_private,
)

pytestmark = pytest.mark.slow

#: About 4e10 rows aggregated into one row: minutes of work before the first batch; it
#: can only be stopped (the time limit below bounds it if the test fails).
LONG_AGGREGATE = "SELECT sum(a.order_id * b.order_id % 7) AS s FROM sales.orders a, sales.orders b"
TIME_LIMIT_SECONDS = 120


@pytest.fixture
def served(demo_mesh: Path, tmp_path: Path) -> Iterator[Private]:
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    configure(mesh, "engine", query_timeout_seconds=TIME_LIMIT_SECONDS)
    configure(mesh, "metrics", port=0)
    configure_groups(mesh, **NO_COST_LIMIT)  # the long query is the subject: admit it
    running = start_private(mesh, tmp_path / "gateway.log")
    try:
        yield running
    finally:
        running.kill()


def meshgate(*args: str) -> subprocess.CompletedProcess:
    """The ``meshgate`` command in a process of its own, on a wide terminal."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )


def listed(running: Private, user: str = "bob") -> list[dict]:
    client, options = running.client(user)
    try:
        (result,) = client.do_action(flight.Action("meshgate.list_queries", b""), options)
    finally:
        client.close()
    return json.loads(result.body.to_pybytes())["queries"]


class Background:
    """A statement run on a thread, by ADBC or (``flight=True``) by plain pyarrow.flight;
    ``error`` is what its client got."""

    def __init__(self, running: Private, user: str, sql: str, flight: bool = False) -> None:
        self.error: BaseException | None = None
        run = self._run_flight if flight else self._run_adbc
        self._thread = threading.Thread(target=run, args=(running, user, sql), daemon=True)
        self._thread.start()

    def _run_adbc(self, running: Private, user: str, sql: str) -> None:
        connection = adbc_connect(running.uri, user)
        cursor = connection.cursor()
        try:
            cursor.execute(sql)
            cursor.fetchall()
        except CLIENT_ERRORS as exc:
            self.error = exc
        finally:
            for resource in (cursor, connection):  # now, not in a garbage-collector callback
                with contextlib.suppress(Exception):  # what a cancelled call left may fail
                    resource.close()

    def _run_flight(self, running: Private, user: str, sql: str) -> None:
        try:
            run_sql(running, user, sql)
        except CLIENT_ERRORS as exc:
            self.error = exc

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def test_an_admin_sees_and_cancels_a_long_query_others_are_refused(served: Private):
    url = metrics_url(served.events("gateway_started"))
    before = scrape(url)
    noted = LONG_AGGREGATE + " -- " + "n" * 300  # shown and kept: its first 200 characters
    erin = Background(served, "erin", noted)

    def erins() -> list[dict]:
        return [q for q in listed(served) if q["user"] == "erin"]

    def running_query() -> dict | None:  # planned first, then running
        return next((q for q in erins() if q["state"] == "running"), None)

    query = wait_until(running_query, timeout=60, what="erin's query among the running ones")
    assert isinstance(query, dict)
    query_id = query["query_id"]
    assert query["engine"] == "embedded"
    assert query["statement"] == noted[:200]
    assert query["group"] == "interactive"  # erin's role, ops, is the demo's interactive

    # The admin's view, as the command line shows it.
    shown = meshgate("top", "--once", "--uri", served.uri, "--user", "bob", "--password", "bob")
    assert shown.returncode == 0, shown.stderr
    line = next((ln for ln in shown.stdout.splitlines() if query_id in ln), "")
    assert "erin" in line and "running" in line and "embedded" in line, shown.stdout
    assert "sum(a.order_id * b.order_id % 7)" in line, shown.stdout

    # Anyone else: PERMISSION_DENIED, nothing of erin's query, and it keeps running.
    alice, options = served.client("alice")
    try:
        with pytest.raises(flight.FlightUnauthorizedError) as listing:
            list(alice.do_action(flight.Action("meshgate.list_queries", b""), options))
        body = json.dumps({"query_id": query_id}).encode()
        with pytest.raises(flight.FlightUnauthorizedError) as cancelling:
            list(alice.do_action(flight.Action("meshgate.cancel_query", body), options))
    finally:
        alice.close()
    for refused in (listing.value, cancelling.value):
        assert "for admins" in str(refused)
        assert "erin" not in str(refused) and "order_id" not in str(refused)
    as_alice = meshgate(
        "top", "--once", "--uri", served.uri, "--user", "alice", "--password", "alice"
    )
    assert as_alice.returncode == 1
    assert "for admins" in as_alice.stderr
    assert "erin" not in as_alice.stdout + as_alice.stderr
    assert [q["query_id"] for q in erins()] == [query_id]

    # The admin cancels it: the client gets a cancelled error.
    cancelled = meshgate(
        "cancel", query_id, "--uri", served.uri, "--user", "bob", "--password", "bob"
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancelled {query_id} (erin's query in resource group interactive)" in cancelled.stdout
    assert erin.wait(timeout=30), "erin's query still runs after the admin cancelled it"
    assert erin.error is not None, "erin's query returned a result although it was cancelled"
    assert "the query was cancelled" in str(erin.error)
    assert erins() == []

    # The audit: who cancelled whose query, the query's own end, the refused attempts.
    records = wait_until(
        lambda: (
            (audit := served.audit())
            and any(r["event"] == "query_end" and r["user"] == "erin" for r in audit)
            and audit
        ),
        what="erin's end record",
    )
    assert isinstance(records, list)
    (cancel,) = [r for r in records if r["event"] == "query_cancelled_by_admin"]
    assert (cancel["user"], cancel["query_user"], cancel["query_id"]) == ("bob", "erin", query_id)
    assert cancel["sql"] == noted[:200]  # its head, as shown; query_begin has it whole
    (end,) = [r for r in records if r["event"] == "query_end" and r["user"] == "erin"]
    assert end["outcome"] == "cancelled"
    refused = [r for r in records if r["event"] == "admin_action_refused"]
    assert sorted(r["action"] for r in refused if r["user"] == "alice") == [
        "meshgate.cancel_query",
        "meshgate.list_queries",
        "meshgate.list_queries",
    ]

    after = scrape(url)
    assert (
        after.value("meshgate_admin_cancels_total") - before.value("meshgate_admin_cancels_total")
        == 1
    )
    assert (
        after.total("meshgate_queries_total", outcome="cancelled")
        - before.total("meshgate_queries_total", outcome="cancelled")
        == 1
    )


def test_cancelling_an_unknown_query_says_so(served: Private):
    result = meshgate(
        "cancel", "q999999", "--uri", served.uri, "--user", "bob", "--password", "bob"
    )
    assert result.returncode == 1
    assert "no running or queued query 'q999999'" in result.stderr
    assert not [r for r in served.audit() if r["event"] == "query_cancelled_by_admin"]


def test_a_queued_query_is_shown_counted_and_cancelled(demo_mesh: Path, tmp_path: Path):
    """One slot in the interactive group (erin's and carol's): erin's long query holds it, carol's waits in the
    queue; the admin sees both, the gauges and the queue-wait histogram count them, and
    cancelling carol's takes it out of the queue."""
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    configure(mesh, "engine", query_timeout_seconds=TIME_LIMIT_SECONDS)
    configure(mesh, "metrics", port=0)
    configure_groups(mesh, max_running=1, max_queue_wait_seconds=100, **NO_COST_LIMIT)
    served = start_private(mesh, tmp_path / "gateway.log")
    try:
        url = metrics_url(served.events("gateway_started"))
        before = scrape(url)
        erin = Background(served, "erin", LONG_AGGREGATE)
        wait_until(
            lambda: any(q["user"] == "erin" and q["state"] == "running" for q in listed(served)),
            timeout=60,
            what="erin's query running",
        )
        # Plain Flight: ADBC's connection fetches SqlInfo first, which queues too.
        carol = Background(served, "carol", "SELECT count(*) AS n FROM crm.customers", flight=True)
        queued = wait_until(
            lambda: next((q for q in listed(served) if q["user"] == "carol"), None),
            what="carol's query in the queue",
        )
        assert isinstance(queued, dict)
        assert queued["state"] == "queued"
        now = scrape(url)
        assert now.value("meshgate_queries_running", group="interactive") == 1
        assert now.value("meshgate_queries_queued", group="interactive") == 1

        shown = meshgate("top", "--once", "--uri", served.uri, "--user", "bob", "--password", "bob")
        assert "interactive 1 running / 1 queued" in shown.stdout, shown.stdout
        line = next((ln for ln in shown.stdout.splitlines() if queued["query_id"] in ln), "")
        assert "carol" in line and "queued" in line, shown.stdout

        cancelled = meshgate(
            "cancel", queued["query_id"], "--uri", served.uri, "--user", "bob", "--password", "bob"
        )
        assert cancelled.returncode == 0, cancelled.stderr
        assert carol.wait(timeout=30), "carol's query still waits after the admin cancelled it"
        assert "cancelled while it waited for a slot" in str(carol.error)
        assert [q["user"] for q in listed(served)] == ["erin"]

        after = scrape(url)
        assert after.value("meshgate_queries_queued", group="interactive") == 0
        waits = "meshgate_queue_wait_seconds_count"
        assert (
            after.value(waits, group="interactive", phase="planning")
            - before.value(waits, group="interactive", phase="planning")
            >= 2
        )  # erin's planning (at once) and carol's wait
        waited = "meshgate_queue_wait_seconds_sum"
        assert after.value(waited, group="interactive", phase="planning") > 0  # carol's wait
        assert before.value(waited, group="interactive", phase="planning") == 0

        (running,) = listed(served)
        cancelled = meshgate(
            "cancel", running["query_id"], "--uri", served.uri, "--user", "bob", "--password", "bob"
        )
        assert cancelled.returncode == 0, cancelled.stderr
        assert erin.wait(timeout=30), "erin's query still runs after the admin cancelled it"
    finally:
        served.kill()
