"""The audit log: every query attempt is recorded, durably, before any row leaves.

The session gateway writes ``<demo mesh>/.meshgate/audit/audit.jsonl``. Each test tags
its statements with a unique literal so that it finds its own records among those of
every other test of the session.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from datetime import datetime

import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, flight_client
from support.logs import audit_file, audit_records, audit_text, statement_records, strip_ansi
from support.oracle import DENIED_TEMPLATE, hash_key
from support.policy_files import rule_origin
from support.polling import wait_through_errors
from support.servers import start_gateway, stop_gateway

from benchmarks.launch import REPO
from gateway.audit.log import read_audit

BEGIN_FIELDS = {
    "time",
    "event",
    "query_id",
    "user",
    "roles",
    "client",
    "sql",
    "governed_sql",
    "products",
    "columns",
    "rules",
    "decision",
}
END_FIELDS = {
    "time",
    "event",
    "query_id",
    "user",
    "outcome",
    "rows",
    "bytes",
    "duration_ms",
    "error",
}
REFUSED_FIELDS = {
    "time",
    "event",
    "query_id",
    "user",
    "roles",
    "client",
    "sql",
    "decision",
    "error",
}


def tag() -> str:
    return f"audit-{uuid.uuid4().hex[:12]}"


def run_adbc(uri: str, user: str, sql: str, params=None):
    """Execute ``sql`` as ``user``; the Arrow table, or the exception the client got."""
    connection = adbc_connect(uri, user)
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetch_arrow_table()
        except Exception as exc:  # noqa: BLE001 - the caller inspects it
            return exc
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def one(records: list[dict], event: str) -> dict:
    found = [r for r in records if r["event"] == event]
    assert len(found) == 1, f"expected one {event} record, got {found}"
    return found[0]


def ended(mesh, sql: str, executions: int = 1) -> list[dict] | None:
    """``sql``'s records once ``executions`` query_end records are written, else None."""
    records = statement_records(mesh, sql)
    return records if sum(r["event"] == "query_end" for r in records) >= executions else None


def wait_for_end(mesh, sql: str) -> list[dict]:
    return wait_through_errors(
        lambda: ended(mesh, sql), timeout=10, what=f"the query_end record of {sql!r}"
    )


def test_allowed_query_records_begin_and_end_with_every_field(gateway, demo_key):
    mesh = gateway.mesh_dir
    sql = f"SELECT customer_id, email, ssn, '{tag()}' AS tag FROM crm.customers WHERE customer_id <= 7"
    table = run_adbc(gateway.uri, "alice", sql)
    assert not isinstance(table, Exception), table
    assert table.num_rows == 7
    records = wait_for_end(mesh, sql)
    begin, end = one(records, "query_begin"), one(records, "query_end")
    assert begin.keys() >= BEGIN_FIELDS, BEGIN_FIELDS - begin.keys()
    assert end.keys() >= END_FIELDS, END_FIELDS - end.keys()
    assert begin["query_id"] == end["query_id"]
    assert begin["user"] == end["user"] == "alice"
    assert begin["roles"] == ["analyst_eu"]
    assert begin["client"], "the client address is recorded"
    assert begin["decision"] == "allowed"
    assert begin["products"] == ["crm.customers"]
    assert begin["columns"]["crm.customers"]["masked"] == {"email": "partial_email", "ssn": "hash"}
    assert begin["columns"]["crm.customers"]["visible"] == [
        "customer_id",
        "name",
        "email",
        "ssn",
        "region",
    ]
    assert begin["columns"]["crm.customers"]["row_filter"] is False
    assert (
        f"masked with partial_email by {rule_origin(mesh, 'crm', 'p, analyst_eu, crm.customers.email, mask, allow, partial_email')}"
        in begin["rules"]
    )
    assert (
        f"masked with hash by {rule_origin(mesh, 'global', 'p, *, tag:pii, mask, allow, hash')}"
        in begin["rules"]
    )
    assert "<hash key>" in begin["governed_sql"] and demo_key not in begin["governed_sql"]
    assert end["outcome"] == "ok" and end["error"] is None
    assert end["rows"] == 7 and end["bytes"] > 0 and end["duration_ms"] >= 0
    assert datetime.fromisoformat(begin["time"]) <= datetime.fromisoformat(end["time"])
    assert datetime.fromisoformat(begin["time"]).tzinfo is not None


def test_row_filter_is_recorded(gateway):
    sql = f"SELECT count(*) AS n, '{tag()}' AS tag FROM sales.orders"
    assert not isinstance(run_adbc(gateway.uri, "alice", sql), Exception)
    begin = one(wait_for_end(gateway.mesh_dir, sql), "query_begin")
    assert begin["columns"]["sales.orders"]["row_filter"] is True
    assert any(r.startswith("rows filtered by sales/policy.csv:") for r in begin["rules"]), begin[
        "rules"
    ]


@pytest.mark.parametrize(
    ("user", "template", "decision", "message"),
    [
        (
            "carol",
            "SELECT '{t}' AS tag, * FROM sales.orders",
            "denied",
            DENIED_TEMPLATE.format(key="sales.orders"),
        ),
        (
            "dave",
            "SELECT '{t}' AS tag FROM crm.customers",
            "denied",
            DENIED_TEMPLATE.format(key="crm.customers"),
        ),
        (
            "alice",
            "SELECT '{t}' AS tag FROM logistics.shipments",
            "denied",
            DENIED_TEMPLATE.format(key="logistics.shipments"),
        ),
        ("bob", "SELEC '{t}' AS tag FROM sales.orders", "failed", "syntax error"),
        (
            "bob",
            "SELECT '{t}' AS tag FROM sales.no_such_product",
            "refused",
            DENIED_TEMPLATE.format(key="sales.no_such_product"),
        ),
        ("bob", "DELETE FROM sales.orders WHERE region = '{t}'", "refused", ""),
        (
            "bob",
            "SELECT '{t}' AS tag, no_such_column FROM sales.orders",
            "failed",
            "no_such_column",
        ),
    ],
    ids=[
        "carol-denied",
        "dave-denied",
        "alice-denied",
        "bad-sql",
        "unknown-product",
        "write",
        "bad-column",
    ],
)
def test_refused_attempts_are_recorded(gateway, user, template, decision, message):
    sql = template.format(t=tag())
    outcome = run_adbc(gateway.uri, user, sql)
    assert isinstance(outcome, Exception), "the statement should have been refused"
    records = wait_through_errors(
        lambda: statement_records(gateway.mesh_dir, sql), timeout=5, what="the refusal record"
    )
    refused = one(records, "query_refused")
    assert [r["event"] for r in records] == ["query_refused"]
    assert refused.keys() >= REFUSED_FIELDS, REFUSED_FIELDS - refused.keys()
    assert refused["user"] == user and refused["decision"] == decision
    assert refused["client"]
    assert message in refused["error"]
    assert refused["error"] in str(outcome), "the audit records what the client was told"
    if decision == "denied":
        assert refused["reason"], "the audit says which rule (or default deny) refused it"


def test_failure_while_streaming_is_recorded(gateway):
    sql = f"SELECT CAST(name AS INTEGER) AS n, '{tag()}' AS tag FROM crm.customers"
    outcome = run_adbc(gateway.uri, "bob", sql)
    assert isinstance(outcome, Exception)
    records = wait_for_end(gateway.mesh_dir, sql)
    assert [r["event"] for r in records] == ["query_begin", "query_end"]
    end = records[1]
    assert end["outcome"] == "error" and end["error"] and "Conversion" in end["error"]


def test_prepared_statement_executions_are_each_recorded(gateway):
    marker = tag()
    sql = f"SELECT count(*) AS n, '{marker}' AS tag FROM sales.orders WHERE region = ?"
    connection = adbc_connect(gateway.uri, "alice")
    try:
        cursor = connection.cursor()
        cursor.adbc_prepare(sql)
        counts = []
        for region in ("US", "EU"):
            cursor.execute(sql, (region,))
            counts.append(cursor.fetch_arrow_table().column("n")[0].as_py())
        cursor.close()
    finally:
        connection.close()
    assert counts[0] == 0 and counts[1] > 0
    records = wait_through_errors(
        lambda: ended(gateway.mesh_dir, sql, executions=2),
        timeout=10,
        what="two executions recorded",
    )
    begins = [r for r in records if r["event"] == "query_begin"]
    assert len(begins) == 2
    assert all(b["parameters"] == 1 and b["columns"]["sales.orders"]["row_filter"] for b in begins)


def test_explain_is_recorded(gateway):
    marker = tag()
    for sql in (
        f"EXPLAIN SELECT '{marker}' AS tag, ssn FROM crm.customers",
        f"EXPLAIN POLICY SELECT '{marker}' AS tag, ssn FROM crm.customers",
    ):
        assert not isinstance(run_adbc(gateway.uri, "alice", sql), Exception)
        begin = one(wait_for_end(gateway.mesh_dir, sql), "query_begin")
        assert begin["explain"] in ("plan", "policy")


@pytest.mark.slow
def test_hash_key_never_reaches_the_audit_file(gateway, demo_key):
    marker = tag()
    statements = [
        ("alice", f"SELECT '{marker}' AS tag, ssn, email FROM crm.customers LIMIT 3"),
        ("carol", f"SELECT '{marker}' AS tag, email FROM crm.customers LIMIT 3"),
        ("alice", f"EXPLAIN SELECT '{marker}' AS tag, ssn FROM crm.customers WHERE ssn > 'a'"),
        ("alice", f"EXPLAIN POLICY SELECT '{marker}' AS tag, ssn FROM crm.customers"),
        ("alice", f"SELECT '{marker}' AS tag, ssn + 1 FROM crm.customers"),
        ("alice", f"SELECT '{marker}' AS tag, CAST(ssn AS INTEGER) FROM crm.customers"),
        ("carol", f"SELECT '{marker}' AS tag, sha256(email) FROM crm.customers GROUP BY region"),
        (
            "alice",
            f"SELECT '{marker}' AS tag, a.ssn FROM crm.customers a JOIN crm.customers b ON a.ssn = b.ssn LIMIT 1",
        ),
    ]
    for user, sql in statements:
        run_adbc(gateway.uri, user, sql)
    wait_through_errors(
        lambda: (
            sum(1 for r in audit_records(gateway.mesh_dir) if marker in r.get("sql", ""))
            >= len(statements)
        ),
        timeout=10,
        what="every statement audited",
    )
    text = audit_text(gateway.mesh_dir)
    assert marker in text
    assert demo_key not in text
    assert "<hash key>" in text


def _events_on_disk(mesh, sql: str) -> list[str]:
    """The events of ``sql``'s queries in the audit file as it is now."""
    assert audit_file(mesh).exists()
    return [r["event"] for r in statement_records(mesh, sql)]


def _assert_begin_before_end(mesh, sql: str) -> None:
    events = _events_on_disk(mesh, sql)
    assert "query_begin" in events, "no query_begin record when the first batch arrived"
    # The premise of the test: the result (~800k rows) is far larger than what gRPC
    # buffers, so the stream cannot have ended yet.
    assert "query_end" not in events, "the stream ended before its first batch was read"


def test_begin_record_is_on_disk_when_the_first_batch_arrives_adbc(gateway):
    sql = f"SELECT *, '{tag()}' AS tag FROM sales.orders, (VALUES (1), (2), (3), (4)) AS t(x)"
    connection = adbc_connect(gateway.uri, "bob")
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        reader = cursor.fetch_record_batch()
        batch = reader.read_next_batch()
        assert batch.num_rows > 0
        _assert_begin_before_end(gateway.mesh_dir, sql)
        with contextlib.suppress(Exception):
            reader.close()
        with contextlib.suppress(Exception):
            cursor.close()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def test_begin_record_is_on_disk_when_the_first_batch_arrives_flight(gateway):
    sql = f"SELECT *, '{tag()}' AS tag FROM sales.orders, (VALUES (1), (2), (3), (4)) AS t(x)"
    client, options = flight_client(gateway.uri, "bob")
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        reader = client.do_get(info.endpoints[0].ticket, options)
        chunk = reader.read_chunk()
        assert chunk.data.num_rows > 0
        _assert_begin_before_end(gateway.mesh_dir, sql)
        with contextlib.suppress(Exception):
            reader.cancel()
    finally:
        client.close()


@pytest.mark.slow
def test_audit_cli_lists_a_users_queries(gateway):
    alice_marker, bob_marker = tag(), tag()
    alice_sql = f"SELECT '{alice_marker}' AS t"
    assert not isinstance(
        run_adbc(gateway.uri, "alice", f"{alice_sql}, count(*) FROM sales.orders"), Exception
    )
    assert not isinstance(
        run_adbc(gateway.uri, "bob", f"SELECT '{bob_marker}' AS t, count(*) FROM sales.orders"),
        Exception,
    )
    wait_through_errors(
        lambda: all(
            any(
                m in r.get("sql", "") and r["event"] == "query_begin"
                for r in audit_records(gateway.mesh_dir)
            )
            for m in (alice_marker, bob_marker)
        ),
        timeout=10,
        what="both queries audited",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400", "NO_COLOR": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            str(gateway.mesh_dir),
            "--user",
            "alice",
            "--limit",
            "100000",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = strip_ansi(result.stdout)
    assert alice_marker in out
    assert bob_marker not in out
    users = {
        cells[2].strip()
        for line in out.splitlines()
        if (cells := line.split("│")) and len(cells) > 3 and cells[1].strip()[:2].isdigit()
    }
    assert users == {"alice"}, users


@pytest.mark.slow
def test_rotated_audit_files_are_complete_and_listed_by_the_cli(mesh_copy, tmp_path):
    """With a tiny size limit the log rotates many times: no record is lost or torn, the
    key appears in none of the files, and the CLI reads the rotated files too."""
    config = mesh_copy / "mesh.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + "\n[audit]\nmax_file_bytes = 1500\n", encoding="utf-8"
    )
    key = hash_key(mesh_copy)
    running = start_gateway(mesh_copy, tmp_path / "gateway.log")
    markers = [tag() for _ in range(6)]
    try:
        for marker in markers:
            assert not isinstance(
                run_adbc(
                    running.uri, "alice", f"SELECT '{marker}' AS t, ssn FROM crm.customers LIMIT 2"
                ),
                Exception,
            )
            assert isinstance(
                run_adbc(running.uri, "alice", f"SELECT '{marker}' AS t FROM logistics.shipments"),
                Exception,
            )
    finally:
        stop_gateway(running)
    directory = mesh_copy / ".meshgate" / "audit"
    files = sorted(directory.glob("audit-*.jsonl"))
    assert len(files) >= 3, f"expected rotation, got {[f.name for f in files]}"
    records = list(read_audit(directory))
    for marker in markers:
        mine = [r for r in records if marker in r.get("sql", "")]
        assert sorted(r["event"] for r in mine) == ["query_begin", "query_refused"], (marker, mine)
    ends = {r["query_id"] for r in records if r["event"] == "query_end"}
    begins = {r["query_id"] for r in records if r["event"] == "query_begin"}
    assert begins <= ends
    text = audit_text(mesh_copy)
    assert key not in text
    for path in files:
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and all(line.startswith(b"{") for line in raw.splitlines())
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400", "NO_COLOR": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            str(mesh_copy),
            "--user",
            "alice",
            "--limit",
            "1000",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = strip_ansi(result.stdout)
    for marker in markers:
        assert marker in out, marker
