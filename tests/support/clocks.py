"""A clock that moves only when a test moves it (for code that takes ``clock=``)."""

from __future__ import annotations


class ManualClock:
    """Monotonic seconds: ``now`` until a test sets it or calls ``advance``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
