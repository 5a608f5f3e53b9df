"""The audit log's group commit: records are on disk when ``record``/``wait_durable``
return, concurrent writers share fsyncs, and a failing disk is an error, never silence."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.disks import FakeDisk, returns_within

from benchmarks.launch import REPO
from gateway.audit import log as audit_module
from gateway.audit.log import CURRENT_FILE, AuditLog, read_audit


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> FakeDisk:
    return FakeDisk(seconds=0.02).install(monkeypatch)


def test_record_returns_only_once_an_fsync_covered_it(tmp_path: Path, slow_disk: FakeDisk) -> None:
    log = AuditLog(tmp_path)
    try:
        for index in range(3):
            log.record("query_begin", n=index)
            size = (tmp_path / CURRENT_FILE).stat().st_size
            assert slow_disk.covered and max(slow_disk.covered) >= size
    finally:
        log.close()


def test_concurrent_records_share_fsyncs(tmp_path: Path, slow_disk: FakeDisk) -> None:
    log = AuditLog(tmp_path)

    def writer(index: int) -> None:
        log.record("query_begin", n=index)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    records = list(read_audit(tmp_path))
    assert sorted(r["n"] for r in records) == list(range(24))
    assert len(slow_disk.covered) < 24, "every writer paid its own fsync: no group commit"
    assert max(slow_disk.covered) == (tmp_path / CURRENT_FILE).stat().st_size


def test_append_does_not_wait_and_wait_durable_does(tmp_path: Path, slow_disk: FakeDisk) -> None:
    """Ordering, not timing: with the disk held, ``append`` returns and ``wait_durable``
    does not, until the disk is released."""
    log = AuditLog(tmp_path)
    try:
        slow_disk.released.clear()
        sequences: list[int] = []
        assert returns_within(lambda: sequences.append(log.append("query_end", n=1))), (
            "append waited for the disk"
        )
        waiter = threading.Thread(target=log.wait_durable, args=(sequences[0],), daemon=True)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive(), "wait_durable returned while the disk held the fsync"
        assert not slow_disk.covered
        slow_disk.released.set()
        waiter.join(30)
        assert not waiter.is_alive(), "wait_durable never returned once the disk was released"
        assert max(slow_disk.covered) == (tmp_path / CURRENT_FILE).stat().st_size
        assert [r["n"] for r in read_audit(tmp_path)] == [1]
    finally:
        slow_disk.released.set()
        log.close()


class CallerNotifications(threading.Condition):
    """A Condition that counts the wake-ups each thread sends (``notify_all`` calls
    ``notify``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: dict[int, int] = {}

    def notify(self, n: int = 1) -> None:
        self.sent[threading.get_ident()] = self.sent.get(threading.get_ident(), 0) + 1
        super().notify(n)


def test_a_lazy_record_starts_no_flush_but_is_flushed_soon(
    tmp_path: Path, slow_disk: FakeDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: the appending thread wakes nobody (counted, not slept on), and the
    record still reaches the disk by the flusher's own timed wait (polled with a deadline)."""
    slow_disk.seconds = 0.0
    monkeypatch.setattr(audit_module.threading, "Condition", CallerNotifications)
    log = AuditLog(tmp_path)
    me = threading.get_ident()
    try:
        changed = log._changed
        assert isinstance(changed, CallerNotifications)
        log.append_lazily("query_end", n=1)
        assert changed.sent.get(me, 0) == 0, "a lazy record must not wake the flusher"
        size = (tmp_path / CURRENT_FILE).stat().st_size
        deadline = time.monotonic() + 30

        def flushed() -> bool:
            return bool(slow_disk.covered) and max(slow_disk.covered) >= size

        while not flushed() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flushed(), "a lazy record was never flushed"
        assert changed.sent.get(me, 0) == 0
        log.append("query_begin", n=2)  # the counter sees a wake-up where there is one
        assert changed.sent.get(me, 0) == 1
    finally:
        log.close()


def test_a_lazy_record_rides_on_the_next_flush(
    tmp_path: Path, slow_disk: FakeDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a flusher that waits an hour between lazy flushes: only ``wait_durable`` can flush now
    monkeypatch.setattr(audit_module, "LAZY_FLUSH_SECONDS", 3600.0)
    log = AuditLog(tmp_path)
    try:
        log.append_lazily("query_end", n=1)
        log.record("query_begin", n=2)
        assert slow_disk.covered == [(tmp_path / CURRENT_FILE).stat().st_size], (
            "one flush covers both"
        )
        lazy = log.append_lazily("query_end", n=3)
        assert returns_within(lambda: log.wait_durable(lazy)), (
            "waiting on a lazy record did not flush it"
        )
        assert [r["n"] for r in read_audit(tmp_path)] == [1, 2, 3]
    finally:
        log.close()


def test_a_failing_disk_raises_instead_of_pretending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module.os, "fsync", FakeDisk(0.0, fail=True))
    log = AuditLog(tmp_path)
    with pytest.raises(OSError, match="Input/output error"):
        log.record("query_begin", n=1)


def test_close_flushes_what_was_appended(tmp_path: Path, slow_disk: FakeDisk) -> None:
    log = AuditLog(tmp_path)
    for index in range(5):
        log.append("query_end", n=index)
    log.close()
    assert max(slow_disk.covered) == (tmp_path / CURRENT_FILE).stat().st_size
    assert [r["n"] for r in read_audit(tmp_path)] == list(range(5))


def test_rotation_keeps_every_record_once(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, max_bytes=2_000)
    threads = [
        threading.Thread(
            target=lambda i=i: [log.record("query_begin", n=i * 100 + k) for k in range(20)]
        )
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    numbers = [r["n"] for r in read_audit(tmp_path)]
    assert sorted(numbers) == sorted(i * 100 + k for i in range(4) for k in range(20))
    assert len(list(tmp_path.glob("audit-*.jsonl"))) >= 2


def test_rotation_keeps_the_newest_files_and_records_what_it_removed(tmp_path: Path) -> None:
    """``keep_files``: past that many rotated files the oldest go, newest kept, and the new
    current file says which went; without it every file stays."""
    log = AuditLog(tmp_path, max_bytes=1_000, keep_files=3)
    for k in range(200):
        log.record("query_begin", n=k, pad="x" * 40)
    log.close()
    rotated = sorted(path.name for path in tmp_path.glob("audit-*.jsonl"))
    assert len(rotated) == 3
    records = list(read_audit(tmp_path))
    removals = [r for r in records if r["event"] == "audit_files_removed"]
    removed = [name for r in removals for name in r["files"]]
    assert removed, "the removals are recorded"
    assert not set(removed) & set(rotated)
    assert max(removed) < min(rotated), "the oldest went first"
    kept = [r["n"] for r in records if r["event"] == "query_begin"]
    assert kept == list(range(200 - len(kept), 200)), "the newest records stay, in order"

    every = tmp_path / "every"
    log = AuditLog(every, max_bytes=1_000)
    for k in range(200):
        log.record("query_begin", n=k, pad="x" * 40)
    log.close()
    assert len(list(every.glob("audit-*.jsonl"))) > 3
    assert [r["n"] for r in read_audit(every)] == list(range(200))


def test_a_record_into_a_file_another_writer_deleted_is_written_again(tmp_path: Path) -> None:
    """Two writers share a directory; one stays idle on a file the other rotates and, past
    ``keep_files``, deletes: the idle one's next record lands in the current file."""
    idle = AuditLog(tmp_path, max_bytes=1_000, keep_files=1)
    idle.record("query_begin", writer="idle", n=0)
    busy = AuditLog(tmp_path, max_bytes=1_000, keep_files=1)
    for k in range(100):
        busy.record("query_begin", writer="busy", n=k, pad="x" * 40)
    idle.record("query_begin", writer="idle", n=1)
    idle.close()
    busy.close()
    assert [r["n"] for r in read_audit(tmp_path) if r.get("writer") == "idle"] == [1]


WRITER = """
import sys
from pathlib import Path
from gateway.audit.log import AuditLog
log = AuditLog(Path(sys.argv[1]), max_bytes=int(sys.argv[2]))
for k in range(int(sys.argv[4])):
    log.append("query_begin", writer=sys.argv[3], n=k, pad="x" * 40)
log.close()
"""


def test_processes_sharing_a_log_rotate_it_without_losing_or_piling_records(
    tmp_path: Path,
) -> None:
    """A gateway and the ``meshgate query`` commands beside it append to one directory:
    every record lands once, and no process keeps filling a file another one rotated."""
    max_bytes, count = 4_000, 2_000
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(max_bytes), name, str(count)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for name in ("a", "b", "c")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    records = list(read_audit(tmp_path))
    for name in ("a", "b", "c"):
        assert sorted(r["n"] for r in records if r["writer"] == name) == list(range(count))
    assert len(records) == 3 * count
    longest = max(
        len(line) for f in tmp_path.glob("*.jsonl") for line in f.read_bytes().splitlines()
    )
    rotated = sorted(tmp_path.glob("audit-*.jsonl"))
    assert len(rotated) >= 10
    # past the limit, each other process adds at most the record it was writing
    assert max(f.stat().st_size for f in rotated) <= max_bytes + 3 * (longest + 1)


def test_a_querys_first_batch_waits_until_its_begin_record_is_on_disk(
    mesh_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service appends the begin record, lets the query compute, and sends nothing
    before the record is durable; the end record follows without holding the client."""
    from gateway.catalog.state import MeshState
    from gateway.config import load_config
    from gateway.flightsql.service import SqlService
    from gateway.security.principal import Principal

    disk = FakeDisk(0.3)
    monkeypatch.setattr(audit_module.os, "fsync", disk)
    audit = AuditLog(tmp_path / "audit")
    config = load_config(mesh_copy)
    service = SqlService(MeshState(mesh_copy, config), audit)
    bob = config.users["bob"]
    principal = Principal("bob", tuple(bob.roles), dict(bob.attributes))
    try:
        _, batches = service.stream(
            principal, b"SELECT count(*) AS n FROM sales.orders", lambda: False
        )
        first = next(batches)
        begin_end = (tmp_path / "audit" / CURRENT_FILE).read_bytes().index(b"\n") + 1
        assert disk.covered and max(disk.covered) >= begin_end, (
            "a batch left before its audit record was durable"
        )
        assert first.num_rows == 1
        list(batches)
        assert [r["event"] for r in read_audit(tmp_path / "audit")] == ["query_begin", "query_end"]
    finally:
        audit.close()
