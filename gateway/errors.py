"""The one error tree of Meshgate: every error raised on purpose is a ``MeshgateError``.

Every error carries a message meant for a person: what went wrong, where (file, field,
product, column) and, when there is one, the fix. ``client_message`` is what may be sent
to a Flight client; it never contains data values.

Classes are defined here unless a module is named::

    Exception
     └── MeshgateError
          ├── ConfigError                 mesh.toml missing or invalid
          ├── ContractError               a contract that cannot be served
          │    └── ConnectorError         its source cannot be bound (connectors.errors)
          ├── PolicyError                 a policy file line (policies.errors)
          ├── PolicyExpressionError       a mask or filter expression (policies.errors);
          │                               also a ValueError
          ├── PolicyTestFileError         a policy test file (policies.errors)
          ├── AuthenticationError
          │    ├── TicketError            a node ticket not to honour (gateway.mesh.tickets)
          │    ├── TokenRejected          an identity provider's token refused, with why
          │    │                          (gateway.security.token_check)
          │    └── KeysUnavailable        the provider's keys cannot be had
          │                               (gateway.security.provider_keys)
          ├── InvalidQuery
          ├── QueryRefused
          │    └── AdminOnly              an operator action of a non-admin
          │                               (gateway.flightsql.operator)
          ├── UnknownObject
          │    └── AccessDenied
          ├── QueryFailed
          │    └── SparkQueryFailed       Spark ran the query and failed it (gateway.spark.connect)
          ├── ResourceExhausted
          │    └── FragmentTooBig         a Spark fragment past its size (gateway.spark.fragments)
          ├── Unavailable
          │    ├── NodeUnavailable        (gateway.mesh.federation)
          │    ├── ReplicaSilent          a node not answering for end reports (gateway.mesh.ends)
          │    └── SparkUnavailable       Spark Connect unreachable (gateway.spark.connect)
          ├── NotSupported
          └── HandleNotFound

``connectors`` and ``policies`` know nothing of the gateway, except this module: it is the
root both import (an exception allowed, and checked, in pyproject.toml's import contracts),
so it imports nothing but the standard library.
"""

from __future__ import annotations


def first_line(value: object, default: str | None = None) -> str:
    """The first non-blank line of ``str(value)`` (an exception's message), stripped.

    An empty message gives ``default``, or for an exception its type name, never an
    IndexError (as indexing the first of ``splitlines()`` does)."""
    for line in str(value).splitlines():
        if line.strip():
            return line.strip()
    if default is not None:
        return default
    return type(value).__name__ if isinstance(value, BaseException) else ""


class MeshgateError(Exception):
    """Base class of every error the gateway raises on purpose."""

    @property
    def client_message(self) -> str:
        return str(self)


class ConfigError(MeshgateError):
    """The mesh configuration file is missing or invalid."""


class ContractError(MeshgateError):
    """A contract file that cannot be served; the message names file, field and fix."""


class AuthenticationError(MeshgateError):
    """Credentials or token missing, wrong, expired or revoked."""


class InvalidQuery(MeshgateError):
    """The statement cannot be understood: syntax error, wrong parameter count."""


class QueryRefused(MeshgateError):
    """The statement is understood but not allowed: a write, a file read, a forbidden function."""


class UnknownObject(MeshgateError):
    """The statement names a product, schema or column that does not exist (for this user)."""


class AccessDenied(UnknownObject):
    """Policy denies a product; the client sees the same message as for an unknown one,
    the audit log records ``reason`` (which rule, or default deny)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class QueryFailed(MeshgateError):
    """The engine could not run an accepted statement; the message is safe to show."""


class ResourceExhausted(MeshgateError):
    """A per-user or per-query limit was reached; the message says when to retry."""


class Unavailable(MeshgateError):
    """A part of the mesh the query needs is down (a domain node); retrying may help."""


class NotSupported(MeshgateError):
    """A Flight SQL feature the gateway does not offer."""


class HandleNotFound(MeshgateError):
    """A ticket or prepared-statement handle that is unknown, expired, or not the caller's."""
