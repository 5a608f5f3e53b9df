"""Stopping a server process: waiting for the signal, then for its running work."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

#: how long a stopping server waits for calls still running once their queries were
#: stopped, before it abandons them (a client that stopped reading never lets go)
ABANDON_CALLS_AFTER_SECONDS = 2.0
#: how long a stopping server lets the queries it stopped end before it closes the streams
#: left suspended between batches (clients that stopped reading)
STOPPED_QUERIES_SECONDS = 2.0


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


def stopped_within(shutdown: Callable[[], None], seconds: float) -> bool:
    """Run ``shutdown`` (a Flight server's: it waits for every call still running) in a
    thread; whether it finished within ``seconds``. A call writing to a client that stopped
    reading never finishes: gRPC's flow control holds it, and Python cannot cancel it."""
    stopping = threading.Thread(target=shutdown, name="meshgate-stop", daemon=True)
    stopping.start()
    stopping.join(seconds)
    return not stopping.is_alive()


def exit_abandoning_calls(code: int = 0) -> NoReturn:
    """End the process now, without the interpreter's exit handlers: pyarrow's would shut
    the Flight server down once more and wait forever for the calls it could not stop.
    The caller closed the audit log; the spill directories are removed here."""
    from gateway.engine.spill import release_all

    release_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
