"""``python -m benchmarks [--scale SF] [--out DIR] [--quick] [--repetitions N] [--section KEY]...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmarks.cli import DEFAULT_OUT, run
from benchmarks.sections import KEYS

app = typer.Typer(
    add_completion=False, help="Meshgate benchmarks: the gateway vs DuckDB, raw Flight and ROAPI."
)


def _known_sections(keys: list[str] | None) -> list[str] | None:
    unknown = [key for key in keys or () if key not in KEYS]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; sections: {', '.join(KEYS)}")
    return keys


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
    section: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Run only this section (repeatable; with what it needs): {', '.join(KEYS)}. "
            "Default: all.",
            callback=_known_sections,
        ),
    ] = None,
) -> None:
    """Generate TPC-H data, publish it as a mesh, measure, and write report.md + results.json + charts."""
    report = run(scale=scale, out=out, quick=quick, repetitions=repetitions, sections=section)
    typer.echo(str(report))


if __name__ == "__main__":
    app()
