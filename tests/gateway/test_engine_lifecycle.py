"""Spill directories never pile up: an engine's goes when it is closed, when a reload
retires it, when its process stops (a gateway's or a domain node's, on SIGTERM); one
left by a killed process goes when the next engine on the host starts."""

from __future__ import annotations

import gc
import os
import signal
import weakref
from collections.abc import Callable
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql_dbapi
import pytest
import yaml
from support.mesh import running_mesh
from support.polling import wait_until
from support.servers import start_private

from gateway.audit.recorder import NullAuditRecorder
from gateway.catalog.state import MeshState
from gateway.config import EngineSettings, load_config
from gateway.engine.database import Engine
from gateway.engine.spill import SPILL_PREFIX, new_spill_directory, release, remove_orphans
from gateway.engine.streaming import stream_batches
from gateway.errors import InvalidQuery
from gateway.query.statements import StatementPlanner
from gateway.security.principal import Principal

ALICE = Principal("alice", ("analyst_eu",), {"region": "EU"})


def _spill_dirs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.name.startswith(SPILL_PREFIX))


def _wait_for(condition: Callable[[], object], what: str) -> None:
    """``support.polling.wait_until``, collecting garbage between tries (reference cycles
    may hold what is waited for)."""
    wait_until(lambda: gc.collect() >= 0 and condition(), what=what)


def test_directories_whose_lock_nobody_holds_are_removed_and_nothing_else(
    tmp_path: Path,
) -> None:
    live, lock = new_spill_directory(tmp_path)  # locked by this engine's descriptor
    orphan = tmp_path / f"{SPILL_PREFIX}4242-abc"  # its process was killed
    orphan.mkdir()
    (orphan / ".owner.lock").touch()
    (orphan / "duckdb_temp_storage-0.tmp").write_bytes(b"spilled rows")
    unlocked_old = tmp_path / f"{SPILL_PREFIX}x1y2z3"  # made before locks: owner unknown
    being_made = tmp_path / ".meshgate-spill-making-abc"
    not_ours = tmp_path / "unrelated-123-abc"
    for kept in (unlocked_old, being_made, not_ours):
        kept.mkdir()
    (being_made / ".owner.lock").touch()
    link = tmp_path / f"{SPILL_PREFIX}4243-link"
    link.symlink_to(orphan.parent / "unrelated-123-abc")

    assert remove_orphans(tmp_path) == [orphan]

    for kept in (live, unlocked_old, being_made, not_ours, link):
        assert kept.exists(), kept
    release(live, lock)
    assert not live.exists()


def test_a_new_directory_is_private_and_named_after_its_process(tmp_path: Path) -> None:
    made, lock = new_spill_directory(tmp_path)
    try:
        assert made.parent == tmp_path
        assert made.name.startswith(f"{SPILL_PREFIX}{os.getpid()}-")
        assert made.stat().st_mode & 0o777 == 0o700
        assert [p.name for p in tmp_path.iterdir()] == [made.name]
    finally:
        release(made, lock)


def test_closing_or_dropping_an_engine_removes_its_directory() -> None:
    closed = Engine(EngineSettings())
    closed_dir = closed._spill_dir
    assert closed_dir.is_dir()
    closed.close()
    assert not closed_dir.exists()

    dropped = Engine(EngineSettings())
    dropped_dir = dropped._spill_dir
    del dropped
    _wait_for(lambda: not dropped_dir.exists(), "the dropped engine's spill directory to go")


def test_a_reload_releases_the_retired_engine(mesh_copy: Path) -> None:
    """After a contract change and a query on the new snapshot, nothing holds the old
    engine (its DuckDB database, accelerated copies included) and its directory is gone."""
    state = MeshState(mesh_copy, load_config(mesh_copy))
    planner = StatementPlanner(state, NullAuditRecorder())
    sql = "SELECT region, count(*) FROM sales.orders GROUP BY region"
    before = sum(b.num_rows for b in stream_batches(planner.plan(ALICE, sql), lambda: False))
    old_engine = weakref.ref(state.current.catalog.engine)
    old_dir = state.current.catalog.engine._spill_dir

    contract = mesh_copy / "crm" / "customers.odcs.yaml"
    contract.write_text(contract.read_text(encoding="utf-8") + "\n# reviewed\n", "utf-8")
    assert state.refresh()
    new_engine = state.current.catalog.engine
    assert new_engine is not old_engine()
    after = sum(b.num_rows for b in stream_batches(planner.plan(ALICE, sql), lambda: False))
    assert after == before == 1  # alice sees her region only

    _wait_for(lambda: old_engine() is None, "the retired engine to be released")
    assert not old_dir.exists()
    assert new_engine._spill_dir.is_dir()


def test_open_statements_and_caches_keep_no_retired_engine(mesh_copy: Path) -> None:
    """A statement left open across a reload, the parameter types and the plans cached
    for the old catalog: none of them keeps its engine alive once the reload thread has
    run ``forget_stale_plans``; the statement runs on the new catalog, and keeps that plan."""
    state = MeshState(mesh_copy, load_config(mesh_copy))
    planner = StatementPlanner(state, NullAuditRecorder())
    handle, _ = planner.prepare(ALICE, "SELECT count(*) FROM sales.orders")
    assert planner.prepared_plan(ALICE, handle) is not None  # a reusable plan, kept
    _, with_parameter = planner.prepare(
        ALICE, "SELECT customer_id FROM sales.orders WHERE customer_id = ?"
    )
    assert len(planner.parameter_schema(with_parameter)) == 1  # types kept for this catalog
    old_engine = weakref.ref(state.current.catalog.engine)
    del with_parameter

    contract = mesh_copy / "crm" / "customers.odcs.yaml"
    contract.write_text(contract.read_text(encoding="utf-8") + "\n# reviewed\n", "utf-8")
    assert state.refresh()
    planner.forget_stale_plans()  # what the gateway's reload thread runs after a change
    _wait_for(lambda: old_engine() is None, "the retired engine to be released")

    replanned = planner.plan_prepared(ALICE, handle)
    assert replanned.catalog is state.current.catalog
    assert sum(b.num_rows for b in stream_batches(replanned, lambda: False)) == 1
    assert planner.prepared_plan(ALICE, handle) is not None  # the fast path again


def test_a_plan_made_before_a_reload_is_not_kept_after_it(
    mesh_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload (and its ``forget_stale_plans``) landing while an open statement is planned
    again: the plan, made on the retired catalog, is not kept."""
    state = MeshState(mesh_copy, load_config(mesh_copy))
    planner = StatementPlanner(state, NullAuditRecorder())
    handle, _ = planner.prepare(ALICE, "SELECT count(*) FROM sales.orders")
    contract = mesh_copy / "crm" / "customers.odcs.yaml"
    contract.write_text(contract.read_text(encoding="utf-8") + "\n# r1\n", "utf-8")
    assert state.refresh()
    planner.forget_stale_plans()  # the statement's plan is dropped: planned at next use
    retiring = weakref.ref(state.current.catalog.engine)
    plan = planner.plan

    def plan_then_reload(*args, **kwargs):
        planned = plan(*args, **kwargs)
        contract.write_text(contract.read_text(encoding="utf-8") + "\n# r2\n", "utf-8")
        assert state.refresh()
        planner.forget_stale_plans()
        return planned

    monkeypatch.setattr(planner, "plan", plan_then_reload)
    stale = planner.plan_prepared(ALICE, handle)
    monkeypatch.setattr(planner, "plan", plan)
    assert stale.catalog is not state.current.catalog
    del stale
    _wait_for(lambda: retiring() is None, "the retired engine to be released")
    assert planner.plan_prepared(ALICE, handle).catalog is state.current.catalog


def test_a_statement_whose_result_changed_at_a_reload_is_refused(mesh_copy: Path) -> None:
    """Its plan dropped by the reload or not, an open statement never returns columns
    other than those the client was told at prepare time."""
    state = MeshState(mesh_copy, load_config(mesh_copy))
    planner = StatementPlanner(state, NullAuditRecorder())
    bob = Principal("bob", ("admin",))
    handle, planned = planner.prepare(bob, "SELECT * FROM crm.customers")
    assert "ssn" in planned.schema.names
    contract = mesh_copy / "crm" / "customers.odcs.yaml"
    document = yaml.safe_load(contract.read_text(encoding="utf-8"))
    properties = document["schema"][0]["properties"]
    document["schema"][0]["properties"] = [p for p in properties if p["name"] != "ssn"]
    contract.write_text(yaml.safe_dump(document), "utf-8")
    assert state.refresh()
    planner.forget_stale_plans()
    with pytest.raises(InvalidQuery, match="changed since this statement was prepared"):
        planner.plan_prepared(bob, handle)
    _, fresh = planner.prepare(bob, "SELECT * FROM crm.customers")
    assert "ssn" not in fresh.schema.names


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp directory for the gateways this test starts (``TMPDIR``)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    return root


def _region_count(uri: str) -> int:
    with (
        flightsql_dbapi.connect(uri, db_kwargs={"username": "bob", "password": "bob"}) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("SELECT DISTINCT region FROM sales.orders")
        return len(cursor.fetchall())


def test_a_gateway_process_leaves_no_directory_behind(
    mesh_copy: Path, tmp_path: Path, private_tmp: Path
) -> None:
    killed = start_private(mesh_copy, tmp_path / "killed.log")
    assert _region_count(killed.uri) == 3
    assert len(_spill_dirs(private_tmp)) == 1
    killed.kill()  # SIGKILL: nothing of it runs to remove its directory
    (left,) = _spill_dirs(private_tmp)
    assert str(killed.pid) in left.name

    stopped = start_private(mesh_copy, tmp_path / "stopped.log")
    try:
        (current,) = _spill_dirs(private_tmp)  # the killed one's was removed at start
        assert current != left
        assert _region_count(stopped.uri) == 3
    finally:
        stopped.stop()
    assert stopped.process.returncode == 0
    assert _spill_dirs(private_tmp) == []


def test_a_statement_held_open_across_reloads_keeps_no_engine(
    mesh_copy: Path, tmp_path: Path, private_tmp: Path
) -> None:
    """Through ADBC: a prepared statement left open while contracts change three times;
    the gateway keeps one engine (one spill directory), and the statement still runs."""
    running = start_private(mesh_copy, tmp_path / "gateway.log")
    try:
        with (
            flightsql_dbapi.connect(
                running.uri, db_kwargs={"username": "bob", "password": "bob"}
            ) as conn,
            conn.cursor() as held,
        ):
            held.adbc_prepare("SELECT count(*) FROM sales.orders")
            held.execute("SELECT count(*) FROM sales.orders")
            assert held.fetchall() == [(200_000,)]
            contract = mesh_copy / "crm" / "customers.odcs.yaml"
            for reload in range(1, 4):
                text = contract.read_text(encoding="utf-8")
                contract.write_text(text + f"\n# reviewed {reload}\n", "utf-8")
                _wait_for(
                    lambda reload=reload: len(running.events("catalog_reloaded")) == reload,
                    f"reload {reload}",
                )
            _wait_for(lambda: len(_spill_dirs(private_tmp)) == 1, "one engine left")
            held.execute("SELECT count(*) FROM sales.orders")
            assert held.fetchall() == [(200_000,)]
    finally:
        running.stop()


def test_a_domain_node_stops_on_sigterm_and_leaves_nothing(
    demo_mesh: Path, tmp_path: Path, private_tmp: Path
) -> None:
    """A node stops as the gateway does: SIGTERM lets it finish, exit 0, its audit closed
    and its spill directory removed (before, SIGTERM killed it where it stood)."""
    with running_mesh(demo_mesh, tmp_path, {"sales": 1}) as mesh:
        assert mesh.gateway is not None
        assert _region_count(mesh.gateway.uri) == 3  # served by the sales node
        node = mesh.node("sales")
        assert node.process is not None
        assert any(str(node.process.pid) in d.name for d in _spill_dirs(private_tmp))
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(timeout=60) == 0
        assert not any(str(node.process.pid) in d.name for d in _spill_dirs(private_tmp))
        audit = mesh.node_audit_path("sales").read_text(encoding="utf-8").splitlines()
        assert audit and all(line.endswith("}") for line in audit)
        gateway = mesh.gateway.process
    assert gateway.returncode == 0
    assert _spill_dirs(private_tmp) == []
