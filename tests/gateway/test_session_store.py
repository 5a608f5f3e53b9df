"""The session options store: per login, bounded per user and in all, idle ones expire."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidQuery
from gateway.flightsql.sessions import SessionOptions, SessionStore
from gateway.security.principal import Principal


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def login(user: str, session: str) -> Principal:
    return Principal(user, session=session)


def test_each_login_has_its_own_options() -> None:
    store = SessionStore(ttl_seconds=60)
    store.store(login("bob", "a"), SessionOptions("sales"))
    assert store.options(login("bob", "a")).schema == "sales"
    assert store.options(login("bob", "b")).schema is None
    # the same session id under another user name is another session
    assert store.options(login("alice", "a")).schema is None


def test_a_user_at_the_limit_loses_their_own_oldest_session_only() -> None:
    store = SessionStore(ttl_seconds=60, per_user=2)
    store.store(login("alice", "x"), SessionOptions("crm"))
    for session in ("1", "2", "3"):
        store.store(login("bob", session), SessionOptions("sales"))
    assert store.options(login("bob", "1")).schema is None
    assert store.options(login("bob", "2")).schema == "sales"
    assert store.options(login("bob", "3")).schema == "sales"
    assert store.options(login("alice", "x")).schema == "crm"
    assert len(store) == 3


def test_the_store_keeps_at_most_its_capacity() -> None:
    store = SessionStore(ttl_seconds=60, capacity=3, per_user=10)
    for number in range(5):
        store.store(login(f"user{number}", "s"), SessionOptions("sales"))
    assert len(store) == 3
    assert store.options(login("user0", "s")).schema is None
    assert store.options(login("user4", "s")).schema == "sales"


def test_an_idle_session_expires_and_use_keeps_it_alive() -> None:
    clock = Clock()
    store = SessionStore(ttl_seconds=10, clock=clock)
    store.store(login("bob", "a"), SessionOptions("sales"))
    store.store(login("bob", "b"), SessionOptions("crm"))
    clock.now = 8
    assert store.options(login("bob", "a")).schema == "sales"  # used: another 10 s
    clock.now = 15
    assert store.options(login("bob", "a")).schema == "sales"
    assert store.options(login("bob", "b")).schema is None
    assert len(store) == 1


def test_without_a_login_there_is_no_session() -> None:
    store = SessionStore(ttl_seconds=10)
    assert store.options(Principal("bob")).schema is None
    with pytest.raises(InvalidQuery, match="signed-in client"):
        store.store(Principal("bob"), SessionOptions("sales"))
    store.close(Principal("bob"))
    assert len(store) == 0
