"""A stand-in for ``os.fsync`` in the audit log's module, and a call with a deadline."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

from gateway.audit import log as audit_module


class FakeDisk:
    """``os.fsync`` stand-in: slow (``seconds``), failing (``fail``) or held (every call
    blocks until ``released`` is set); remembers the file size each call covered."""

    def __init__(self, seconds: float = 0.0, fail: bool = False, held: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.covered: list[int] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        if not held:
            self.released.set()

    def __call__(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        self.released.wait()
        time.sleep(self.seconds)
        if self.fail:
            raise OSError(5, "Input/output error")
        with self.lock:
            self.covered.append(size)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeDisk:
        """Put this disk under the audit log's ``os.fsync``."""
        monkeypatch.setattr(audit_module.os, "fsync", self)
        return self


def returns_within(call: Callable[[], object], timeout: float = 30.0) -> bool:
    """Whether ``call()`` returns within ``timeout`` (a deadline, not a speed figure)."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()
