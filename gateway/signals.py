"""Stopping a server process: waiting for the signal, then for its running work."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable


def wait_for_stop_signal(on_signal: Callable[[], None] = lambda: None) -> None:
    """Return once SIGTERM or SIGINT arrives; ``on_signal`` runs in the handler (keep it
    short: e.g. refuse new queries at once)."""
    stop = threading.Event()

    def handler(*_: object) -> None:
        on_signal()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    while not stop.wait(0.5):
        pass


def wait_while(busy: Callable[[], object], seconds: float) -> None:
    """Return once ``busy()`` is false, or ``seconds`` have passed (polled every 50 ms)."""
    deadline = time.monotonic() + seconds
    while busy() and time.monotonic() < deadline:
        time.sleep(0.05)
