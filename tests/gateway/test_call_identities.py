"""``CallIdentities``: a call's identity reaches the RPC on its own thread, once."""

from __future__ import annotations

import threading

import pyarrow.flight as flight

from gateway.security.auth import (
    AuthMiddlewareFactory,
    CallIdentities,
    CallIdentity,
    LoginGuard,
    TokenStore,
    UserDirectory,
)
from gateway.security.principal import Principal


def _identity(user: str) -> CallIdentity:
    return CallIdentity(Principal(user=user), token=user)


def test_each_thread_takes_its_own_identity_once() -> None:
    calls = CallIdentities()
    both_put = threading.Barrier(2, timeout=10)
    taken: dict[str, list] = {}

    def call(user: str) -> None:
        calls.start()
        calls.put(_identity(user))
        both_put.wait()
        taken[user] = [calls.take(), calls.take()]

    threads = [threading.Thread(target=call, args=(u,)) for u in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert taken["alice"] == [_identity("alice"), None]
    assert taken["bob"] == [_identity("bob"), None]


def test_a_new_call_forgets_what_an_earlier_one_left() -> None:
    calls = CallIdentities()
    calls.put(_identity("alice"))  # a call whose RPC never took it
    calls.start()
    assert calls.take() is None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_identities_no_rpc_took_are_dropped_once_many_and_stale() -> None:
    """Kept per thread: what a thread gRPC ended left behind would stay for ever."""
    clock = _Clock()
    calls = CallIdentities(limit=3, stale_seconds=60, clock=clock)
    done = threading.Event()
    threads = []

    def leave(user: str, left: threading.Event) -> None:  # a call refused before its RPC
        calls.put(_identity(user))
        left.set()
        done.wait(10)  # alive until checked: thread idents are reused once a thread ends

    def start(user: str) -> None:
        left = threading.Event()
        threads.append(threading.Thread(target=leave, args=(user, left)))
        threads[-1].start()
        assert left.wait(10)

    try:
        start("a")
        start("b")
        clock.now += 61
        start("c")
        assert len(calls) == 3
        calls.put(_identity("alice"))  # the limit reached: the stale two go, the fresh stay
        assert len(calls) == 2
        assert calls.take() == _identity("alice")
    finally:
        done.set()
        for thread in threads:
            thread.join(10)


def test_only_calls_an_rpc_takes_leave_an_identity() -> None:
    """A Handshake's bearer, or a call pyarrow answers itself, leaves nothing behind."""
    tokens = TokenStore(ttl_seconds=60)
    calls = CallIdentities()
    factory = AuthMiddlewareFactory(UserDirectory({}), tokens, LoginGuard(5, 60), calls)
    token = tokens.issue(Principal("alice"))
    headers = {"authorization": [f"Bearer {token}"]}
    for method in (flight.FlightMethod.HANDSHAKE, flight.FlightMethod.INVALID):
        assert factory.start_call(flight.CallInfo(method=method), headers) is None
        assert len(calls) == 0
    assert factory.start_call(flight.CallInfo(method=flight.FlightMethod.DO_GET), headers) is None
    assert calls.take() == CallIdentity(Principal("alice"), token, "")
