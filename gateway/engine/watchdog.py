"""The watchdog: one thread that stops queries whose client cancelled or went away, whose
time is up, or that run while the process is past its memory ceiling, and closes result
streams a client stopped reading.

Each Engine holds one (``Engine.watchdog``); the engines of one MeshState share it, so a
gateway stops all its queries at shutdown, whichever catalog snapshot runs them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import duckdb
import structlog

from gateway.errors import QueryFailed

#: Ticks with nothing to watch before the thread ends: a thread started per query costs a
#: scheduling round trip (milliseconds on a busy machine) when queries come in small gaps.
_IDLE_TICKS = 20
#: (the engine's spill bytes now, the most it may spill while the query runs), or None
SpillCheck = tuple[Callable[[], int], int] | None

if TYPE_CHECKING:
    from gateway.engine.database import Engine

log = structlog.get_logger("meshgate.query")

#: why the stream the watchdog is closing on this thread is closed (``closing_reason``)
_closing = threading.local()


@dataclass
class StalledStream:
    """A result stream under the watchdog's eye (see ``Watchdog.watch_stream``). The
    consumer advances it and the watchdog closes it under one lock: a generator advanced
    by one thread while another closes it fails with "generator already executing"."""

    stream: Generator[object, None, None]
    deadline: float
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self) -> object:
        """The stream's next item (StopIteration at its end or once it expired)."""
        with self.lock:
            if self.expired:
                raise StopIteration
            return next(self.stream)

    def expire_if_idle(self, reason: str) -> bool:
        """Close the stream for ``reason`` ("timeout", "shutdown") if nobody is advancing
        it now; False if somebody is (a running query is then stopped by the engine
        interrupt instead). Its cleanup runs on this thread, and ``closing_reason`` tells
        it why."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            self.expired = True
            _closing.reason = reason
            self.stream.close()  # suspended at a yield: runs its cleanup now
            return True
        finally:
            _closing.reason = None
            self.lock.release()

    def close(self) -> None:
        with self.lock:
            self.stream.close()


class Watchdog:
    """One thread that interrupts running queries whose client has gone or cancelled, or
    whose time is up, also while DuckDB is still computing their first batch."""

    def __init__(self, interval_seconds: float = 0.1, memory_ceiling: float = float("inf")) -> None:
        """``memory_ceiling``: process RSS in bytes past which every running query is
        stopped (the gateway's ``engine.process_memory_ceiling_bytes``)."""
        self._interval = interval_seconds
        #: token -> (interrupt the query, is_cancelled, deadline, spill check)
        self._running: dict[
            int, tuple[Callable[[], None], Callable[[], bool], float, SpillCheck]
        ] = {}
        self._stopped: dict[int, str] = {}
        self._tokens = 0
        self._streams: dict[int, StalledStream] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.memory_ceiling = memory_ceiling
        #: set by ``close_streams``: the streams it closes end as "shutdown"
        self.shutting_down = False

    def _ensure_thread(self) -> None:
        """Start the thread if it is not running (call with the lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="meshgate-watchdog", daemon=True
            )
            self._thread.start()

    def watch(
        self,
        engine: Engine,
        cursor: duckdb.DuckDBPyConnection,
        is_cancelled: Callable[[], bool],
        timeout_seconds: float,
        spill_limit: int | None = None,
    ) -> int:
        """Watch a DuckDB query; the token to ``release`` it with. With ``spill_limit`` it
        is also stopped once the engine's spill files exceed that many bytes."""
        spill = (engine.spill_bytes, spill_limit) if spill_limit is not None else None
        return self.watch_call(
            lambda: engine.interrupt(cursor), is_cancelled, timeout_seconds, spill
        )

    def watch_call(
        self,
        interrupt: Callable[[], None],
        is_cancelled: Callable[[], bool],
        timeout_seconds: float,
        spill: SpillCheck = None,
    ) -> int:
        """Watch a query of any engine, stopped by ``interrupt()``; the token to ``release``."""
        with self._lock:
            self._tokens += 1
            token = self._tokens
            deadline = time.monotonic() + timeout_seconds
            self._running[token] = (interrupt, is_cancelled, deadline, spill)
            self._ensure_thread()
        return token

    def release(self, token: int) -> str | None:
        """Stop watching; the reason ("cancelled" or "timeout") if the watchdog stopped it."""
        with self._lock:
            self._running.pop(token, None)
            return self._stopped.pop(token, None)

    def watch_stream(
        self, stream: Generator[object, None, None], timeout_seconds: float
    ) -> StalledStream:
        """Also watch a whole result stream: a client that stops reading leaves it suspended
        between batches, where no engine interrupt reaches it. Past the deadline the stream
        is closed (its cursor and slot are freed) and marked, so that it ends with an error."""
        stalled = StalledStream(stream, time.monotonic() + timeout_seconds)
        with self._lock:
            self._streams[id(stalled)] = stalled
            self._ensure_thread()
        return stalled

    def expiring(
        self, stream: Generator[object, None, None], timeout_seconds: float
    ) -> Iterator[object]:
        """``stream`` watched from its first item on, with a second's grace past
        ``timeout_seconds``: its items, ending with an error (never a silently short result)
        when the watchdog closed it because the client stopped reading. Dropped before its
        first item, it was never watched: ``stream`` goes with it (closed by the collector)."""
        return _expiring(self, stream, timeout_seconds)

    @staticmethod
    def closing_reason() -> str | None:
        """Why the watchdog closes the stream whose cleanup runs on this thread now
        ("timeout": its client stopped reading; "shutdown"); None when it is not the
        watchdog closing it (the client went away)."""
        return getattr(_closing, "reason", None)

    def unwatch_stream(self, stalled: StalledStream) -> None:
        with self._lock:
            self._streams.pop(id(stalled), None)

    def _close_stalled(self, now: float) -> None:
        """Close streams past their deadline. Called WITHOUT the lock: closing runs the
        stream's cleanup, which releases its own watch (and takes the lock)."""
        with self._lock:
            due = [s for s in self._streams.values() if now > s.deadline and not s.expired]
        for stalled in due:
            try:
                stalled.expire_if_idle("timeout")
            except Exception:  # its cleanup failed (the audit's disk): the thread goes on
                log.exception("stream_close_failed")

    def stop_all(self, reason: str = "shutdown") -> int:
        """Interrupt every running query (at shutdown); returns how many."""
        with self._lock:
            for token, (interrupt, _, _, _) in list(self._running.items()):
                interrupt()
                del self._running[token]
                self._stopped[token] = reason
            return len(self._stopped)

    def close_streams(self) -> int:
        """Close every stream suspended between batches (at shutdown, after ``stop_all``: a
        client that stopped reading holds its call, but no longer its query, slot and audit
        record, which end as "shutdown"); returns how many."""
        self.shutting_down = True
        with self._lock:
            streams = list(self._streams.values())
        closed = 0
        for stalled in streams:
            try:
                closed += stalled.expire_if_idle("shutdown")
            except Exception:  # its cleanup failed (the audit's disk): close the others
                log.exception("stream_close_failed")
        return closed

    def _loop(self) -> None:
        idle = 0
        while True:
            time.sleep(self._interval)
            now = time.monotonic()
            if self._running and _process_rss() > self.memory_ceiling:
                log.warning(
                    "memory_ceiling_reached", rss=_process_rss(), ceiling=self.memory_ceiling
                )
                self.stop_all("memory")
            self._close_stalled(now)
            with self._lock:
                for token, (interrupt, is_cancelled, deadline, spill) in list(
                    self._running.items()
                ):
                    try:
                        reason = (
                            "cancelled"
                            if is_cancelled()
                            else ("timeout" if now > deadline else None)
                        )
                    except Exception:  # noqa: BLE001 - a gone context: the call is over
                        reason = "cancelled"
                    if reason is None and spill is not None and spill[0]() > spill[1]:
                        reason = "spill"
                    if reason:
                        interrupt()
                        del self._running[token]
                        self._stopped[token] = reason
                idle = 0 if self._running or self._streams else idle + 1
                if idle >= _IDLE_TICKS:
                    self._thread = None  # nothing to watch: the next watch starts a thread
                    return


def _expiring(
    watchdog: Watchdog, stream: Generator[object, None, None], timeout: float
) -> Iterator[object]:
    stalled = watchdog.watch_stream(stream, timeout + 1.0)
    try:
        while True:
            try:
                item = stalled.advance()  # never while the watchdog closes the stream
            except StopIteration:
                break
            yield item
        if stalled.expired:
            raise QueryFailed(
                f"the query exceeded the time limit of {timeout:g} s while the client was not "
                "reading; run it again and read the result as it arrives"
            )
    finally:
        stalled.close()
        watchdog.unwatch_stream(stalled)


def _process_rss() -> int:
    """This process's resident memory in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
