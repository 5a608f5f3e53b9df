"""The watchdog is the engines' own, not the process's: a MeshState's engines share one
across catalog reloads, no module holds one, and its thread runs only while it watches."""

from __future__ import annotations

import importlib
import pkgutil
import threading
import time
from pathlib import Path

import gateway
from gateway.catalog.state import MeshState
from gateway.config import load_config
from gateway.engine.watchdog import Watchdog


def test_no_module_holds_a_watchdog():
    names = [i.name for i in pkgutil.walk_packages(gateway.__path__, "gateway.")]
    holders = [
        f"{name}.{attr}"
        for name in names
        for attr, value in vars(importlib.import_module(name)).items()
        if isinstance(value, Watchdog)
    ]
    assert not holders, f"process-global watchdogs: {holders}"


def test_a_state_shares_its_watchdog_across_reloads(mesh_copy: Path):
    config = load_config(mesh_copy)
    watchdog = Watchdog(memory_ceiling=2**40)
    state = MeshState(mesh_copy, config, watchdog=watchdog)
    before = state.current.catalog
    assert state.watchdog is watchdog
    assert before.engine.watchdog is watchdog

    contract = next(mesh_copy.glob("*/*.odcs.yaml"))
    contract.write_text(contract.read_text() + "\n# touched\n")
    assert state.refresh()
    assert state.current.catalog is not before
    assert state.current.catalog.engine.watchdog is watchdog

    other = MeshState(mesh_copy, config)  # a domain node's: its own, no memory ceiling
    assert other.watchdog is not watchdog
    assert other.watchdog.memory_ceiling == float("inf")


class _Engine:
    def __init__(self) -> None:
        self.interrupted: list[object] = []

    def interrupt(self, cursor: object) -> None:
        self.interrupted.append(cursor)


def _wait(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_thread_runs_only_while_something_is_watched():
    watchdog = Watchdog(interval_seconds=0.01)
    engine, cursor = _Engine(), object()
    token = watchdog.watch(engine, cursor, lambda: False, 0.05)
    thread = watchdog._thread
    assert isinstance(thread, threading.Thread)
    assert _wait(lambda: engine.interrupted == [cursor])
    assert watchdog.release(token) == "timeout"
    thread.join(timeout=5)
    assert not thread.is_alive(), "an idle watchdog keeps its thread"

    token = watchdog.watch(engine, cursor, lambda: True, 60)
    assert _wait(lambda: len(engine.interrupted) == 2)
    assert watchdog.release(token) == "cancelled"
