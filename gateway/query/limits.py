"""Per-user limits: concurrent queries and queries per minute."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import ResourceExhausted

_WINDOW_SECONDS = 60.0


class UserLimiter:
    """Admits a user's queries while they stay under their limits; thread-safe.

    An over-limit user gets ResourceExhausted with a retry hint; other users are unaffected.
    """

    def __init__(self, max_concurrent: int, max_per_minute: int) -> None:
        self._max_concurrent = max_concurrent
        self._max_per_minute = max_per_minute
        self._running: dict[str, int] = defaultdict(int)
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def admit(self, user: str) -> None:
        """Count one query towards ``user``'s per-minute budget, or refuse it."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent[user]
            while recent and recent[0] <= now - _WINDOW_SECONDS:
                recent.popleft()
            if len(recent) >= self._max_per_minute:
                wait = math.ceil(recent[0] + _WINDOW_SECONDS - now)
                raise ResourceExhausted(
                    f"resource exhausted: {user} ran {self._max_per_minute} queries in the last "
                    f"minute (the limit); retry in {wait} s"
                )
            recent.append(now)

    @contextmanager
    def running(self, user: str) -> Iterator[None]:
        """Hold one of ``user``'s concurrent-query slots while the body runs."""
        with self._lock:
            if self._running[user] >= self._max_concurrent:
                raise ResourceExhausted(
                    f"resource exhausted: {user} already runs {self._max_concurrent} queries "
                    "(the limit); retry when one finishes (in about 1 s)"
                )
            self._running[user] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[user] -= 1
