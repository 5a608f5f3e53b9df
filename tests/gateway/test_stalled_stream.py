"""A watched result stream: the consumer advancing it and the watchdog closing it never
collide ("generator already executing" reached a client as INTERNAL before)."""

from __future__ import annotations

import threading
import time

from gateway.engine.watchdog import StalledStream


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
        while not stalled.expire_if_idle():
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
    assert stalled.expire_if_idle() is False and not stalled.expired
    release.set()
    consumer.join(5)
    assert stalled.expire_if_idle() is True and stalled.expired
