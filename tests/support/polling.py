"""Waiting for something a server does in its own time, and timing a call.

Three ways to wait, for three kinds of check:

- ``wait_until``: the check either answers or raises a real failure; fails the test at the
  timeout (generous: a loaded machine is slow, a passing poll is not).
- ``wait_through_errors``: the check may raise until the change lands (a reload, a
  restart); an exception means "not yet"; fails the test at the timeout.
- ``poll_for``: returns whatever the check answered last, truthy or not, for the test to
  assert on (with its own message).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> object:
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds (generous: a loaded machine is slow, a passing poll is not)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_through_errors(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.2, what: str = ""
) -> object:
    """Poll ``predicate`` until it returns something truthy (bounded by ``timeout``); an
    exception it raises counts as "not yet" (a poll may fail until the change lands)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a poll may fail until the change lands
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}; last error: {last_error!r}"
            )
        time.sleep(interval)


def poll_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes; return its
    last answer either way (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def timed(fn, *args, **kwargs) -> tuple[float, object, BaseException | None]:
    """Call ``fn``: (seconds, result or None, exception or None)."""
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        return time.monotonic() - started, None, exc
    return time.monotonic() - started, result, None
