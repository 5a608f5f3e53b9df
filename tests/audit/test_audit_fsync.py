"""``[audit] fsync``: with ``"batch"`` (the default) a record is written to the OS before
its caller goes on, so it survives a crash of the gateway process, and is fsynced by the
flusher within ``fsync_interval_ms``; ``"always"`` waits for the fsync (tested in
tests/gateway/test_audit_log.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pyarrow import flight
from support.disks import FakeDisk, returns_within
from support.polling import wait_until
from support.servers import configure, private_gateway

from gateway.audit.log import CURRENT_FILE, AuditLog, read_audit
from gateway.config import load_config
from gateway.errors import ConfigError


@pytest.fixture
def held_disk(monkeypatch: pytest.MonkeyPatch) -> FakeDisk:
    return FakeDisk(held=True).install(monkeypatch)


def test_batch_record_is_in_the_file_before_its_fsync(tmp_path: Path, held_disk: FakeDisk) -> None:
    log = AuditLog(tmp_path, fsync="batch", fsync_interval=0.01)
    try:
        assert returns_within(lambda: log.record("query_begin", n=1), timeout=10.0), (
            "record waited for the fsync in batch mode"
        )
        sequence = log.append("query_begin", n=2)
        assert returns_within(lambda: log.wait_durable(sequence), timeout=10.0)
        # written to the OS already: another process (or one after a crash) reads them
        assert [r["n"] for r in read_audit(tmp_path)] == [1, 2]
        assert held_disk.covered == []
        held_disk.released.set()
        size = (tmp_path / CURRENT_FILE).stat().st_size
        wait_until(
            lambda: held_disk.covered and max(held_disk.covered) >= size,
            timeout=10,
            what="the flusher never fsynced the batch",
        )
    finally:
        held_disk.released.set()
        log.close()


def test_batch_close_fsyncs_every_record(tmp_path: Path, held_disk: FakeDisk) -> None:
    held_disk.released.set()
    log = AuditLog(tmp_path, fsync="batch", fsync_interval=3600)  # only close can flush
    for index in range(5):
        log.append("query_begin", n=index)
    log.append_lazily("query_end", n=5)
    log.close()
    assert max(held_disk.covered) == (tmp_path / CURRENT_FILE).stat().st_size
    assert [r["n"] for r in read_audit(tmp_path)] == list(range(6))


def test_batch_failed_fsync_refuses_later_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeDisk(fail=True).install(monkeypatch)
    log = AuditLog(tmp_path, fsync="batch", fsync_interval=0.01)
    log.append("query_begin", n=1)

    def refused() -> bool:
        try:
            log.record("query_begin", n=2)
        except OSError:
            return True
        return False

    wait_until(refused, timeout=10, what="a failing disk went unnoticed")


def test_fsync_setting_defaults_to_batch_and_is_validated(mesh_copy: Path) -> None:
    assert load_config(mesh_copy).audit.fsync == "batch"
    configure(mesh_copy, "audit", fsync="always", fsync_interval_ms=20)
    settings = load_config(mesh_copy).audit
    assert (settings.fsync, settings.fsync_interval_ms) == ("always", 20)
    configure(mesh_copy, "audit", fsync="never")
    with pytest.raises(ConfigError):
        load_config(mesh_copy)
    with pytest.raises(ValueError):
        AuditLog(mesh_copy / "audit", fsync="never")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["batch", "always"])
def test_begin_record_survives_a_killed_gateway(demo_mesh: Path, tmp_path: Path, mode: str) -> None:
    """A query's begin record is in the log when its first batch arrives, and is still
    there once the gateway process is killed (SIGKILL) in the middle of the stream."""
    tag = uuid.uuid4().hex
    sql = f"SELECT *, '{tag}' AS tag FROM sales.orders, (VALUES (1), (2), (3), (4)) AS t(x)"
    with private_gateway(
        demo_mesh,
        tmp_path,
        prepare=lambda mesh: configure(mesh, "audit", fsync=mode, fsync_interval_ms=60_000),
    ) as gateway:
        client, options = gateway.client("bob")
        try:
            info = client.get_flight_info(
                flight.FlightDescriptor.for_command(sql.encode()), options
            )
            reader = client.do_get(info.endpoints[0].ticket, options)
            assert reader.read_chunk().data.num_rows > 0
            gateway.kill()
        finally:
            client.close()
        records = [r for r in gateway.audit() if tag in r.get("sql", "")]
        assert [r["event"] for r in records] == ["query_begin"]
        assert records[0]["user"] == "bob"
