"""``meshgate top`` and ``meshgate cancel``: a running gateway's queries, for its admins;
``connect`` and ``call_action`` for any command that asks a running gateway.

Both talk to the gateway over Flight (the ``meshgate.list_queries`` and
``meshgate.cancel_query`` actions), authenticated like any client; the gateway answers
only users with one of its ``[gateway] admin_roles``.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import pyarrow.flight as flight

STATEMENT_WIDTH = 60

Uri = Annotated[str, typer.Option(help="The gateway's Flight address.")]
User = Annotated[str, typer.Option(help="An admin of the gateway ([gateway] admin_roles).")]
Password = Annotated[
    str,
    typer.Option(
        prompt=True, hide_input=True, envvar="MESHGATE_PASSWORD", help="The user's password."
    ),
]
RootCerts = Annotated[
    Path | None, typer.Option(help="PEM root certificates of a grpc+tls:// gateway.")
]

console = Console()
err_console = Console(stderr=True)


def top(
    uri: Uri = "grpc://127.0.0.1:8815",
    user: User = "bob",
    password: Password = "",
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Show one snapshot and exit.")] = False,
    tls_root_certs: RootCerts = None,
) -> None:
    """Show a running gateway's running and queued queries, refreshed (admins only)."""
    from rich.live import Live

    from gateway.flightsql.operator import ACTION_LIST_QUERIES

    client, options = connect(uri, user, password, tls_root_certs)
    try:
        if once:
            console.print(_view(call_action(client, options, ACTION_LIST_QUERIES), uri))
            return
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                live.update(_view(call_action(client, options, ACTION_LIST_QUERIES), uri))
                live.refresh()
                time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        client.close()


def cancel(
    query_id: Annotated[str, typer.Argument(help="The query's id, as `meshgate top` shows it.")],
    uri: Uri = "grpc://127.0.0.1:8815",
    user: User = "bob",
    password: Password = "",
    tls_root_certs: RootCerts = None,
) -> None:
    """Cancel a running or queued query of any user (admins only; audited)."""
    from gateway.flightsql.operator import ACTION_CANCEL_QUERY

    client, options = connect(uri, user, password, tls_root_certs)
    try:
        body = json.dumps({"query_id": query_id}).encode()
        answer = call_action(client, options, ACTION_CANCEL_QUERY, body)
    finally:
        client.close()
    console.print(
        f"cancelled {escape(query_id)} ({escape(answer['user'])}'s query in resource group "
        f"{escape(answer['group'])})"
    )


def connect(
    uri: str, user: str, password: str, root_certs: Path | None
) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
    import pyarrow as pa
    import pyarrow.flight as flight

    try:
        kwargs = {"tls_root_certs": root_certs.read_bytes()} if root_certs else {}
        client = flight.FlightClient(uri, **kwargs)
    except (pa.ArrowException, OSError) as exc:  # a malformed address, unreadable certificates
        _fail(exc)
    try:
        header = client.authenticate_basic_token(user, password)
    except (pa.ArrowException, OSError) as exc:  # Flight errors too; a server that is not Flight
        client.close()
        _fail(exc)
    return client, flight.FlightCallOptions(headers=[header], timeout=30)


def call_action(
    client: flight.FlightClient, options: flight.FlightCallOptions, name: str, body: bytes = b""
) -> dict:
    import pyarrow as pa
    import pyarrow.flight as flight

    try:
        results = list(client.do_action(flight.Action(name, body), options))
    except (flight.FlightError, pa.ArrowException, KeyError) as exc:
        _fail(exc)
    return json.loads(results[0].body.to_pybytes())


def _view(answer: dict, uri: str) -> Group:
    groups = ", ".join(
        f"{escape(name)} {counts['running']} running / {counts['queued']} queued"
        for name, counts in sorted(answer["groups"].items())
    )
    header = Text.from_markup(f"[bold]{escape(uri)}[/bold]  {groups}")
    table = Table("query", "user", "group", "state", "engine", "elapsed", "statement")
    for query in answer["queries"]:
        statement = " ".join(query["statement"].split())
        if len(statement) > STATEMENT_WIDTH:
            statement = statement[: STATEMENT_WIDTH - 1] + "…"
        table.add_row(
            escape(query["query_id"]),
            escape(query["user"]),
            escape(query["group"]),
            escape(query["state"]),
            escape(query["engine"] or "-"),
            str(timedelta(seconds=round(query["elapsed_seconds"]))),
            escape(statement),
        )
    if not answer["queries"]:
        table.caption = "no query is running or queued"
    return Group(header, table)


def _fail(exc: BaseException) -> NoReturn:
    message = str(exc).split(". gRPC client debug context")[0].split(". Detail: ")[0]
    message = message.strip('"')  # NOT_FOUND: the server's KeyError quotes its message
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code=1)
