"""Token expiry and login lockout on an injected clock: exact, and no waiting."""

from __future__ import annotations

import pytest
from support.clocks import ManualClock

from gateway.errors import AuthenticationError
from gateway.security.auth import LoginGuard, TokenStore
from gateway.security.principal import Principal

ALICE = Principal("alice", ("analyst_eu",), {"region": "EU"})


def test_a_token_is_valid_until_its_ttl_and_expired_from_then_on() -> None:
    clock = ManualClock(1000.0)
    tokens = TokenStore(ttl_seconds=60, clock=clock)
    token = tokens.issue(ALICE)
    clock.advance(59.999)
    assert tokens.principal(token) == ALICE
    clock.advance(0.001)
    with pytest.raises(AuthenticationError, match="token expired: authenticate again"):
        tokens.principal(token)
    with pytest.raises(AuthenticationError, match="unknown or revoked token"):
        tokens.principal(token)  # an expired token is forgotten
    assert tokens.principal(tokens.issue(ALICE)) == ALICE  # a new login works


def test_issuing_forgets_expired_tokens_only() -> None:
    clock = ManualClock(1000.0)
    tokens = TokenStore(ttl_seconds=10, clock=clock)
    old = tokens.issue(ALICE)
    clock.advance(5)
    young = tokens.issue(ALICE)
    clock.advance(6)
    tokens.issue(ALICE)
    assert tokens.principal(young) == ALICE
    with pytest.raises(AuthenticationError, match="unknown or revoked token"):
        tokens.principal(old)


def test_a_revoked_token_is_refused_at_once() -> None:
    tokens = TokenStore(ttl_seconds=60, clock=ManualClock(1000.0))
    token = tokens.issue(ALICE)
    tokens.revoke(token)
    with pytest.raises(AuthenticationError, match="unknown or revoked token"):
        tokens.principal(token)


def test_failed_logins_lock_out_for_the_lockout_period_then_not() -> None:
    clock = ManualClock(1000.0)
    guard = LoginGuard(max_failures=3, lockout_seconds=60, clock=clock)
    for _ in range(3):
        guard.check("carol")
        guard.failed("carol")
        clock.advance(1)
    with pytest.raises(AuthenticationError, match=r"too many failed logins; retry in 58 s"):
        guard.check("carol")
    guard.check("erin")  # others are not affected
    clock.advance(56.5)  # the first failure is 59.5 s old
    with pytest.raises(AuthenticationError, match="too many failed logins"):
        guard.check("carol")
    clock.advance(0.5)  # the first failure is 60 s old: two recent failures remain
    guard.check("carol")


def test_a_successful_login_clears_the_failures() -> None:
    guard = LoginGuard(max_failures=2, lockout_seconds=60, clock=ManualClock(1000.0))
    guard.failed("bob")
    guard.succeeded("bob")
    guard.failed("bob")
    guard.check("bob")


def test_failed_logins_of_any_names_keep_bounded_memory() -> None:
    """Unauthenticated clients choose the names: each is kept as a 16-byte digest, with at
    most ``max_failures`` times, and the names failed longest ago are forgotten first."""
    clock = ManualClock(1000.0)
    guard = LoginGuard(max_failures=3, lockout_seconds=60, clock=clock, capacity=100)
    for n in range(500):
        guard.failed(f"{n}-" + "x" * 100_000)
        clock.advance(0.01)
    assert len(guard) == 100
    assert all(len(key) == 16 and len(times) == 1 for key, times in guard._failures.items())
    for _ in range(10):
        guard.failed("mallory")
    assert len(guard._failures[next(reversed(guard._failures))]) == 3
    with pytest.raises(AuthenticationError, match="too many failed logins"):
        guard.check("mallory")


def test_checking_a_name_keeps_nothing() -> None:
    guard = LoginGuard(max_failures=3, lockout_seconds=60, clock=ManualClock(1000.0))
    for n in range(50):
        guard.check(f"someone-{n}")
    assert len(guard) == 0


def test_a_users_live_tokens_are_bounded_oldest_forgotten_first() -> None:
    clock = ManualClock(1000.0)
    tokens = TokenStore(ttl_seconds=60, clock=clock, per_user=3)
    bob = Principal("bob", ("admin",), {})
    alice_token = tokens.issue(ALICE)
    issued = [tokens.issue(bob) for _ in range(5)]
    assert len(tokens) == 4  # bob's 3 newest and alice's
    for token in issued[:2]:
        with pytest.raises(AuthenticationError, match="unknown or revoked token"):
            tokens.principal(token)
    assert all(tokens.principal(token) == bob for token in issued[2:])
    assert tokens.principal(alice_token) == ALICE  # another user's logins are not touched


def test_expired_tokens_are_forgotten_as_logins_come() -> None:
    clock = ManualClock(1000.0)
    tokens = TokenStore(ttl_seconds=10, clock=clock)
    for _ in range(100):
        tokens.issue(ALICE)
        clock.advance(1)
    assert len(tokens) <= 11 and len(tokens._of_user["alice"]) == len(tokens)


def test_revoked_and_expired_tokens_leave_their_users_list() -> None:
    """A client that meets its expired token, or logs out, leaves nothing behind: the
    user's list holds live tokens only, so none is counted against the cap."""
    clock = ManualClock(1000.0)
    tokens = TokenStore(ttl_seconds=10, clock=clock, per_user=2)
    expired = tokens.issue(ALICE)
    clock.advance(10)
    with pytest.raises(AuthenticationError, match="token expired"):
        tokens.principal(expired)  # revoked on the way
    logged_out = tokens.issue(ALICE)
    tokens.revoke(logged_out)
    assert len(tokens) == 0 and not tokens._of_user
    first, second = tokens.issue(ALICE), tokens.issue(ALICE)
    assert tokens.principal(first) == tokens.principal(second) == ALICE  # both within the cap


def test_a_cap_of_one_token_keeps_the_newest_login() -> None:
    tokens = TokenStore(ttl_seconds=60, clock=ManualClock(1000.0), per_user=1)
    first = tokens.issue(ALICE)
    second = tokens.issue(ALICE)  # forgets the first, and the list it emptied
    assert tokens.principal(second) == ALICE and len(tokens) == 1
    with pytest.raises(AuthenticationError, match="unknown or revoked token"):
        tokens.principal(first)
