"""The Arrow Flight SQL server: RPCs only. Each one authenticates (middleware), delegates to
``SqlService`` and maps errors to clean Flight statuses at this boundary."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from gateway.engine.streaming import IPC_OPTIONS
from gateway.errors import (
    AuthenticationError,
    HandleNotFound,
    MeshgateError,
    NotSupported,
    QueryRefused,
    ResourceExhausted,
    Unavailable,
)
from gateway.flightsql.operator import DESCRIPTIONS as OPERATOR_ACTIONS
from gateway.flightsql.operator import OperatorActions
from gateway.flightsql.protocol import (
    ACTION_CLOSE_PREPARED_STATEMENT,
    ACTION_CREATE_PREPARED_STATEMENT,
)
from gateway.flightsql.service import SqlService
from gateway.flightsql.sessions import DESCRIPTIONS as SESSION_ACTIONS
from gateway.security.auth import (
    MIDDLEWARE_KEY,
    AuthMiddlewareFactory,
    CallIdentities,
    CallIdentity,
    FailedLogin,
    HandshakeAuthHandler,
    LoginGuard,
    TokenStore,
    UserDirectory,
)
from gateway.security.principal import Principal

log = structlog.get_logger("meshgate.server")

ACTION_LOGOUT = "Logout"
_PRINCIPALS_KEPT = 1024
ACTION_HEALTH = "Health"
R = TypeVar("R")


def answer_stream(
    schema: pa.Schema, batches: Iterator[pa.RecordBatch], quick: bool = True
) -> flight.FlightDataStream:
    """A ``quick`` result of one batch (most small queries) goes out whole, read within
    this call into Python; any other streams from its generator. At most two batches are
    read ahead, and an error after the first still reaches the client after that batch.
    Not ``quick``, the schema goes out first, so that the client may cancel before the
    first batch exists. ``batches`` raise Flight errors only
    (``MeshgateFlightServer._guard_stream``)."""
    if not quick:
        return flight.GeneratorStream(schema, batches, IPC_OPTIONS)
    first = next(batches, None)
    if first is None:
        return flight.RecordBatchStream(pa.Table.from_batches([], schema), IPC_OPTIONS)
    try:
        second = next(batches, None)
    except flight.FlightError as exc:
        return flight.GeneratorStream(schema, _then_raise(first, exc), IPC_OPTIONS)
    if second is None:
        return flight.RecordBatchStream(pa.Table.from_batches([first], schema), IPC_OPTIONS)
    return flight.GeneratorStream(schema, itertools.chain((first, second), batches), IPC_OPTIONS)


def _then_raise(batch: pa.RecordBatch, error: Exception) -> Iterator[pa.RecordBatch]:
    yield batch
    raise error


def _flight_boundary(rpc: Callable[..., R]) -> Callable[..., R]:
    """Map every exception to a Flight status with a clean message; hand the RPC its call's
    identity (``CallIdentities``: each RPC takes its own call's, first).

    INVALID_ARGUMENT, NOT_FOUND and UNIMPLEMENTED can only be raised as Python exceptions,
    whose traceback pyarrow appends to the message unless ``sys.tracebacklimit`` is 0:
    ``gateway.logs.configure_server_process`` sets it in the server process.
    """

    @functools.wraps(rpc)
    def wrapper(self, context, *args):
        identity = self._calls.take()
        try:
            return rpc(self, context, identity, *args)
        except Exception as exc:  # noqa: BLE001 - the boundary: every error becomes a clean one
            raise self.client_error(exc, rpc.__name__) from None

    return wrapper


class MeshgateFlightServer(flight.FlightServerBase):
    """Arrow Flight SQL endpoint of the gateway."""

    def __init__(
        self,
        location: str,
        service: SqlService,
        users: UserDirectory,
        tokens: TokenStore,
        guard: LoginGuard,
        secrets: tuple[str, ...] = (),
        on_failed_login: FailedLogin | None = None,
        on_refused: Callable[[bool], None] | None = None,
        operator: OperatorActions | None = None,
        **kwargs,
    ) -> None:
        """``operator``: answers ``meshgate top`` and ``meshgate cancel`` (admins only)."""
        self._calls = CallIdentities()
        super().__init__(
            location,
            auth_handler=HandshakeAuthHandler(),
            middleware={
                MIDDLEWARE_KEY: AuthMiddlewareFactory(
                    users, tokens, guard, self._calls, on_failed_login, on_refused
                )
            },
            **kwargs,
        )
        self.service = service
        self.operator = operator
        self._tokens = tokens
        self._secrets = tuple(s for s in secrets if s)
        #: the principal of a call, per (login principal, peer, source, token): see _principal
        self._principals: dict[tuple[int, str, str, str | None], tuple[Principal, Principal]] = {}

    def _principal(
        self, context: flight.ServerCallContext, identity: CallIdentity | None
    ) -> Principal:
        """The caller as the service sees it: the login's principal with the call's peer,
        source and login digest; kept per login while its calls repeat (the same values
        every call of a connection), taken only for the very principal object it was made
        from."""
        if identity is None:
            raise AuthenticationError("authentication required")
        base, peer, source, token = (
            identity.principal,
            context.peer(),
            identity.source,
            identity.token,
        )
        key = (id(base), peer, source, token)
        kept = self._principals.get(key)
        if kept is not None and kept[0] is base:
            return kept[1]
        principal = replace(base, client=peer, source=source, session=_login(token))
        if len(self._principals) >= _PRINCIPALS_KEPT:
            self._principals.clear()
        self._principals[key] = (base, principal)
        return principal

    def client_error(self, exc: Exception, rpc: str) -> Exception:
        """The Flight error a client receives for ``exc``: a clean status and a message
        scrubbed of secrets (the hash key), never a traceback or an engine internal."""
        if isinstance(exc, flight.FlightError):
            return exc
        if not isinstance(exc, MeshgateError):
            log.exception("internal_error", rpc=rpc, exc_info=exc)
            return flight.FlightInternalError("internal error; see the server log")
        message = exc.client_message
        for secret in self._secrets:
            message = message.replace(secret, "<hidden>")
        if isinstance(exc, AuthenticationError):
            return flight.FlightUnauthenticatedError(message)
        if isinstance(exc, NotSupported):
            return NotImplementedError(message)
        if isinstance(exc, HandleNotFound):
            return KeyError(message)
        if isinstance(exc, QueryRefused):
            return flight.FlightUnauthorizedError(message)
        if isinstance(exc, Unavailable):
            return flight.FlightUnavailableError(message)
        if isinstance(exc, ResourceExhausted):
            # pyarrow's Flight server cannot send RESOURCE_EXHAUSTED; UNAVAILABLE is the
            # retryable status it can send, and the message says when to retry.
            return flight.FlightUnavailableError(message)
        return pa.ArrowInvalid(message)

    @_flight_boundary
    def get_flight_info(self, context, identity, descriptor):
        return self.service.flight_info(self._principal(context, identity), descriptor)

    @_flight_boundary
    def get_schema(self, context, identity, descriptor):
        return flight.SchemaResult(
            self.service.schema(self._principal(context, identity), descriptor)
        )

    @_flight_boundary
    def do_get(self, context, identity, ticket):
        schema, batches, quick = self.service.answer(
            self._principal(context, identity), ticket.ticket, context.is_cancelled
        )
        return answer_stream(schema, self._guard_stream(batches), quick)

    def _guard_stream(self, batches):
        """Errors raised while streaming reach the client as clean messages too."""
        try:
            yield from batches
        except Exception as exc:  # noqa: BLE001 - the boundary: every error becomes a clean one
            raise self.stream_error(exc) from None

    def stream_error(self, exc: Exception) -> flight.FlightError:
        """``client_error`` for an error raised while a result streams: always a Flight
        error. pyarrow frames any other exception leaving a ``GeneratorStream`` with its
        Python class ("Detail: Python exception: pyarrow.lib.ArrowInvalid: ..."); a
        Flight error reaches the client as its message and status only. A status pyarrow
        has no Flight error for (INVALID_ARGUMENT, NOT_FOUND, ...) becomes the generic
        server error: once rows flow, the message matters, not the code."""
        error = self.client_error(exc, "do_get")
        if isinstance(error, flight.FlightError):
            return error
        return flight.FlightServerError(str(error.args[0]) if error.args else "query failed")

    @_flight_boundary
    def do_put(self, context, identity, descriptor, reader, writer):
        answer = self.service.put(self._principal(context, identity), descriptor, reader)
        if answer is not None:
            writer.write(pa.py_buffer(answer))

    @_flight_boundary
    def do_action(self, context, identity, action):
        if action.type == ACTION_HEALTH:
            health = self.service.health(self._principal(context, identity))
            return [flight.Result(pa.py_buffer(json.dumps(health).encode()))]
        if action.type == ACTION_LOGOUT:
            if identity is not None and identity.token:
                self._tokens.revoke(identity.token)
            return []
        body = action.body.to_pybytes() if action.body is not None else b""
        if action.type in OPERATOR_ACTIONS and self.operator is not None:
            answer = self.operator.answer(self._principal(context, identity), action.type, body)
            return [flight.Result(pa.py_buffer(answer))]
        return [
            flight.Result(pa.py_buffer(r))
            for r in self.service.action(self._principal(context, identity), action.type, body)
        ]

    @_flight_boundary
    def list_actions(self, context, identity):
        return [
            flight.ActionType(ACTION_CREATE_PREPARED_STATEMENT, "Prepare a read-only statement"),
            flight.ActionType(ACTION_CLOSE_PREPARED_STATEMENT, "Close a prepared statement"),
            flight.ActionType(ACTION_LOGOUT, "Revoke the caller's bearer token"),
            *(
                flight.ActionType(name, description)
                for name, description in SESSION_ACTIONS.items()
            ),
            flight.ActionType(
                ACTION_HEALTH, "Health of the products the caller may read, and of the nodes"
            ),
            *(
                flight.ActionType(name, description)
                for name, description in OPERATOR_ACTIONS.items()
                if self.operator is not None
            ),
        ]

    @_flight_boundary
    def list_flights(self, context, identity, criteria):
        raise NotSupported("ListFlights is not supported; use Flight SQL GetTables")

    @_flight_boundary
    def do_exchange(self, context, identity, descriptor, reader, writer):
        raise NotSupported("DoExchange is not supported")


def _login(token: str | None) -> str:
    """Which login a call belongs to: a digest of its bearer token (never the token)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else ""
