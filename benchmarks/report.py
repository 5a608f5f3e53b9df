"""results.json, report.md and the PNG charts of a run.

The document's sections, their headings, charts and targets all come from the registry in
``benchmarks/sections.py``; the targets are judged by ``benchmarks/targets.judge``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TypeGuard

from benchmarks.charts import pyplot
from benchmarks.procs import REPO
from benchmarks.sections import SECTIONS, Section, all_targets, number
from benchmarks.targets import judge, requirement_status

# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return ""


def machine_info() -> dict:
    import psutil

    from benchmarks.data import find_executable

    tools = {}
    for tool in ("tpchgen-cli", "roapi"):
        path = find_executable(tool)
        if path:
            try:
                tools[tool] = subprocess.run(
                    [path, "--version"], capture_output=True, text=True, timeout=30, check=False
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
                tools[tool] = "unknown"
        else:
            tools[tool] = "not found"
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {
            name: _package_version(name)
            for name in (
                "duckdb",
                "pyarrow",
                "sqlglot",
                "sqlglotc",
                "pycasbin",
                "adbc-driver-flightsql",
                "adbc-driver-manager",
                "psutil",
                "matplotlib",
            )
        },
        "tools": tools,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


# --------------------------------------------------------------------------- charts


def write_charts(sections: dict, out: Path) -> dict[str, str]:
    """The chart of every section that has one and ran; chart name -> file name."""
    written = {}
    for section in SECTIONS:
        result = sections.get(section.key)
        if section.chart is None or not _measured(result):
            continue
        name, draw = section.chart
        fig = draw(result)
        if fig is None:
            continue
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        pyplot().close(fig)
        written[name] = path.name
    return written


def _measured(result: object) -> TypeGuard[dict]:
    """The section ran to its end (no error, not skipped)."""
    return isinstance(result, dict) and "error" not in result and "skipped" not in result


# --------------------------------------------------------------------------- markdown


def _status(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def _id_order(item: tuple[str, object]) -> tuple[int, str]:
    return len(item[0]), item[0]  # R2 before R10


def _targets_lines(results: dict) -> list[str]:
    """The requirements met or not, then every target with its bound and measured value."""
    by_status: dict[bool | None, list[str]] = {True: [], False: [], None: []}
    for requirement, met in sorted(results.get("requirements", {}).items(), key=_id_order):
        by_status[met].append(requirement)
    summary = "; ".join(
        f"{label}: {', '.join(ids)}"
        for label, ids in (
            ("met", by_status[True]),
            ("missed", by_status[False]),
            ("not measured", by_status[None]),
        )
        if ids
    )
    lines = [
        "## Targets",
        "",
        f"Requirements {summary} (a requirement is met when all of its targets are).",
        "",
        "| | section | target | bound | measured | status |",
        "|---|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(
            f"| {t['id']} | {number(t['section'])} | {t['why']} | {t['check']} | {t['measured']} "
            f"| {_status(t['met'])} |"
        )
    return lines


def _section_lines(section: Section, result: object, config: dict) -> list[str]:
    """The section's numbered heading, then its body, or why it has none."""
    lines = ["", f"## {number(section.key)}. {section.title}", ""]
    if not isinstance(result, dict):
        return [*lines, "Not measured: not run."]
    if "error" in result:
        return [*lines, f"Failed: {result['error']}"]
    if "skipped" in result:
        return [*lines, f"Not measured: {result['skipped']}"]
    return lines + section.body(result, config)


def render_markdown(results: dict) -> str:
    """report.md from the results of a run (as written to results.json)."""
    config, machine, sections = results["config"], results["machine"], results["sections"]
    lines = [
        "# Meshgate benchmark report",
        "",
        (
            f"Run {results['started']} ({results['duration_s'] / 60:.1f} min): TPC-H SF{config['scale']:g}, "
            f"{config['repetitions']} repetition(s){' (quick mode)' if config['quick'] else ''}; "
            f"gateway commit {machine['git_commit']}{' (uncommitted changes)' if machine['git_dirty'] else ''}."
        ),
        "",
        "Machine: "
        f"{machine['cpu_model']}, {machine['logical_cores']} logical cores, {machine['ram_gb']} GiB RAM; "
        f"{machine['os']}; Python {machine['python']}, "
        + ", ".join(
            f"{k} {v}"
            for k, v in machine["packages"].items()
            if k
            in ("duckdb", "pyarrow", "sqlglot", "sqlglotc", "pycasbin", "adbc-driver-flightsql")
        )
        + "; "
        + ", ".join(f"{k}: {v}" for k, v in machine["tools"].items())
        + ".",
        "",
        _load_line(results.get("machine_load") or {}),
        "",
        (
            "Every figure: median (min-max) of the repetitions, each measured interleaved with its "
            "baseline (A B A B) after a warm-up, client and servers on the same machine. Gateway and "
            f"DuckDB baselines use the same engine settings (threads {config['engine_threads']}, memory "
            f"limit {config['engine_memory_limit']}) and the same views over the same files."
        ),
        "",
        *_targets_lines(results),
    ]
    for section in SECTIONS:
        lines += _section_lines(section, sections.get(section.key), config)
    lines += ["", "## Method notes", ""] + [f"- {note}" for note in _notes(config)]
    charts = results.get("charts", {})
    if charts:
        lines += ["", "## Charts", ""] + [f"![{key}]({name})" for key, name in charts.items()]
    errors = {
        name: s["error"] for name, s in sections.items() if isinstance(s, dict) and "error" in s
    }
    if errors:
        lines += ["", "## Sections that failed", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


def _notes(config: dict) -> list[str]:
    sizes = ", ".join(f"{s:,}" for s in config["policy_sizes"])
    return [
        (
            "Data: TPC-H Parquet from `tpchgen-cli`; domain `orders` (orders, lineitem) is one DuckDB file, "
            "`customers` (customer, nation, region) and `parts` (part, partsupp, supplier) are Parquet files, "
            "each published with an ODCS v3 contract whose physicalTypes come from DESCRIBE."
        ),
        (
            "The gateway runs as `python -m gateway.cli serve MESH --port P` (as the tests start it); the "
            "benchmark mesh raises the per-user concurrency and rate limits (64 queries, 10^8 per minute) so "
            "that admission control does not shape the throughput figures. Audit logging stays on."
        ),
        (
            "DuckDB baselines: an in-process DuckDB with the same `<domain>.<table>` views over the same files; "
            "the governed baseline writes the analyst's row filter and masks by hand in those views "
            "(sha256 keyed hash, '[REDACTED]'). Results are compared as sorted rows (floats to 1e-9)."
        ),
        (
            "Bare Flight servers (`benchmarks/bare_server.py`, subprocesses): DoGet streams "
            "`to_arrow_reader(batch_rows)` (or an in-memory table) from C++ via `RecordBatchStream`; "
            "GetFlightInfo binds the query for its schema. No auth, no Flight SQL. The bare Flight SQL server "
            "(`--mode flightsql`) answers only what an ADBC client calls (GetSqlInfo, CreatePreparedStatement, "
            "GetFlightInfo, DoGet, ClosePreparedStatement), its statement handle being the SQL and its result "
            "schemas computed once per statement: the ADBC floor of a Python Flight SQL server (no auth, "
            "governance or audit)."
        ),
        (
            f"Casbin decisions (policy sizes {sizes}) run in a child process per size (building a Governor over a "
            "large policy can take minutes); the generated lines add roles, product and column grants, masks, "
            "denies, filters and role links around the mesh's real rules."
        ),
        (
            "Concurrency: one ADBC connection per client thread (the DB-API cursor prepares a statement each "
            "time the text changes, so every statement of the mix is prepared); DuckDB: one cursor per thread "
            "on the shared in-process database. Gateway RSS (process and children) sampled every 0.1 s."
        ),
        (
            "ROAPI serves tpchgen's Parquet files with its defaults (tables loaded in memory at start-up) and the "
            "queries with bare table names; queries it cannot answer are listed with the reason."
        ),
        (
            "Mesh mode: copies of the benchmark mesh (data hard-linked) with a `[nodes]` section, domain nodes "
            "started as `python -m gateway.cli node MESH --domain D --port P`, one mesh-mode gateway per "
            "setting (split_endpoints, fragment_pushdown, orders replicas), all on this machine; bytes moved "
            "come from the gateways' `federated_query` log lines, tickets per replica from the nodes' `stats` action."
        ),
    ]


def _load_line(load: dict) -> str:
    """How busy the machine was with processes outside the run (a noise indicator)."""
    mean = load.get("overall_foreign_cores_mean")
    if mean is None:
        return "Machine load from other processes: not sampled."
    per_section = ", ".join(f"{k} {v:.2f}" for k, v in load.get("foreign_cores_mean", {}).items())
    warning = (
        " **The machine was shared during this run: treat the figures as noisy.**"
        if mean > 0.2
        else ""
    )
    return (
        f"CPU used by processes outside this run: {mean:.2f} of {load.get('cores')} cores on average "
        f"(per section: {per_section}).{warning}"
    )


def write_outputs(results: dict, out: Path) -> Path:
    """Charts, results.json and report.md in ``out``; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    verdicts = judge(results["sections"], all_targets())
    results["targets"] = [v.as_json() for v in verdicts]
    results["requirements"] = requirement_status(verdicts)
    try:
        results["charts"] = write_charts(results["sections"], out)
    except Exception as exc:  # noqa: BLE001 - a chart must never lose the measurements
        results["charts"] = {}
        results["chart_error"] = f"{type(exc).__name__}: {exc}"
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    report = out / "report.md"
    report.write_text(render_markdown(results), encoding="utf-8")
    return report
