"""benchmarks.launch: the server launcher the benchmarks and the tests share."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from benchmarks.launch import free_port, handshake, spawn_server, stop_process, wait_until_ready


def test_a_server_that_cannot_start_fails_the_wait_with_its_own_error(tmp_path: Path) -> None:
    log_path = tmp_path / "gateway.log"
    process = spawn_server("serve", tmp_path / "no-such-mesh", free_port(), log_path)
    started = time.monotonic()
    with pytest.raises(RuntimeError) as failure:
        wait_until_ready(
            process, lambda: handshake("grpc://127.0.0.1:1", "bob", "bob"), log_path, "gateway", 60
        )
    assert time.monotonic() - started < 30, "an early exit must not wait for the timeout"
    assert "gateway exited early" in str(failure.value)
    assert "mesh config not found" in str(failure.value)  # the server's own message, from its log
    assert process.poll() is not None


def test_a_server_that_never_answers_is_stopped_at_the_timeout(
    tmp_path: Path, demo_mesh: Path
) -> None:
    log_path = tmp_path / "gateway.log"
    mesh = shutil.copytree(demo_mesh, tmp_path / "mesh", ignore=shutil.ignore_patterns(".meshgate"))
    process = spawn_server("serve", mesh, free_port(), log_path)
    try:
        with pytest.raises(RuntimeError, match="not ready after 1 s: wrong password"):
            wait_until_ready(process, _never_ready, log_path, "gateway", timeout=1)
        assert process.poll() is not None, "the process must be stopped when the wait gives up"
    finally:
        stop_process(process)


def _never_ready() -> None:
    raise PermissionError("wrong password")
