"""The ``meshgate`` command line: serve, demo, products, query, hash-password."""

from __future__ import annotations

import getpass
import os
import socket
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.errors import MeshgateError

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog
    from gateway.flightsql.service import SqlService
    from gateway.security.auth import UserDirectory
    from gateway.security.principal import Principal

app = typer.Typer(
    help="Meshgate: a governed Arrow Flight SQL gateway for a data mesh.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)

MeshDir = Annotated[
    Path | None,
    typer.Argument(help="Mesh directory (default: the demo mesh in the cache folder)."),
]
SAMPLE_QUERY = (
    "SELECT region, count(*) AS orders, sum(amount) AS revenue "
    "FROM sales.orders GROUP BY region ORDER BY region"
)


@app.callback()
def _configure() -> None:
    """Plain, structured logs for every command (never rich tracebacks with locals); only
    warnings and errors for one-shot commands (serve and node log at info)."""
    from gateway.logs import configure_logging

    configure_logging(level="warning")


def default_mesh_dir() -> Path:
    """The demo mesh's cache location (``$MESHGATE_HOME`` or ``~/.cache/meshgate``)."""
    home = (
        os.environ.get("MESHGATE_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meshgate"
    )
    return Path(home) / "demo-mesh"


def _mesh(mesh_dir: Path | None) -> Path:
    if mesh_dir is not None:
        return mesh_dir
    path = default_mesh_dir()
    if not (path / "mesh.toml").is_file():
        from gateway.demo.mesh import write_demo_mesh

        err_console.print(f"Writing the demo mesh to {path} ...")
        write_demo_mesh(path, overwrite=True)
    return path


def _fail(exc: Exception | str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=1)


@app.command()
def serve(
    mesh_dir: MeshDir = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one).")] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
) -> None:
    """Serve a mesh over Arrow Flight SQL."""
    from gateway.flightsql.app import build_gateway
    from gateway.logs import configure_logging, configure_server_process

    configure_logging(json_lines=json_logs)
    configure_server_process()
    try:
        gateway = build_gateway(_mesh(mesh_dir), host=host, port=port)
    except MeshgateError as exc:
        _fail(exc)
    address = f"grpc://{host or gateway.config.gateway.host}:{gateway.port}"
    _print_banner(gateway, address)
    _exit_when_stopped(gateway.serve_forever)


@app.command()
def node(
    mesh_dir: Annotated[
        Path, typer.Argument(help="Mesh directory (the node reads only its domain).")
    ],
    domain: Annotated[str, typer.Option(help="The domain this node serves.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8821,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
) -> None:
    """Run a domain node: serves DOMAIN's products to tickets sealed by the gateway."""
    from gateway.config import load_config
    from gateway.logs import configure_logging, configure_server_process
    from gateway.mesh.node import DomainNode
    from gateway.signals import wait_for_stop_signal

    configure_logging(json_lines=json_logs)
    configure_server_process()
    try:
        server = DomainNode(
            f"grpc://{host}:{port}", mesh_dir.resolve(), load_config(mesh_dir), domain
        )
    except MeshgateError as exc:
        _fail(exc)
    console.print(
        f"Meshgate node for domain [bold]{domain}[/bold] on grpc://{host}:{server.port} "
        f"({len(server.state.current.catalog)} products)"
    )
    wait_for_stop_signal()
    _exit_when_stopped(
        lambda: server.stop_gracefully(server.state.config.gateway.shutdown_grace_seconds)
    )


def _exit_when_stopped(stop: Callable[[], bool]) -> None:
    """Run a server's ``stop``; when it could not stop every call (a client stopped
    reading) or failed, end the process without the exit handlers that would wait for
    those calls for ever."""
    from gateway.signals import exit_abandoning_calls

    try:
        stopped = stop()
    except Exception:  # noqa: BLE001 - the stop failed half-way: report it, never hang
        traceback.print_exc()
        exit_abandoning_calls(1)
    if not stopped:
        exit_abandoning_calls()


def _print_banner(gateway, address: str) -> None:
    catalog = gateway.state.current.catalog
    console.print(
        f"[bold]Meshgate[/bold] serving {len(catalog)} products on [bold]{address}[/bold]"
    )
    for product in catalog:
        console.print(f"  {product.key:<24} {product.contract.description}")
    for problem in catalog.problems:
        console.print(f"  [red]not served[/red] {escape(problem.message)}")
    if gateway.metrics_server is not None:
        console.print(f"Prometheus metrics on [bold]{gateway.metrics_server.url}[/bold]")
    console.print("\nConnect from Python (pip install adbc-driver-flightsql pyarrow):\n")
    console.print(
        "import adbc_driver_flightsql.dbapi as flightsql\n"
        f'conn = flightsql.connect("{address}", db_kwargs={{"username": "bob", "password": "bob"}}, autocommit=True)\n'
        "cur = conn.cursor()\n"
        f'cur.execute("{SAMPLE_QUERY}")\n'
        "print(cur.fetch_arrow_table())",
        highlight=False,
        markup=False,
        soft_wrap=True,  # never break a line: the snippet must paste as it is
    )
    console.print(
        "\nDemo users (password = user name): alice, bob, carol, erin, dave. Ctrl-C stops.\n"
    )


@app.command()
def demo(
    mesh_dir: Annotated[Path, typer.Argument(help="Where to write the demo mesh.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing demo mesh there.")] = False,
) -> None:
    """Write the demo mesh (sales, crm, logistics) with deterministic data."""
    from gateway.demo.mesh import write_demo_mesh

    try:
        path = write_demo_mesh(mesh_dir, overwrite=overwrite)
    except FileExistsError as exc:
        _fail(str(exc).replace("pass overwrite=True", "pass --overwrite"))
    except NotADirectoryError as exc:
        _fail(exc)
    console.print(f"Demo mesh written to {path}. Serve it with: meshgate serve {path}")


@app.command()
def products(
    mesh_dir: MeshDir = None,
    user: Annotated[str | None, typer.Option(help="Show only what this user may see.")] = None,
    uri: Annotated[
        str | None,
        typer.Option(
            help="A running gateway (with --user): the accelerated column shows how fresh "
            "its in-memory copies are, from its Health action."
        ),
    ] = None,
    password: Annotated[
        str, typer.Option(envvar="MESHGATE_PASSWORD", help="--user's password (for --uri).")
    ] = "",
    tls_root_certs: Annotated[
        Path | None, typer.Option(help="PEM root certificates of a grpc+tls:// gateway.")
    ] = None,
) -> None:
    """List the mesh's products: owner, rows, columns, acceleration and validation status."""
    from gateway.engine.acceleration import describe_copy

    path = _mesh(mesh_dir)
    live = None
    if uri is not None:
        if user is None:
            _fail("--uri needs --user: the gateway's Health answers what that user may read")
        live = _live_copies(uri, user, password, tls_root_certs)
    try:
        service, directory = _service(path)
        catalog = service.snapshot.catalog
        listed = list(catalog)
        if user is not None:
            listed = service.visible.products(directory.principal(_known_user(service, user)))
    except MeshgateError as exc:
        _fail(exc)
    title = f"Products of {path}" + (f" visible to {user}" if user else "")
    notes = []
    if user:
        notes.append(
            f"rows —: counts are not shown per user (row filters apply); count with "
            f'meshgate query --user {user} "SELECT count(*) FROM <product>"'
        )
    notes.append(
        f"accelerated: as the gateway at {uri} holds its copies now"
        if uri
        else "accelerated: how fresh a running gateway's copies are: --uri URI --user USER"
    )
    caption = "\n".join(notes)
    table = Table(title=title, caption=escape(caption))
    for column in ("product", "owner", "rows", "columns", "accelerated", "status"):
        table.add_column(column)
    for product in listed:
        rows = catalog.engine.row_count(product.domain, product.name) if user is None else None
        columns = ", ".join(
            f"{c.name}{' [' + ','.join(c.tags) + ']' if c.tags else ''}" for c in product.columns
        )
        shown_rows = "—" if rows is None else f"{rows:,}"
        if live is not None:
            facts = live.get(product.key)
        else:  # this command's own copy: its size, not its age
            copy = catalog.engine.accelerated.get(product.key)
            facts = None if copy is None else ({"bytes": copy.bytes} if user is None else {})
        table.add_row(
            product.key,
            product.contract.owner,
            shown_rows,
            escape(columns),
            "no" if facts is None else describe_copy(facts),
            "[green]ok[/green]",
        )
    problems = [] if user else catalog.problems
    for problem in problems:
        table.add_row(
            problem.path.parent.name + "/" + problem.path.name,
            "",
            "",
            "",
            "",
            f"[red]{escape(problem.message)}[/red]",
        )
    console.print(table)
    if service.nodes is not None:
        nodes = Table("domain", "node", "reachable", "detail", title="Domain nodes")
        for domain in service.nodes.domains:
            for replica in service.nodes.health(domain):
                nodes.add_row(
                    domain,
                    replica["location"],
                    "yes" if replica["reachable"] else "[red]no[/red]",
                    escape(", ".join(replica.get("products", [])) or replica.get("error", "")),
                )
        console.print(nodes)
    for error in service.policy_errors if not user else ():
        err_console.print(f"[red]policy error:[/red] {escape(str(error))}")
    if problems:
        raise typer.Exit(code=2)


def _live_copies(
    uri: str, user: str, password: str, root_certs: Path | None
) -> dict[str, dict[str, object]]:
    """The accelerated copies a running gateway holds now, as its Health shows them to
    ``user``: product -> loaded_at, age_seconds, stale (and sizes, for an operator)."""
    from gateway.cli.top import call_action, connect
    from gateway.flightsql.server import ACTION_HEALTH

    if not password:
        password = typer.prompt(f"{user}'s password", hide_input=True)
    client, options = connect(uri, user, password, root_certs)
    try:
        health = call_action(client, options, ACTION_HEALTH)
    finally:
        client.close()
    return dict(health.get("accelerated", {}).get("products", {}))


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement.")],
    mesh_dir: Annotated[Path | None, typer.Option("--mesh", help="Mesh directory.")] = None,
    user: Annotated[str, typer.Option(help="Run as this user of the mesh config.")] = "bob",
    max_rows: Annotated[int, typer.Option(help="Rows to print at most.")] = 50,
) -> None:
    """Run SQL through the same pipeline as the server, as USER, and print a table."""
    path = _mesh(mesh_dir)
    try:
        with _session(path) as (service, principal_of):
            schema, batches = service.stream(principal_of(user), sql.encode(), lambda: False)
            table = Table(*schema.names)
            shown = 0
            try:
                for batch in batches:
                    for row in islice(batch.to_pylist(), max_rows - shown):
                        table.add_row(
                            *(escape("NULL" if v is None else str(v)) for v in row.values())
                        )
                        shown += 1
                    if shown >= max_rows:
                        break
            finally:  # stopping early ends the stream (and writes its audit end) now
                getattr(batches, "close", lambda: None)()
    except MeshgateError as exc:
        _fail(exc)
    console.print(table)
    console.print(f"{shown} row(s) shown (at most {max_rows}).")


@app.command()
def explain(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement.")],
    mesh_dir: Annotated[Path | None, typer.Option("--mesh", help="Mesh directory.")] = None,
    user: Annotated[str, typer.Option(help="Explain for this user.")] = "bob",
) -> None:
    """Show the governed SQL and, per product and column, which rule allowed, filtered or masked it."""
    path = _mesh(mesh_dir)
    try:
        with _session(path) as (service, principal_of):
            text = f"EXPLAIN POLICY {sql}".encode()
            _, batches = service.stream(principal_of(user), text, lambda: False)
            rows = [row for batch in batches for row in batch.to_pylist()]
    except MeshgateError as exc:
        _fail(exc)
    console.print(f"[bold]Governed SQL for {user}:[/bold]")
    console.print(rows[0]["rule"], highlight=False, markup=False)
    table = Table("product", "column", "decision", "rule", title="Decisions")
    for row in rows[1:]:
        table.add_row(
            *(escape(str(row[k] or "")) for k in ("product", "column", "decision", "rule"))
        )
    console.print(table)


policy_app = typer.Typer(help="Policy tools for domain teams.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("test")
def policy_test(mesh_dir: MeshDir = None) -> None:
    """Run the mesh's policy tests (<domain>/policy_tests.yaml); exit 1 on any failure."""
    import pyarrow as pa

    from gateway.errors import AccessDenied, QueryRefused
    from policies.testing import find_case_files, load_cases, run_cases

    path = _mesh(mesh_dir)
    with ExitStack() as stack:
        try:
            service, principal_of = stack.enter_context(_session(path))
            cases = [case for file in find_case_files(path) for case in load_cases(file)]
        except MeshgateError as exc:  # also a policy test file that cannot be read
            _fail(exc)

        def runner(user: str, sql: str) -> pa.Table:
            schema, batches = service.stream(principal_of(user), sql.encode(), lambda: False)
            return pa.Table.from_batches(list(batches), schema=schema)

        refused = (AccessDenied, QueryRefused)
        results = run_cases(cases, runner, lambda exc: isinstance(exc, refused))
    failed = 0
    for result in results:
        mark = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
        failed += not result.passed
        console.print(
            f"{mark} {escape(result.case.where)}: {escape(result.case.name)}"
            + ("" if result.passed else f"\n     {escape(result.message)}")
        )
    console.print(f"{len(results) - failed} passed, {failed} failed")
    if failed or service.policy_errors:
        for error in service.policy_errors:
            err_console.print(f"[red]policy error:[/red] {escape(str(error))}")
        raise typer.Exit(code=1)


@app.command()
def audit(
    mesh_dir: MeshDir = None,
    user: Annotated[str | None, typer.Option(help="Only this user's queries.")] = None,
    product: Annotated[str | None, typer.Option(help="Only queries reading this product.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, e.g. 2026-11-25T10:00.")] = None,
    limit: Annotated[int, typer.Option(help="Newest records to show at most.")] = 50,
) -> None:
    """Query the audit log: who ran what, what was decided, rows and bytes returned."""
    from datetime import datetime

    from gateway.audit.query import attempts
    from gateway.config import load_config

    path = _mesh(mesh_dir)
    try:
        directory = load_config(path).audit.path(path)
        since_time = datetime.fromisoformat(since) if since else None
    except (MeshgateError, ValueError) as exc:
        _fail(exc)
    table = Table(
        "time", "user", "client", "decision", "products", "rows", "bytes", "ms", "sql / error"
    )
    for attempt in attempts(directory, user, product, since_time, limit):
        record, end = attempt.record, attempt.end
        table.add_row(
            record["time"][:19],
            record.get("user", ""),
            escape(record.get("client") or ""),
            attempt.decision,
            ", ".join(record.get("products", [])),
            str(end.get("rows", "")),
            str(end.get("bytes", "")),
            str(end.get("duration_ms", "")),
            escape(attempt.text),
        )
    console.print(table)


def _service(path: Path, audit: AuditLog | None = None) -> tuple[SqlService, UserDirectory]:
    """A SqlService over the mesh at ``path`` (no server, operator's view, recording in
    ``audit`` if given) and its users."""
    from gateway.catalog.state import MeshState
    from gateway.config import load_config
    from gateway.flightsql.service import SqlService
    from gateway.security.auth import UserDirectory

    config = load_config(path)
    service = SqlService(MeshState(path, config), audit, operator_view=True)
    return service, UserDirectory(config.users)


@contextmanager
def _session(path: Path) -> Iterator[tuple[SqlService, Callable[[str], Principal]]]:
    """The service of ``_service``, whose statements are audited in the mesh's audit log
    like a client's (``user``: the mesh user the command runs as, whose policy applies;
    ``client``: ``cli:<OS user>@<host>``, who ran it), and the principal of a mesh user.
    Every record is on disk when the session ends."""
    from gateway.audit.log import AuditLog
    from gateway.config import load_config

    settings = load_config(path).audit
    audit = AuditLog(settings.path(path), settings.max_file_bytes, keep_files=settings.keep_files)
    try:
        service, directory = _service(path, audit)
        client = cli_client()

        def principal_of(user: str) -> Principal:
            return replace(directory.principal(_known_user(service, user)), client=client)

        yield service, principal_of
    finally:
        audit.close()


def cli_client() -> str:
    """Who runs a command, as the audit's ``client``: ``cli:<OS user>@<host>``."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment nor the user database
        who = f"uid{os.getuid()}"
    return f"cli:{who}@{socket.gethostname()}"


def _known_user(service, user: str) -> str:
    users = service.users
    if user not in users:
        raise MeshgateError(f"unknown user {user!r}; users of this mesh: {', '.join(users)}")
    return user


@app.command()
def bench(
    scale: Annotated[
        float | None, typer.Option(help="TPC-H scale factor (default 1; quick: 0.01).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory (data, mesh, logs, report).")] = Path(
        "bench-out"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Smoke run: SF0.01, 1 repetition.")
    ] = False,
    repetitions: Annotated[
        int | None, typer.Option(help="Repetitions per figure (default 5).")
    ] = None,
    section: Annotated[
        list[str] | None,
        typer.Option(help="Run only this section (repeatable; see benchmarks/sections.py)."),
    ] = None,
) -> None:
    """Benchmark the gateway against DuckDB in-process, raw Flight and ROAPI (benchmarks/)."""
    try:
        from benchmarks.cli import run
    except ImportError as exc:  # the bench extra is not installed
        raise typer.BadParameter(
            f"the benchmark needs {exc.name or 'its extra packages'}: "
            "pip install 'meshgate[bench]' (from a checkout: pip install -e '.[bench]')"
        ) from None

    console.print(
        str(run(scale=scale, out=out, quick=quick, repetitions=repetitions, sections=section))
    )


from gateway.cli.top import cancel as _cancel  # noqa: E402 - beside the commands they join
from gateway.cli.top import top as _top  # noqa: E402

app.command("top")(_top)
app.command("cancel")(_cancel)


@app.command("hash-password")
def hash_password_command(
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Print a scrypt hash for a user's password_hash in mesh.toml (one line, never wrapped)."""
    from gateway.security.passwords import hash_password

    typer.echo(hash_password(password))
