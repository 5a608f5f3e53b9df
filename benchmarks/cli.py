"""Entry point of a benchmark run: ``run(scale, out, quick, repetitions, sections)``.

``python -m benchmarks`` and ``meshgate bench`` both call :func:`run`. One run generates
(or reuses) the TPC-H data, writes the benchmark mesh, starts the gateway exactly as the
tests do (``python -m gateway.cli serve MESH --port P``), measures the sections of
``benchmarks/sections.py`` (all, or the ones picked; the mesh section starts its own domain
nodes and mesh-mode gateways), stops every process it started, and writes ``report.md``,
``results.json`` and the charts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from duckdb import DuckDBPyConnection
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from benchmarks import suites
from benchmarks.data import open_baseline, write_mesh
from benchmarks.procs import LoadSampler, Processes, RssSampler
from benchmarks.report import machine_info, write_outputs
from benchmarks.sections import SECTIONS, pick
from benchmarks.settings import ADMIN_USER, BenchConfig

DEFAULT_OUT = Path("bench-out")


def run(
    scale: float | None = None,
    out: Path = DEFAULT_OUT,
    quick: bool = False,
    repetitions: int | None = None,
    sections: Sequence[str] | None = None,
) -> Path:
    """Run the benchmark; return the path of ``report.md``.

    ``scale`` None: SF1 (quick: SF0.01). ``repetitions`` None: 5 (quick: 1). ``sections``
    None: every section, else these keys of ``benchmarks/sections.py`` and what they need.
    """
    _quiet_library_logs()
    picked = tuple(sections) if sections else None
    return run_config(
        BenchConfig.make(
            scale=scale, out=out, quick=quick, repetitions=repetitions, sections=picked
        )
    )


def _quiet_library_logs() -> None:
    """The planning section loads the mesh in-process: keep the gateway's info lines
    (policy loaded, ...) out of the progress display."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _gateway_batch_rows(plain: DuckDBPyConnection, mesh_dir: Path) -> int:
    """The gateway's batch row count for lineitem (the bare servers use the same)."""
    try:
        from gateway.config import load_config
        from gateway.engine.streaming import rows_per_batch

        settings = load_config(mesh_dir).engine
        schema = plain.sql(suites.LARGE_QUERY).limit(0).to_arrow_table().schema
        return rows_per_batch(schema, settings.batch_rows, settings.batch_bytes)
    except Exception:  # noqa: BLE001 - the gateway's internals moved: a safe size under ADBC's 16 MiB
        return 32_768


class _Bars:
    """Two progress bars: the whole run (with the time left, rich's estimate from the
    recent pace of its steps) and the section running, named with what it measures now (``tpch: q7``)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self.run = progress.add_task("data", total=total)
        self._section = progress.add_task("", total=1, visible=False)
        self._name = ""

    def status(self, description: str) -> None:
        self._progress.update(self.run, description=description)

    def section(self, name: str, steps: int) -> None:
        self._name = name
        self._progress.update(self.run, description="all sections")
        self._progress.reset(self._section, total=steps, description=f"  {name}", visible=True)

    def working_on(self, what: str) -> None:
        self._progress.update(self._section, description=f"  {self._name}: {what}")

    def advance(self, amount: float) -> None:
        self._progress.advance(self.run, amount)
        self._progress.advance(self._section, amount)


def run_config(config: BenchConfig, console: Console | None = None) -> Path:
    """Run with every knob of ``config``; return the path of ``report.md``."""
    console = console or Console(stderr=True)
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    picked = pick(config.sections)
    sections: dict = {}
    peak_rss = None
    machine_load: dict = {}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=2,
    ) as progress:
        log = progress.console.print
        bars = _Bars(progress, total=sum(s.steps(config) for s in picked))

        mesh = write_mesh(config, log)
        procs = Processes(config.logs_dir)
        plain = governed = None
        try:
            bars.status("starting the gateway")
            gateway = procs.start_gateway(mesh.mesh_dir, ADMIN_USER, ADMIN_USER)
            log(f"gateway on {gateway.uri} (pid {gateway.process.pid}), mesh {mesh.mesh_dir}")
            plain = open_baseline(mesh, config.engine_threads, config.engine_memory_limit)
            governed = open_baseline(
                mesh, config.engine_threads, config.engine_memory_limit, governed=True
            )
            batch_rows = _gateway_batch_rows(plain, mesh.mesh_dir)
            bare = procs.start_bare(
                "bare-duckdb",
                mesh.mesh_dir,
                "duckdb",
                batch_rows,
                config.engine_threads,
                config.engine_memory_limit,
            )
            bare_sql = procs.start_bare(
                "bare-flightsql",
                mesh.mesh_dir,
                "flightsql",
                batch_rows,
                config.engine_threads,
                config.engine_memory_limit,
            )
            bare_sql_submit = procs.start_bare(
                "bare-flightsql-submit",
                mesh.mesh_dir,
                "flightsql",
                batch_rows,
                config.engine_threads,
                config.engine_memory_limit,
                submit=True,
            )
            with RssSampler(gateway) as sampler, LoadSampler() as load:
                context = suites.Context(
                    config=config,
                    mesh=mesh,
                    procs=procs,
                    gateway=gateway,
                    sampler=sampler,
                    plain=plain,
                    governed=governed,
                    batch_rows=batch_rows,
                    log=log,
                    advance=bars.advance,
                    working_on=bars.working_on,
                    results=sections,
                    bare=bare,
                    bare_sql=bare_sql,
                    bare_sql_submit=bare_sql_submit,
                )
                for section in SECTIONS:
                    name = section.key
                    if section not in picked:
                        sections[name] = {"skipped": "not picked for this run"}
                        continue
                    bars.section(name.replace("_", " "), section.steps(config))
                    load.phase = name
                    section_started = time.perf_counter()
                    sections[name] = suites.safe_section(context, name, section.runner)
                    sections[name]["section_seconds"] = time.perf_counter() - section_started
                peak_rss = sampler.peak() / 1e6
            machine_load = load.summary()
        finally:
            procs.stop_all()
            for con in (plain, governed):
                if con is not None:
                    con.close()
        bars.status("report")
    results = {
        "started": started_at,
        "duration_s": time.perf_counter() - started,
        "config": config.as_json(),
        "machine": machine_info(),
        "machine_load": machine_load,
        "gateway_peak_rss_mb": peak_rss,
        "processes": procs.report(),
        "sections": sections,
    }
    report = write_outputs(results, out)
    console.print(f"report: {report}")
    return report
