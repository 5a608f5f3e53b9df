"""A watched result stream: the consumer advancing it and the watchdog closing it never
collide ("generator already executing" reached a client as INTERNAL before); a stream is
watched from its first item; its cleanup learns why the watchdog closed it; a cleanup that
fails does not stop the watchdog."""

from __future__ import annotations

import gc
import threading
import time

from gateway.engine.watchdog import StalledStream, Watchdog


def slow_numbers(closed: threading.Event):
    try:
        for number in range(1_000_000):
            time.sleep(0.001)  # computing the next batch
            yield number
    finally:
        closed.set()


def test_closing_while_the_consumer_advances_never_fails_the_consumer():
    for _ in range(20):
        closed = threading.Event()
        stalled = StalledStream(slow_numbers(closed), deadline=0.0)
        failures: list[BaseException] = []
        received: list[int] = []

        def consume(
            stalled: StalledStream, received: list[int], failures: list[BaseException]
        ) -> None:
            try:
                while True:
                    received.append(stalled.advance())
                    time.sleep(0.001)  # sending the batch to the client
            except StopIteration:
                pass
            except BaseException as exc:  # noqa: BLE001 - the failure under test
                failures.append(exc)

        consumer = threading.Thread(target=consume, args=(stalled, received, failures))
        consumer.start()
        time.sleep(0.005)
        deadline = time.monotonic() + 5
        while not stalled.expire_if_idle("timeout"):
            assert time.monotonic() < deadline, "the stream was never idle"
            time.sleep(0.0002)
        consumer.join(5)
        assert not consumer.is_alive()
        assert failures == []
        assert stalled.expired and closed.is_set()
        assert received == list(range(len(received)))


def test_a_stream_being_advanced_is_not_closed_under_it():
    started, release = threading.Event(), threading.Event()

    def blocking():
        started.set()
        release.wait(5)
        yield 1

    stalled = StalledStream(blocking(), deadline=0.0)
    consumer = threading.Thread(target=stalled.advance)
    consumer.start()
    started.wait(5)
    assert stalled.expire_if_idle("timeout") is False and not stalled.expired
    release.set()
    consumer.join(5)
    assert stalled.expire_if_idle("timeout") is True and stalled.expired


def _opened(closed: list[str | None]):
    """A stream already started (as the node's is: bound, holding a cursor), recording
    why it was closed (``Watchdog.closing_reason``) when it is."""
    try:
        yield "schema"
        yield "batch"
    except GeneratorExit:
        closed.append(Watchdog.closing_reason())
        raise


def test_a_stream_dropped_before_its_first_item_is_never_watched_and_closes():
    """pyarrow may drop a stream it never read (the client went at once): the started
    stream inside goes with it, at once, and the watchdog holds nothing of it (it used to
    hold it, cursor and all, until the time limit)."""
    watchdog, closed = Watchdog(), []
    stream = _opened(closed)
    next(stream)
    watched = watchdog.expiring(stream, 300)
    del stream, watched
    gc.collect()
    assert closed == [None]  # closed by the collector: not the watchdog's doing
    assert not watchdog._streams


def test_the_watchdog_tells_a_stream_why_it_closes_it():
    watchdog, closed = Watchdog(), []
    watched = watchdog.expiring(_opened(closed), 300)
    assert next(watched) == "schema"  # then the client reads no more
    (stalled,) = watchdog._streams.values()
    assert stalled.expire_if_idle("timeout") is True
    assert closed == ["timeout"] and Watchdog.closing_reason() is None
    shutdown, closed_at_shutdown = Watchdog(), []
    kept = shutdown.expiring(_opened(closed_at_shutdown), 300)
    assert next(kept) == "schema"
    assert shutdown.close_streams() == 1
    assert closed_at_shutdown == ["shutdown"]


def test_a_failing_cleanup_does_not_stop_the_watchdog_thread():
    """A stream whose cleanup raises when the watchdog closes it (the audit's disk full)
    is logged; the thread goes on closing the others and watching queries."""

    def failing():
        try:
            yield 1
            yield 2
        finally:
            raise OSError("disk full")

    watchdog = Watchdog(interval_seconds=0.01)
    broken = watchdog.expiring(failing(), 0.0)
    closed: list[str | None] = []
    healthy = watchdog.expiring(_opened(closed), 0.0)
    assert next(broken) == 1 and next(healthy) == "schema"
    deadline = time.monotonic() + 30
    while closed != ["timeout"]:
        assert time.monotonic() < deadline, "the watchdog stopped closing streams"
        time.sleep(0.01)
    token = watchdog.watch_call(lambda: None, lambda: True, 300)
    while watchdog.release(token) != "cancelled":
        assert time.monotonic() < deadline, "the watchdog thread died"
        token = watchdog.watch_call(lambda: None, lambda: True, 300)
        time.sleep(0.05)
