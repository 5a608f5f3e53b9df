"""Flight session options: the catalog and schema a client chose, kept per login.

Flight's SetSessionOptions / GetSessionOptions / CloseSession actions name no session:
upstream leaves it to the transport (a cookie). The ADBC driver sends no cookie unless
asked to, but each of its connections signs in on its own and carries its own bearer
token, so a session here is a login: (user, ``Principal.session``, a digest of the bearer
token), which only the holder of that token can reach. The store is bounded (per user
and in all, the least recently used go first) and an idle session expires with the
token lifetime.

Two options exist: ``catalog`` (only ``mesh``) and ``schema``, the domain unqualified
product names then mean. Any name is accepted, as PostgreSQL's ``search_path`` does:
checking it against the user's products would make a second way to ask what exists; a
name that names nothing the user may read fails at the query, with the same message as
the qualified name.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.errors import InvalidQuery
from gateway.flightsql import flightsql_pb2 as pb
from gateway.planning.naming import FLIGHT_SQL_CATALOG
from gateway.security.principal import Principal

ACTION_SET_SESSION_OPTIONS = "SetSessionOptions"
ACTION_GET_SESSION_OPTIONS = "GetSessionOptions"
ACTION_CLOSE_SESSION = "CloseSession"
ACTIONS = (ACTION_SET_SESSION_OPTIONS, ACTION_GET_SESSION_OPTIONS, ACTION_CLOSE_SESSION)
#: what ListActions says of them
DESCRIPTIONS = {
    ACTION_SET_SESSION_OPTIONS: "Set session options: schema (for unqualified names), catalog",
    ACTION_GET_SESSION_OPTIONS: "The session's options",
    ACTION_CLOSE_SESSION: "Forget the session's options",
}
CATALOG, SCHEMA = "catalog", "schema"
MAX_NAME = 255

_Key = tuple[str, str]


@dataclass(frozen=True)
class SessionOptions:
    """What a client chose for its session."""

    schema: str | None = None


class SessionStore:
    """Session options by login, bounded in number and age."""

    def __init__(
        self,
        ttl_seconds: float,
        capacity: int = 10_000,
        per_user: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._per_user = per_user
        self._clock = clock
        self._sessions: OrderedDict[_Key, tuple[float, SessionOptions]] = OrderedDict()
        self._per_user_count: dict[str, int] = {}
        self._lock = threading.Lock()

    def options(self, principal: Principal) -> SessionOptions:
        """``principal``'s session options (the defaults without a session)."""
        key = _key(principal)
        if key is None:
            return SessionOptions()
        now = self._clock()
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None:
                return SessionOptions()
            if entry[0] <= now:
                self._drop(key)
                return SessionOptions()
            self._sessions[key] = (now + self._ttl, entry[1])
            self._sessions.move_to_end(key)
            return entry[1]

    def store(self, principal: Principal, options: SessionOptions) -> None:
        key = _key(principal)
        if key is None:
            raise InvalidQuery("session options need a signed-in client (a bearer token)")
        now = self._clock()
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
            else:
                self._per_user_count[key[0]] = self._per_user_count.get(key[0], 0) + 1
            self._sessions[key] = (now + self._ttl, options)
            if self._per_user_count[key[0]] > self._per_user:
                oldest = next(k for k in self._sessions if k[0] == key[0])
                self._drop(oldest)  # a user's own oldest: no one evicts another's
            while len(self._sessions) > self._capacity:
                self._drop(next(iter(self._sessions)))

    def close(self, principal: Principal) -> None:
        key = _key(principal)
        if key is not None:
            with self._lock:
                if key in self._sessions:
                    self._drop(key)

    def __len__(self) -> int:
        return len(self._sessions)

    def _drop(self, key: _Key) -> None:
        """Under the lock."""
        del self._sessions[key]
        left = self._per_user_count[key[0]] - 1
        if left:
            self._per_user_count[key[0]] = left
        else:
            del self._per_user_count[key[0]]


def _key(principal: Principal) -> _Key | None:
    return (principal.user, principal.session) if principal.session else None


# -- the actions ----------------------------------------------------------------------


def set_options(
    store: SessionStore, principal: Principal, request: pb.SetSessionOptionsRequest
) -> bytes:
    """SetSessionOptions: set what is valid, answer an error per option that is not (an
    unknown name; a value of the wrong kind; a catalog other than ``mesh``; an empty or
    overlong schema name)."""
    options = store.options(principal)
    errors: dict[str, int] = {}
    for name, value in request.session_options.items():
        kind = value.WhichOneof("option_value")
        text = value.string_value if kind == "string_value" else None
        if name == CATALOG:
            if kind is not None and (text is None or text.lower() != FLIGHT_SQL_CATALOG):
                errors[name] = pb.SetSessionOptionsResult.INVALID_VALUE
        elif name == SCHEMA:
            if kind is None:
                options = replace(options, schema=None)
            elif text and len(text) <= MAX_NAME:
                options = replace(options, schema=text.lower())
            else:
                errors[name] = pb.SetSessionOptionsResult.INVALID_VALUE
        else:
            errors[name] = pb.SetSessionOptionsResult.INVALID_NAME
    store.store(principal, options)
    result = pb.SetSessionOptionsResult()
    for name, error in errors.items():
        result.errors[name].value = error  # type: ignore[assignment]
    return result.SerializeToString()


def get_options(store: SessionStore, principal: Principal) -> bytes:
    """GetSessionOptions: the catalog, and the schema once one was chosen."""
    result = pb.GetSessionOptionsResult()
    result.session_options[CATALOG].string_value = FLIGHT_SQL_CATALOG
    schema = store.options(principal).schema
    if schema is not None:
        result.session_options[SCHEMA].string_value = schema
    return result.SerializeToString()


def close(store: SessionStore, principal: Principal) -> bytes:
    """CloseSession: forget the session's options."""
    store.close(principal)
    return pb.CloseSessionResult(status=pb.CloseSessionResult.CLOSED).SerializeToString()
