"""The ``meshgate`` command line: serve, demo, products, query, hash-password."""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.errors import MeshgateError

app = typer.Typer(help="Meshgate: a governed Arrow Flight SQL gateway for a data mesh.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

MeshDir = Annotated[Optional[Path], typer.Argument(help="Mesh directory (default: the demo mesh in the cache folder).")]
SAMPLE_QUERY = (
    "SELECT region, count(*) AS orders, sum(amount) AS revenue "
    "FROM sales.orders GROUP BY region ORDER BY region"
)


def default_mesh_dir() -> Path:
    """The demo mesh's cache location (``$MESHGATE_HOME`` or ``~/.cache/meshgate``)."""
    home = os.environ.get("MESHGATE_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    ) / "meshgate"
    return Path(home) / "demo-mesh"


def _mesh(mesh_dir: Path | None) -> Path:
    if mesh_dir is not None:
        return mesh_dir
    path = default_mesh_dir()
    if not (path / "mesh.toml").is_file():
        from gateway.demo import write_demo_mesh

        err_console.print(f"Writing the demo mesh to {path} ...")
        write_demo_mesh(path, overwrite=True)
    return path


def _fail(exc: Exception) -> None:
    err_console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=1)


@app.command()
def serve(
    mesh_dir: MeshDir = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (0 picks a free one).")] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
) -> None:
    """Serve a mesh over Arrow Flight SQL."""
    from gateway.app import build_gateway
    from gateway.logs import configure_logging, configure_server_process

    configure_logging(json_lines=json_logs)
    configure_server_process()
    try:
        gateway = build_gateway(_mesh(mesh_dir), host=host, port=port)
    except MeshgateError as exc:
        _fail(exc)
    address = f"grpc://{host or gateway.config.gateway.host}:{gateway.port}"
    _print_banner(gateway, address)
    gateway.serve_forever()


def _print_banner(gateway, address: str) -> None:
    catalog = gateway.state.current.catalog
    console.print(f"[bold]Meshgate[/bold] serving {len(catalog)} products on [bold]{address}[/bold]")
    for product in catalog:
        console.print(f"  {product.key:<24} {product.contract.description}")
    for problem in catalog.problems:
        console.print(f"  [red]not served[/red] {escape(problem.message)}")
    console.print("\nConnect from Python (pip install adbc-driver-flightsql pyarrow):\n")
    console.print(
        "import adbc_driver_flightsql.dbapi as flightsql\n"
        f'conn = flightsql.connect("{address}", db_kwargs={{"username": "bob", "password": "bob"}}, autocommit=True)\n'
        "cur = conn.cursor()\n"
        f'cur.execute("{SAMPLE_QUERY}")\n'
        "print(cur.fetch_arrow_table())",
        highlight=False,
        markup=False,
    )
    console.print("\nDemo users (password = user name): alice, bob, carol, erin, dave. Ctrl-C stops.\n")


@app.command()
def demo(
    mesh_dir: Annotated[Path, typer.Argument(help="Where to write the demo mesh.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing demo mesh there.")] = False,
) -> None:
    """Write the demo mesh (sales, crm, logistics) with deterministic data."""
    from gateway.demo import write_demo_mesh

    try:
        path = write_demo_mesh(mesh_dir, overwrite=overwrite)
    except (FileExistsError, NotADirectoryError) as exc:
        _fail(exc)
    console.print(f"Demo mesh written to {path}. Serve it with: meshgate serve {path}")


@app.command()
def products(mesh_dir: MeshDir = None) -> None:
    """List the mesh's products: owner, rows, columns and validation status."""
    from gateway.catalog import load_catalog
    from gateway.config import load_config

    path = _mesh(mesh_dir)
    try:
        catalog = load_catalog(path, load_config(path).engine)
    except MeshgateError as exc:
        _fail(exc)
    table = Table(title=f"Products of {path}")
    for column in ("product", "owner", "rows", "columns", "status"):
        table.add_column(column)
    for product in catalog:
        rows = catalog.engine.row_count(product.domain, product.name)
        columns = ", ".join(
            f"{c.name}{' [' + ','.join(c.tags) + ']' if c.tags else ''}" for c in product.columns
        )
        table.add_row(product.key, product.contract.owner, f"{rows:,}", escape(columns), "[green]ok[/green]")
    for problem in catalog.problems:
        table.add_row(problem.path.parent.name + "/" + problem.path.name, "", "", "", f"[red]{escape(problem.message)}[/red]")
    console.print(table)
    if catalog.problems:
        raise typer.Exit(code=2)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement.")],
    mesh_dir: Annotated[Optional[Path], typer.Option("--mesh", help="Mesh directory.")] = None,
    user: Annotated[str, typer.Option(help="Run as this user of the mesh config.")] = "bob",
    max_rows: Annotated[int, typer.Option(help="Rows to print at most.")] = 50,
) -> None:
    """Run SQL through the same pipeline as the server, as USER, and print a table."""
    from gateway.auth import UserDirectory
    from gateway.config import load_config
    from gateway.service import SqlService
    from gateway.state import MeshState

    path = _mesh(mesh_dir)
    try:
        config = load_config(path)
        if user not in config.users:
            raise MeshgateError(f"unknown user {user!r}; users of {path}: {', '.join(config.users)}")
        service = SqlService(MeshState(path, config))
        principal = UserDirectory(config.users).principal(user)
        schema, batches = service.stream(principal, sql.encode("utf-8"), lambda: False)
        table = Table(*schema.names)
        shown = 0
        for batch in batches:
            for row in islice(batch.to_pylist(), max_rows - shown):
                table.add_row(*(escape("NULL" if v is None else str(v)) for v in row.values()))
                shown += 1
            if shown >= max_rows:
                break
    except MeshgateError as exc:
        _fail(exc)
    console.print(table)
    console.print(f"{shown} row(s) shown (at most {max_rows}).")


@app.command("hash-password")
def hash_password_command(
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Print a scrypt hash for a user's ``password_hash`` in mesh.toml."""
    from gateway.passwords import hash_password

    console.print(hash_password(password), highlight=False)


if __name__ == "__main__":
    app()
