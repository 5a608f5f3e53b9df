"""Flight SQL messages in and out: ``google.protobuf.Any``-packed commands and results.

A descriptor command or ticket that is not a Flight SQL ``Any`` is taken as raw UTF-8
SQL, so that plain ``pyarrow.flight`` clients can send ``for_command(b"SELECT ...")``.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from gateway.errors import InvalidQuery, NotSupported
from gateway.flightsql import flightsql_pb2 as pb

TYPE_URL_PREFIX = "type.googleapis.com/"
#: The DoAction types of Flight SQL's prepared statements.
ACTION_CREATE_PREPARED_STATEMENT = "CreatePreparedStatement"
ACTION_CLOSE_PREPARED_STATEMENT = "ClosePreparedStatement"
_PACKAGE = "arrow.flight.protocol.sql."
M = TypeVar("M", bound=Message)

_MESSAGES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        pb.CommandGetSqlInfo,
        pb.CommandGetXdbcTypeInfo,
        pb.CommandGetCatalogs,
        pb.CommandGetDbSchemas,
        pb.CommandGetTables,
        pb.CommandGetTableTypes,
        pb.CommandGetPrimaryKeys,
        pb.CommandGetExportedKeys,
        pb.CommandGetImportedKeys,
        pb.CommandGetCrossReference,
        pb.CommandStatementQuery,
        pb.CommandStatementSubstraitPlan,
        pb.TicketStatementQuery,
        pb.CommandPreparedStatementQuery,
        pb.CommandStatementUpdate,
        pb.CommandPreparedStatementUpdate,
        pb.CommandStatementIngest,
        pb.ActionCreatePreparedStatementRequest,
        pb.ActionClosePreparedStatementRequest,
        pb.ActionBeginTransactionRequest,
        pb.ActionEndTransactionRequest,
        pb.ActionCancelQueryRequest,
        pb.ActionCreatePreparedSubstraitPlanRequest,
    )
}


def decode(raw: bytes) -> Message | str:
    """The Flight SQL message packed in ``raw``, or ``raw`` as SQL text."""
    envelope = any_pb2.Any()
    try:
        envelope.ParseFromString(raw)
    except DecodeError:
        return _as_sql(raw)
    if not envelope.type_url.startswith(TYPE_URL_PREFIX + _PACKAGE):
        return _as_sql(raw)
    name = envelope.type_url.removeprefix(TYPE_URL_PREFIX)
    cls = _MESSAGES.get(name)
    if cls is None:
        raise NotSupported(f"Flight SQL message {name} is not supported by this server")
    message = cls()
    try:  # what ``envelope.Unpack`` does once the type matched (which ``cls`` is)
        message.ParseFromString(envelope.value)
    except DecodeError:
        raise InvalidQuery(f"malformed Flight SQL message {name}") from None
    return message


def decode_descriptor(descriptor: object) -> Message | str:
    """The command of a Flight descriptor (see ``decode``); a PATH descriptor, which names
    no command, is refused."""
    raw = getattr(descriptor, "command", None)
    if raw is None:
        raise NotSupported(
            "path descriptors are not supported: send a command descriptor holding a Flight SQL "
            "command or SQL text, e.g. "
            'FlightDescriptor.for_command(b"SELECT * FROM sales.orders")'
        )
    return decode(raw)


def decode_as(raw: bytes, cls: type[M]) -> M:
    """Decode ``raw`` and require a message of type ``cls``."""
    message = decode(raw)
    if not isinstance(message, cls):
        raise InvalidQuery(f"expected a {cls.DESCRIPTOR.name} message")
    return message


def decode_message(raw: bytes, cls: type[M]) -> M:
    """``raw`` as a bare ``cls`` message (not inside an ``Any``): the bodies of Flight's
    own actions, such as SetSessionOptions."""
    message = cls()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidQuery(f"malformed {cls.DESCRIPTOR.name} message") from exc
    return message


def pack(message: Message) -> bytes:
    """``message`` wrapped in an ``Any`` and serialized."""
    envelope = any_pb2.Any()
    envelope.Pack(message)
    return envelope.SerializeToString()


def _as_sql(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidQuery(
            "the command is neither a Flight SQL message nor UTF-8 SQL text"
        ) from exc
