"""Talking to a gateway as a client: ADBC connections, pyarrow.flight clients, raw-SQL
queries, and what the client sees of an error.

``Outcome``, ``run`` and ``Clients`` record what one statement gave back (a table or an
error text), for the checks of ``support.leaks``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import adbc_driver_manager
import pyarrow as pa
from pyarrow import flight

if TYPE_CHECKING:
    from support.servers import Private

#: What an ADBC or pyarrow.flight client raises for a refused or failed statement.
CLIENT_ERRORS = (adbc_driver_manager.Error, pa.ArrowException, flight.FlightError)
#: What a client sees for a gRPC error status: pyarrow raises FlightError subclasses for
#: the Flight codes, and ArrowInvalid / ArrowNotImplementedError / ArrowKeyError for
#: INVALID_ARGUMENT / UNIMPLEMENTED / NOT_FOUND.
STATUS_ERRORS = (flight.FlightError, pa.ArrowException)


# --------------------------------------------------------------------------- connections


def adbc_connect(uri: str, user: str, password: str | None = None):
    """An ADBC DB-API connection as ``user`` (demo password = user name)."""
    import adbc_driver_flightsql.dbapi as flightsql

    return flightsql.connect(
        uri,
        db_kwargs={"username": user, "password": user if password is None else password},
        autocommit=True,
    )


@contextmanager
def adbc_connections() -> Iterator[Callable[[str, str], object]]:
    """``get(uri, user)``: one ADBC connection per (server, user), opened on first use and
    closed on exit (quietly: a connection to a killed process may not close cleanly)."""
    opened: dict[tuple[str, str], object] = {}

    def get(uri: str, user: str):
        if (uri, user) not in opened:
            opened[(uri, user)] = adbc_connect(uri, user)
        return opened[(uri, user)]

    try:
        yield get
    finally:
        for conn in opened.values():
            with suppress(Exception):
                conn.close()


def flight_client(uri: str, user: str):
    """A plain pyarrow.flight client and call options carrying ``user``'s bearer token."""
    client = flight.FlightClient(uri)
    header = client.authenticate_basic_token(user, user)
    return client, flight.FlightCallOptions(headers=[header])


def raw_info(uri: str, user: str, sql: str) -> flight.FlightInfo:
    """GetFlightInfo of raw SQL (a command descriptor) as ``user``."""
    client, options = flight_client(uri, user)
    try:
        return client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    finally:
        client.close()


# --------------------------------------------------------------------------- queries


def run_sql(
    private: Private,
    user: str,
    sql: str | bytes,
    timeout: float | None = None,
    client: tuple[flight.FlightClient, flight.FlightCallOptions] | None = None,
) -> pa.Table:
    """GetFlightInfo + DoGet of raw SQL as ``user`` on a private gateway; raises the Flight
    error."""
    own = client is None
    connection, options = client or private.client(user)
    if timeout is not None:
        options = flight.FlightCallOptions(headers=options.headers, timeout=timeout)
    try:
        command = sql.encode() if isinstance(sql, str) else sql
        info = connection.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        return connection.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        if own:
            connection.close()


def health(private: Private, user: str = "bob", client=None) -> dict:
    """The ``Health`` action's answer to ``user`` (or on ``client``, left open)."""
    flight_client, options = client or private.client(user)
    try:
        results = list(flight_client.do_action(flight.Action("Health", b""), options))
    finally:
        if client is None:
            flight_client.close()
    return json.loads(results[0].body.to_pybytes())


def serves(private: Private, user: str = "bob", timeout: float = 10.0) -> bool:
    """True when the private gateway answers SELECT 1 correctly within ``timeout``."""
    try:
        table = run_sql(private, user, "SELECT 1 AS one", timeout=timeout)
    except flight.FlightError:
        return False
    return table.column(0).to_pylist() == [1]


def product_health(uri: str, user: str = "bob") -> dict[str, str]:
    """The gateway's ``Health`` action as ``user``: each product it lets them see -> "ok"
    or why it is unhealthy."""
    client, options = flight_client(uri, user)
    try:
        results = list(client.do_action(flight.Action("Health", b""), options))
    finally:
        client.close()
    return json.loads(results[0].body.to_pybytes())["products"]


# --------------------------------------------------------------------------- errors


def error_text(exc: BaseException) -> str:
    """Everything a client sees of an error: message plus ADBC/Flight details."""
    parts = [str(exc)]
    for attr in ("extra_info", "details", "sqlstate"):
        value = getattr(exc, attr, None)
        if value:
            parts.append(repr(value))
    return "\n".join(parts)


def message(exc: BaseException) -> str:
    """A Flight error's message without gRPC's debug context."""
    return str(exc).split(". gRPC client debug context")[0]


def normalized_error(exc: BaseException, *names: str) -> str:
    """An error's message (``message``) with the names that legitimately differ replaced by X."""
    text = message(exc)  # gRPC's own context may vary
    for name in names:
        text = text.replace(name, "X")
    return text


# --------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """What a client got back for one statement: a table or an error text."""

    sql: str
    table: pa.Table | None = None
    error: str | None = None
    params: tuple | None = None

    @property
    def refused(self) -> bool:
        return self.error is not None

    @property
    def rows(self) -> list[dict]:
        return [] if self.table is None else self.table.to_pylist()

    @property
    def columns(self) -> list[str]:
        return [] if self.table is None else list(self.table.schema.names)

    def texts(self) -> Iterator[str]:
        """Every string the client received: error, column and field names, values."""
        if self.error is not None:
            yield self.error
        if self.table is None:
            return
        yield from _type_names(self.table.schema)
        for column in self.table.columns:
            yield from _strings(column.to_pylist())

    def values(self, name: str) -> list:
        if self.table is None or name not in self.table.schema.names:
            return []
        return self.table.column(name).to_pylist()

    def describe(self) -> str:
        if self.error is not None:
            return f"error: {self.error[:300]}"
        return f"{self.table.num_rows} row(s), columns {self.columns}, first {self.rows[:2]!r}"[
            :600
        ]


def _type_names(schema: pa.Schema) -> Iterator[str]:
    for schema_field in schema:
        yield schema_field.name
        yield from _nested_names(schema_field.type)


def _nested_names(data_type: pa.DataType) -> Iterator[str]:
    if pa.types.is_struct(data_type):
        for index in range(data_type.num_fields):
            child = data_type.field(index)
            yield child.name
            yield from _nested_names(child.type)
    elif (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    ):
        yield from _nested_names(data_type.value_type)
    elif pa.types.is_map(data_type):
        yield from _nested_names(data_type.key_type)
        yield from _nested_names(data_type.item_type)


def _strings(values) -> Iterator[str]:
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, bytes):
            yield value.decode("utf-8", "replace")
        elif isinstance(value, dict):
            yield from (str(k) for k in value)
            yield from _strings(value.values())
        elif isinstance(value, (list, tuple)):
            yield from _strings(value)


def run(conn, sql: str, params: tuple | None = None) -> Outcome:
    """Execute ``sql`` through ADBC; return the table or the error text the client saw."""
    cursor = conn.cursor()
    try:
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        return Outcome(sql, table=cursor.fetch_arrow_table(), params=params)
    except CLIENT_ERRORS as exc:
        return Outcome(sql, error=error_text(exc), params=params)
    finally:
        with contextlib.suppress(CLIENT_ERRORS):
            cursor.close()


class Clients:
    """One ADBC connection per user, opened on first use and reused."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conns: dict[str, object] = {}

    def __call__(self, user: str):
        conn = self._conns.get(user)
        if conn is None:
            conn = self._conns[user] = adbc_connect(self.uri, user)
        return conn

    def run(self, user: str, sql: str, params: tuple | None = None) -> Outcome:
        return run(self(user), sql, params)

    def close(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(CLIENT_ERRORS):
                conn.close()
