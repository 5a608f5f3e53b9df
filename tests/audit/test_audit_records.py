"""Audit records of repeated statements: the parts a begin record repeats (who, the governed
statement, its columns, masks and rules) are encoded once and reused, and each record must
still say exactly what its own statement was granted."""

from __future__ import annotations

from pathlib import Path

from support.clients import adbc_connections
from support.servers import private_gateway

from gateway.audit.log import AuditLog, read_audit

POINT_LOOKUP = "SELECT * FROM crm.customers WHERE customer_id = 42"


def test_an_encoded_record_is_the_record_append_writes(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, fsync="batch")
    fields = {"query_id": "q1", "user": "ann", "roles": ["r"], "n": 1.5, "none": None}
    log.append("query_begin", **fields)
    members = '"query_id":"q1","user":"ann","roles":["r"],"n":1.5,"none":null'
    log.append_encoded("query_begin", members)
    log.append_encoded("query_end", "", lazily=True)
    log.close()
    first, second, third = read_audit(tmp_path)
    assert [*first] == [*second] == ["time", "event", *fields]
    assert {k: v for k, v in first.items() if k != "time"} == {
        k: v for k, v in second.items() if k != "time"
    }
    assert first["time"] <= second["time"] <= third["time"]
    assert first["time"].endswith("+00:00") and third["event"] == "query_end"


def test_repeated_statements_of_users_under_different_policies(
    demo_mesh: Path, tmp_path: Path
) -> None:
    """alice (an analyst: email and ssn masked) and bob (admin) repeat one statement,
    interleaved, on reused and one-off cursors: each begin record carries its own user's
    columns, masks and rules, every begin is followed by its end."""
    users = ("alice", "bob")
    with private_gateway(demo_mesh, tmp_path) as gateway, adbc_connections() as connect:
        cursors = {user: connect(gateway.uri, user).cursor() for user in users}
        for _ in range(3):
            for user in users:
                cursors[user].execute(POINT_LOOKUP)
                cursors[user].fetch_arrow_table()
                with connect(gateway.uri, user).cursor() as one_off:
                    one_off.execute(POINT_LOOKUP)
                    one_off.fetch_arrow_table()
        for cursor in cursors.values():
            cursor.close()
        records = list(read_audit(gateway.mesh / ".meshgate" / "audit"))
    begins = [r for r in records if r["event"] == "query_begin" and r["sql"] == POINT_LOOKUP]
    position = {r["query_id"]: i for i, r in enumerate(records) if r["event"] == "query_end"}
    assert len(begins) == 12
    for begin in begins:
        assert position[begin["query_id"]] > records.index(begin)
    by_user = {user: [b for b in begins if b["user"] == user] for user in users}
    for user, mine in by_user.items():
        assert len(mine) == 6
        assert {len({b["query_id"] for b in mine})} == {6}
        shared = {"roles", "governed_sql", "columns", "rules", "products", "auth"}
        first = {key: mine[0][key] for key in shared}
        assert all({key: b[key] for key in shared} == first for b in mine), user
    alice, bob = by_user["alice"][0], by_user["bob"][0]
    assert alice["columns"]["crm.customers"]["masked"] == {"email": "partial_email", "ssn": "hash"}
    assert bob["columns"]["crm.customers"]["masked"] != alice["columns"]["crm.customers"]["masked"]
    assert alice["rules"] != bob["rules"]
    assert alice["governed_sql"] != bob["governed_sql"]


def test_long_statements_are_encoded_each_time_not_kept(demo_mesh: Path) -> None:
    """The begin record's statement fields are kept per statement only for short
    statements: a long one is encoded alike, and nothing of it is kept."""
    from gateway.audit.recorder import NullAuditRecorder, _EncodedParts
    from gateway.catalog.state import MeshState
    from gateway.config import load_config
    from gateway.query.statements import StatementPlanner
    from gateway.security.principal import Principal

    planner = StatementPlanner(MeshState(demo_mesh, load_config(demo_mesh)), NullAuditRecorder())
    bob = Principal("bob", ("admin",), {})
    parts = _EncodedParts()
    long_text = "SELECT order_id FROM sales.orders -- " + "x" * 20_000
    long_planned = planner.plan(bob, long_text)
    encoded = parts.statement(long_planned)
    assert long_text in encoded
    assert parts.statement(long_planned) == encoded and not parts._statements
    short = planner.plan(bob, "SELECT order_id FROM sales.orders")
    assert parts.statement(short) == parts.statement(short) and len(parts._statements) == 1


def test_the_end_callback_holds_nothing_of_the_statement(demo_mesh: Path, tmp_path: Path) -> None:
    """A placed query's end callback waits up to a ticket's life for its nodes' reports:
    it holds the audit id, user and products, not the planned query and its SQL."""
    from gateway.audit.recorder import AuditRecorder, NullAuditRecorder
    from gateway.catalog.state import MeshState
    from gateway.config import load_config
    from gateway.engine.streaming import PlannedQuery, StreamStats
    from gateway.query.statements import StatementPlanner
    from gateway.security.principal import Principal

    planner = StatementPlanner(MeshState(demo_mesh, load_config(demo_mesh)), NullAuditRecorder())
    text = "SELECT order_id FROM sales.orders -- " + "y" * 5_000
    planned = planner.plan(Principal("bob", ("admin",), {}), text)
    log = AuditLog(tmp_path / "audit", fsync="batch")
    _, finish = AuditRecorder(log).begin_deferred(planned)
    held = [cell.cell_contents for cell in finish.__closure__ or ()]
    assert not any(isinstance(value, PlannedQuery) for value in held)
    assert not any(isinstance(value, str) and "y" * 100 in value for value in held)
    finish(StreamStats(), "ok", None)
    log.close()
    assert [r["event"] for r in read_audit(tmp_path / "audit")] == ["query_begin", "query_end"]
