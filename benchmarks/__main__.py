"""``python -m benchmarks [--scale SF] [--out DIR] [--quick] [--repetitions N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmarks.cli import DEFAULT_OUT, run

app = typer.Typer(
    add_completion=False, help="Meshgate benchmarks: the gateway vs DuckDB, raw Flight and ROAPI."
)


@app.command()
def bench(
    scale: Annotated[
        float | None, typer.Option(help="TPC-H scale factor (default 1; quick: 0.01).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output directory (data, mesh, logs, report).")
    ] = DEFAULT_OUT,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smoke run: SF0.01, 1 repetition, short concurrency.")
    ] = False,
    repetitions: Annotated[
        int | None, typer.Option(help="Repetitions per figure (default 5; quick: 1).")
    ] = None,
) -> None:
    """Generate TPC-H data, publish it as a mesh, measure, and write report.md + results.json + charts."""
    report = run(scale=scale, out=out, quick=quick, repetitions=repetitions)
    typer.echo(str(report))


if __name__ == "__main__":
    app()
