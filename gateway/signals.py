"""Waiting, in a server process's main thread, for the signal to stop."""

from __future__ import annotations

import signal
import threading
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
