"""Authentication: username/password handshake answering a bearer token, checked on every call;
or a bearer JWT of the identity provider (``gateway.security.identity``) on every call.

ADBC and ``FlightClient.authenticate_basic_token`` send ``authorization: Basic ...`` on
the Handshake RPC and expect ``authorization: Bearer <token>`` in the response headers;
every later call carries that bearer header. pyarrow's ``ServerAuthHandler`` cannot
answer headers, so the check is a server middleware; a no-op auth handler is installed
only because pyarrow answers UNIMPLEMENTED to Handshake without one. Only a Handshake gets
a middleware instance (to answer the token); any other call's identity reaches its RPC
through ``CallIdentities``.

A bearer value shaped as a JWT (three dot-separated parts) is the identity provider's and
is checked as one; the gateway's own tokens (random, no dots) are looked up in the store.
``[identity] password_logins = false`` refuses every username/password handshake.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import pyarrow.flight as flight

from gateway.config import UserSettings
from gateway.errors import AuthenticationError
from gateway.security.identity import IdentityProvider
from gateway.security.passwords import hash_password, verify_password
from gateway.security.principal import Principal
from gateway.security.token_check import looks_like_jwt

MIDDLEWARE_KEY = "auth"
#: Why a login was refused (``AuthMiddlewareFactory``'s ``on_failed_login``).
INVALID_CREDENTIALS = "invalid credentials"
LOCKED_OUT = "locked out"
MALFORMED_CREDENTIALS = "malformed credentials"
PASSWORDS_OFF = "password logins off"

FailedLogin = Callable[[str, str, str], None]
"""``on_failed_login(user, error, reason)``: a refused login (the user name tried)."""


class UserDirectory:
    """The users of the mesh config, checked by password (``passwords``: False when
    ``[identity] password_logins = false``: every password login is refused)."""

    def __init__(self, users: Mapping[str, UserSettings], passwords: bool = True) -> None:
        self._users = dict(users)
        self.passwords = passwords
        # Checked for unknown users too, so that timing does not tell which users exist.
        self._decoy_hash = hash_password(secrets.token_urlsafe(16))

    def authenticate(self, user: str, password: str) -> Principal:
        settings = self._users.get(user)
        stored = settings.password_hash if settings is not None else self._decoy_hash
        if not verify_password(password, stored) or settings is None:
            raise AuthenticationError("invalid username or password")
        return self.principal(user)

    def principal(self, user: str) -> Principal:
        settings = self._users[user]
        return Principal(user, tuple(settings.roles), dict(settings.attributes))


class TokenStore:
    """Bearer tokens with an expiry; thread-safe; tokens can be revoked. A JWT goes to the
    ``identity`` provider, when there is one. At most ``per_user`` live tokens per user:
    a user's oldest login is forgotten past it (memory stays bounded however often a user
    logs in)."""

    def __init__(
        self,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        identity: IdentityProvider | None = None,
        per_user: int = 100_000,
    ) -> None:
        self.identity = identity
        self._ttl = ttl_seconds
        self._clock = clock
        self._per_user = per_user
        #: in issue order, which is expiry order (one lifetime for all)
        self._tokens: dict[str, tuple[Principal, float]] = {}
        #: each user's live tokens, in issue order
        self._of_user: dict[str, dict[str, None]] = {}
        self._lock = threading.Lock()

    def issue(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            mine = self._of_user.get(principal.user, {})
            while len(mine) >= self._per_user:
                self._forget(next(iter(mine)))  # may drop the user's emptied list
            self._tokens[token] = (principal, now + self._ttl)
            self._of_user.setdefault(principal.user, {})[token] = None
        return token

    def _forget_expired(self, now: float) -> None:
        """Under the lock: drop the expired tokens, the oldest first."""
        while self._tokens:
            oldest = next(iter(self._tokens))
            if self._tokens[oldest][1] > now:
                break
            self._forget(oldest)

    def _forget(self, token: str) -> None:
        """Under the lock: drop ``token``, and its user's list once empty."""
        entry = self._tokens.pop(token, None)
        if entry is None:
            return
        user = entry[0].user
        mine = self._of_user.get(user)
        if mine is not None:
            mine.pop(token, None)
            if not mine:
                del self._of_user[user]

    def __len__(self) -> int:
        return len(self._tokens)

    def principal(self, token: str) -> Principal:
        if self.identity is not None and looks_like_jwt(token):
            return self.identity.principal(token)
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None:
            raise AuthenticationError("unknown or revoked token: authenticate again")
        principal, expires = entry
        if expires <= self._clock():
            self.revoke(token)
            raise AuthenticationError("token expired: authenticate again")
        return principal

    def revoke(self, token: str) -> None:
        with self._lock:
            self._forget(token)


class LoginGuard:
    """Locks a user out for a while after too many failed logins (and says so).

    Any name counts, known or not (no enumeration), so failures are kept by a 16-byte
    digest of the name, at most ``max_failures`` per name and ``capacity`` names, the
    names whose last failure is oldest forgotten first: memory stays bounded whatever
    names unauthenticated clients send."""

    def __init__(
        self,
        max_failures: int,
        lockout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = 100_000,
    ) -> None:
        self._max = max_failures
        self._lockout = lockout_seconds
        self._clock = clock
        self._capacity = capacity
        self._failures: dict[bytes, list[float]] = {}
        self._lock = threading.Lock()

    def check(self, user: str) -> None:
        now = self._clock()
        key = _name_key(user)
        with self._lock:
            kept = self._failures.get(key)
            if kept is None:
                return
            recent = [t for t in kept if t > now - self._lockout]
            if not recent:
                del self._failures[key]
                return
            self._failures[key] = recent
            if len(recent) >= self._max:
                wait = int(recent[0] + self._lockout - now) + 1
                raise AuthenticationError(f"too many failed logins; retry in {wait} s")

    def failed(self, user: str) -> None:
        key = _name_key(user)
        with self._lock:
            recent = self._failures.pop(key, [])  # back in last: the latest failure
            recent.append(self._clock())
            self._failures[key] = recent[-self._max :]
            while len(self._failures) > self._capacity:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(_name_key(user), None)

    def __len__(self) -> int:
        return len(self._failures)


def _name_key(user: str) -> bytes:
    return hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(frozen=True)
class CallIdentity:
    """Who makes a call: the login's principal, its bearer token and the client's source."""

    principal: Principal
    token: str | None = None
    source: str = ""


class CallIdentities:
    """Hands each call's identity from the middleware to its RPC.

    pyarrow runs a call's middleware and its RPC on the same thread, one call at a time,
    so the identity is kept per OS thread (not in a ``threading.local``: pyarrow's thread
    state, and with it a thread-local, does not outlive one entry into Python). A call
    without a middleware instance costs no ``sending_headers`` or ``call_completed``
    entry into Python. An identity no RPC took (a request pyarrow refused before its RPC,
    on a thread gRPC then ended) is dropped once ``limit`` are kept and it is older than
    ``stale_seconds``: an RPC takes its own within moments."""

    def __init__(
        self,
        limit: int = 1024,
        stale_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_thread: dict[int, tuple[CallIdentity, float]] = {}
        self._lock = threading.Lock()
        self._limit = limit
        self._stale_seconds = stale_seconds
        self._clock = clock
        self._pruned_at = float("-inf")

    def start(self) -> None:
        """A call begins on this thread: forget what an earlier call left."""
        with self._lock:
            self._by_thread.pop(threading.get_ident(), None)

    def put(self, identity: CallIdentity) -> None:
        now = self._clock()
        with self._lock:
            if len(self._by_thread) >= self._limit and now - self._pruned_at >= 1.0:
                self._pruned_at = now  # at most once a second, however many are fresh
                self._by_thread = {
                    thread: kept
                    for thread, kept in self._by_thread.items()
                    if now - kept[1] < self._stale_seconds
                }
            self._by_thread[threading.get_ident()] = (identity, now)

    def take(self) -> CallIdentity | None:
        """The identity of the call on this thread, once."""
        with self._lock:
            kept = self._by_thread.pop(threading.get_ident(), None)
        return kept[0] if kept is not None else None

    def __len__(self) -> int:
        return len(self._by_thread)


#: the calls whose identity an RPC of ``MeshgateFlightServer`` takes (not Handshake, nor
#: a call pyarrow answers itself, as PollFlightInfo)
_TAKEN_BY_AN_RPC = frozenset(
    {
        flight.FlightMethod.LIST_FLIGHTS,
        flight.FlightMethod.GET_FLIGHT_INFO,
        flight.FlightMethod.GET_SCHEMA,
        flight.FlightMethod.DO_GET,
        flight.FlightMethod.DO_PUT,
        flight.FlightMethod.DO_ACTION,
        flight.FlightMethod.LIST_ACTIONS,
        flight.FlightMethod.DO_EXCHANGE,
    }
)


class HandshakeMiddleware(flight.ServerMiddleware):
    """Answers the bearer token of a password login in the Handshake's response headers."""

    def __init__(self, issued_token: str) -> None:
        self._issued_token = issued_token

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._issued_token}"}


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Checks Basic credentials on Handshake and the bearer token on every other call,
    whose identity it hands to the RPC through ``calls``."""

    def __init__(
        self,
        users: UserDirectory,
        tokens: TokenStore,
        guard: LoginGuard,
        calls: CallIdentities,
        on_failed_login: FailedLogin | None = None,
        on_refused: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_failed_login(user, error, reason)``: a login refused (its ``reason``:
        ``INVALID_CREDENTIALS``, ``LOCKED_OUT``, ``MALFORMED_CREDENTIALS``; never the
        password); ``on_refused(login)``:
        every refused call, a login (Handshake) or a call with a refused token."""
        self._users = users
        self._tokens = tokens
        self._guard = guard
        self._calls = calls
        self._on_failed_login = on_failed_login
        self._on_refused = on_refused

    def start_call(self, info: flight.CallInfo, headers: dict) -> HandshakeMiddleware | None:
        self._calls.start()
        handshake = info.method == flight.FlightMethod.HANDSHAKE
        try:
            value = _header(headers, "authorization")
            scheme, _, credentials = value.partition(" ")
            if handshake and scheme.lower() == "basic":
                return self._login(credentials)
            if scheme.lower() != "bearer" or not credentials:
                self._refuse(value)
            token = credentials.strip()
            identity = CallIdentity(self._tokens.principal(token), token, client_source(headers))
            if info.method in _TAKEN_BY_AN_RPC:  # no RPC of ours takes another's
                self._calls.put(identity)
            return None
        except AuthenticationError as exc:
            if self._on_refused is not None:
                self._on_refused(handshake)
            raise flight.FlightUnauthenticatedError(str(exc)) from None

    def _login(self, credentials: str) -> HandshakeMiddleware:
        """A Handshake with Basic credentials: answered with a new bearer token."""
        try:
            user, password = _decode_basic(credentials)
        except AuthenticationError as exc:
            self._failed_login("", exc, MALFORMED_CREDENTIALS)
            raise
        if not self._users.passwords:
            off = AuthenticationError(
                "password logins are switched off on this gateway: send a bearer token "
                "from the identity provider"
            )
            self._failed_login(user, off, PASSWORDS_OFF)
            raise off
        try:
            self._guard.check(user)
        except AuthenticationError as exc:
            self._failed_login(user, exc, LOCKED_OUT)
            raise
        try:
            principal = self._users.authenticate(user, password)
        except AuthenticationError as exc:
            self._guard.failed(user)
            self._failed_login(user, exc, INVALID_CREDENTIALS)
            raise
        self._guard.succeeded(user)
        return HandshakeMiddleware(self._tokens.issue(principal))

    def _refuse(self, value: str) -> NoReturn:
        if not value:
            raise AuthenticationError(f"authentication required: {self._how()}")
        raise AuthenticationError(f"unsupported authorization scheme: {self._how()}")

    def _how(self) -> str:
        """How a client may sign in to this gateway."""
        ways = []
        if self._users.passwords:
            ways.append(
                "connect with a username and password (Basic on the handshake, then the "
                "Bearer token it answers)"
            )
        if self._tokens.identity is not None:
            ways.append(
                "send `authorization: Bearer <token>` with a token from the identity provider"
            )
        return ", or ".join(ways) or "no sign-in is configured"

    def _failed_login(self, user: str, exc: AuthenticationError, reason: str) -> None:
        if self._on_failed_login is not None:
            self._on_failed_login(user, str(exc), reason)


class HandshakeAuthHandler(flight.ServerAuthHandler):
    """Lets Handshake through to the middleware, which does the real check."""

    def authenticate(
        self, outgoing: flight.ServerAuthSender, incoming: flight.ServerAuthReader
    ) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        return ""


#: the header a client names itself with (resource groups select on it), e.g. through the
#: ADBC driver's ``adbc.flight.sql.rpc.call_header.x-meshgate-source`` option
SOURCE_HEADER = "x-meshgate-source"
_SOURCE_CHARS = 128


def client_source(headers: dict) -> str:
    """What the client says it is: ``x-meshgate-source``, else its ``user-agent``."""
    return (_header(headers, SOURCE_HEADER) or _header(headers, "user-agent"))[:_SOURCE_CHARS]


def _header(headers: dict, name: str) -> str:
    values = headers.get(name) or headers.get(name.title()) or []
    return values[0] if values else ""


def _decode_basic(credentials: str) -> tuple[str, str]:
    raw = credentials.strip()
    raw += "=" * (-len(raw) % 4)  # the Go driver omits base64 padding
    try:
        decoded = base64.b64decode(raw, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthenticationError("malformed Basic credentials") from exc
    user, sep, password = decoded.partition(":")
    if not sep:
        raise AuthenticationError("malformed Basic credentials: expected user:password")
    return user, password
