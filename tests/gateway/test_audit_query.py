"""The audit log's read side (gateway.audit.query): attempts joined with their end
records and filtered by user, product and time, as ``meshgate audit`` shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.audit.log import AuditLog
from gateway.audit.query import attempts


def write_log(directory: Path) -> None:
    log = AuditLog(directory)
    try:
        log.record(
            "query_begin",
            query_id="q1",
            user="alice",
            sql="SELECT 1 FROM sales.orders",
            decision="allowed",
            products=["sales.orders"],
        )
        log.record("login_failed", user="mallory", error="invalid username or password")
        log.record(
            "query_refused",
            user="dave",
            sql="SELECT * FROM crm.customers",
            decision="denied",
            error="unknown product crm.customers",
        )
        log.record(
            "query_end",
            query_id="q1",
            user="alice",
            outcome="ok",
            rows=3,
            bytes=24,
            duration_ms=1.5,
            error=None,
        )
        log.record(
            "query_begin",
            query_id="q2",
            user="bob",
            sql="SELECT 2 FROM crm.customers",
            decision="allowed",
            products=["crm.customers"],
        )
    finally:
        log.close()


def test_attempts_join_their_end_records_and_keep_failed_logins(tmp_path: Path) -> None:
    write_log(tmp_path)
    found = attempts(tmp_path)
    assert [a.record.get("user") for a in found] == ["alice", "mallory", "dave", "bob"]
    alice, mallory, dave, bob = found
    assert alice.end["rows"] == 3 and alice.decision == "allowed"
    assert mallory.end == {} and mallory.decision == "login failed"
    assert mallory.text == "invalid username or password"
    assert dave.text == "unknown product crm.customers"
    assert bob.end == {}  # still running: no end record yet


def test_attempts_filter_by_user_product_time_and_limit(tmp_path: Path) -> None:
    write_log(tmp_path)
    assert [a.record["user"] for a in attempts(tmp_path, user="bob")] == ["bob"]
    # a refusal before resolving names the product only in its SQL
    assert [a.record["user"] for a in attempts(tmp_path, product="crm.customers")] == [
        "dave",
        "bob",
    ]
    assert attempts(tmp_path, since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(attempts(tmp_path, since=datetime.now(UTC) - timedelta(hours=1))) == 4
    assert [a.record["user"] for a in attempts(tmp_path, limit=2)] == ["dave", "bob"]
