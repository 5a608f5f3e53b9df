"""``CallIdentities``: a call's identity reaches the RPC on its own thread, once."""

from __future__ import annotations

import threading

from gateway.security.auth import CallIdentities, CallIdentity
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
