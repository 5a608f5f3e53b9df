"""The one registry of a run's sections: what runs, in which order, under which heading,
with which chart, and what it is judged on.

The CLI runs :data:`SECTIONS` (or the ones picked, with what they need), the report writes
one heading per section from its title (numbered by its place here) and the judge reads the
targets declared beside each section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks import charts, fairness, markdown, result_cache, small_products, suites
from benchmarks import mesh as mesh_section
from benchmarks.settings import BenchConfig
from benchmarks.targets import Target
from benchmarks.tpch import QUERY_NUMBERS


@dataclass(frozen=True)
class Section:
    """One measured section of a run."""

    key: str
    title: str
    runner: Callable[[suites.Context], dict]
    #: Progress steps the runner advances for this configuration.
    steps: Callable[[BenchConfig], int]
    #: Markdown under the heading, from the section's results and the run's configuration.
    body: Callable[[dict, dict], list[str]]
    targets: tuple[Target, ...] = ()
    #: File stem of the chart and the function drawing it (None: no chart).
    chart: tuple[str, Callable[[dict], Any]] | None = None
    #: Sections whose results this one reads (run first when this one is picked).
    needs: tuple[str, ...] = ()


def _small_query_targets(query: str) -> tuple[Target, ...]:
    return (
        Target(
            "R1",
            "small_queries",
            f"queries.{query}.flight_one_call_ratio",
            "<=",
            1.5,
            f"{query} p50 via pyarrow.flight (one DoGet) / DuckDB in-process",
            "x",
        ),
        Target(
            "R1",
            "small_queries",
            f"queries.{query}.flight_one_call_overhead_ms",
            "<=",
            0.9,
            f"{query} p50 via pyarrow.flight (one DoGet) minus DuckDB in-process",
            " ms",
        ),
        Target(
            "R1",
            "small_queries",
            f"queries.{query}.adbc_ratio",
            "<=",
            1.8,
            f"{query} p50 via ADBC (cursor reused) / DuckDB in-process",
            "x",
        ),
        Target(
            "S1",
            "small_queries",
            f"queries.{query}.adbc_vs_bare_sql",
            "<=",
            1.10,
            f"{query} via ADBC (cursor reused) / the bare Flight SQL floor (paired)",
            "x",
        ),
        Target(
            "S1",
            "small_queries",
            f"queries.{query}.adbc_new_statement_vs_bare_sql",
            "<=",
            1.10,
            f"{query} via ADBC (one-off statement) / the bare Flight SQL floor (paired)",
            "x",
        ),
    )


SECTIONS: tuple[Section, ...] = (
    Section(
        "small_queries",
        "Small-query latency (ms per round trip)",
        suites.small_queries,
        lambda config: 2,
        markdown.small_queries,
        _small_query_targets("select_1") + _small_query_targets("point_lookup"),
        ("small_queries", charts.small_queries),
    ),
    Section(
        "tpch",
        "TPC-H (ms; gateway through ADBC)",
        suites.tpch,
        lambda config: len(QUERY_NUMBERS),
        markdown.tpch,
        (
            Target(
                "R3", "tpch", "geomean_ratio", "<=", 1.05, "geomean gateway / DuckDB (paired)", "x"
            ),
            Target(
                "R3", "tpch", "max_ratio", "<=", 1.2, "worst query gateway / DuckDB (paired)", "x"
            ),
            Target("R3", "tpch", "failed", "==", [], "TPC-H queries that failed"),
            Target(
                "R4",
                "tpch",
                "sum_ratio_policy",
                "<=",
                1.05,
                "policy set: sum of 22 gateway / hand-written filters and masks",
                "x",
            ),
            Target(
                "R4",
                "tpch",
                "max_ratio_policy",
                "<=",
                1.10,
                "policy set: worst query gateway / hand-written (paired)",
                "x",
            ),
            Target("R4", "tpch", "all_identical", "==", True, "results identical to DuckDB's"),
        ),
        ("tpch_ratios", charts.tpch),
    ),
    Section(
        "large_result",
        "Large result: `SELECT * FROM orders.lineitem`",
        suites.large_result,
        lambda config: config.repetitions,
        markdown.large_result,
        (
            Target(
                "R2",
                "large_result",
                "flight.vs_bare_duckdb",
                ">=",
                0.95,
                "pyarrow.flight MB/s / a bare Flight server streaming the DuckDB reader",
                "x",
            ),
            Target(
                "R2",
                "large_result",
                "flight.vs_memory",
                ">=",
                0.5,
                "pyarrow.flight MB/s / a bare Flight server's in-memory table (ceiling)",
                "x",
            ),
        ),
        ("large_result", charts.large_result),
    ),
    Section(
        "planning",
        "Planning cost and authorization scale",
        suites.planning,
        lambda config: len(QUERY_NUMBERS) + len(config.policy_sizes),
        markdown.planning,
        (
            Target(
                "R5",
                "planning",
                "policy.pct_of_execution_median",
                "<=",
                2.0,
                "parse+authorize+rewrite+generate / execution, median query (policy user)",
                "%",
            ),
            Target(
                "R5",
                "planning",
                "policy.pct_of_execution_max",
                "<=",
                5.0,
                "parse+authorize+rewrite+generate / execution, worst query (policy user)",
                "%",
            ),
            Target("R5", "planning", "optimize_calls", "==", 0, "sqlglot optimize() calls"),
            Target(
                "R5", "planning", "optimize_in_source", "==", [], "optimize() calls in the source"
            ),
            Target(
                "R7",
                "planning",
                "decisions.largest_vs_smallest_uncached",
                "<=",
                1.5,
                "uncached decision with the largest policy / with the smallest (100,000 vs 10 lines)",
                "x",
            ),
        ),
        needs=("tpch",),  # planning time is judged as a share of section 2's execution time
    ),
    Section(
        "concurrency",
        "Concurrency (mixed workload, one ADBC connection per client thread)",
        suites.concurrency,
        lambda config: len(config.concurrency_levels),
        markdown.concurrency,
        (
            Target(
                "R6",
                "concurrency",
                "relative_scaling",
                ">=",
                0.85,
                "QPS(8)/QPS(1) of the gateway / of DuckDB",
                "x",
            ),
            Target("R6", "concurrency", "errors_at_max", "==", 0, "errors at 16 clients"),
            Target(
                "R6",
                "concurrency",
                "rss_growth_at_max",
                "<=",
                1.10,
                "gateway RSS, last / first third of the 16-client level",
                "x",
            ),
        ),
        ("concurrency", charts.concurrency),
    ),
    Section(
        "peer",
        "Peer: ROAPI Flight SQL (same ADBC client)",
        suites.peer,
        lambda config: 2 + len(QUERY_NUMBERS),
        markdown.peer,
        (
            Target(
                "R8",
                "peer",
                "tpch.geomean_roapi_vs_gateway",
                ">=",
                3.0,
                "TPC-H geomean ROAPI time / gateway time",
                "x",
            ),
            Target(
                "R8",
                "peer",
                "small.select_1.roapi_vs_gateway",
                ">",
                1.0,
                "select_1 ROAPI time / gateway time",
                "x",
            ),
            Target(
                "R8",
                "peer",
                "small.point_lookup.roapi_vs_gateway",
                ">",
                1.0,
                "point_lookup ROAPI time / gateway time",
                "x",
            ),
        ),
        ("peer_tpch", charts.peer),
    ),
    Section(
        "small_products",
        "Small products: cold and accelerated against ROAPI (same Parquet, same ADBC client)",
        small_products.section,
        small_products.steps,
        small_products.markdown,
        tuple(
            Target(
                "A2",
                "small_products",
                f"workloads.{name}.accelerated_vs_roapi",
                "<",
                1.0,
                f"{name} on crm.customers: gateway accelerated / ROAPI (median time)",
                "x",
            )
            for name in small_products.WORKLOADS
            if name != "select_1"
        ),
    ),
    Section(
        "mesh",
        "Mesh mode: domain nodes and mesh-mode gateways",
        mesh_section.mesh,
        mesh_section.steps,
        markdown.mesh,
        (
            Target(
                "M1",
                "mesh",
                "tpch.geomean_pushdown_vs_embedded",
                "<=",
                1.5,
                "cross-domain TPC-H: mesh gateway / embedded (geomean)",
                "x",
            ),
            Target(
                "M1",
                "mesh",
                "tpch.max_pushdown_vs_embedded",
                "<=",
                3.0,
                "cross-domain TPC-H: worst query mesh gateway / embedded",
                "x",
            ),
            Target("M1", "mesh", "tpch.all_identical", "==", True, "mesh results identical"),
        ),
        chart=("mesh", charts.mesh),
    ),
    Section(
        "fairness",
        "Fairness: one user's point lookups beside another's heavy queries",
        fairness.section,
        fairness.steps,
        markdown.fairness,
        tuple(
            Target(
                "W1",
                "fairness",
                f"configurations.{name}.p95_ratio",
                "<=",
                fairness.MAX_P95_RATIO,
                f"lookup p95 while another user runs 8 TPC-H queries / unloaded ({why})",
                "x",
            )
            for name, why in (
                ("default", "default settings"),
                (
                    "heavy_group_1_threads_1",
                    "heavy user's group runs 1 at a time, [engine] threads = 1",
                ),
            )
        ),
    ),
    Section(
        "result_cache",
        "TPC-H repeated: the governed result cache against DuckDB re-executing",
        result_cache.section,
        result_cache.steps,
        result_cache.markdown,
        (
            Target(
                "C3",
                "result_cache",
                "min_speedup",
                ">=",
                result_cache.MIN_SPEEDUP,
                "worst of 22: DuckDB in-process re-executing / gateway answering from its cache "
                "(ADBC, one-off statements)",
                "x",
            ),
            Target(
                "C3",
                "result_cache",
                "min_speedup_flight",
                ">=",
                result_cache.MIN_SPEEDUP,
                "worst of 22: DuckDB in-process re-executing / gateway answering from its cache "
                "(pyarrow.flight, GetFlightInfo + DoGet)",
                "x",
            ),
            Target("C3", "result_cache", "all_identical", "==", True, "cached results identical"),
            Target("C3", "result_cache", "all_hits", "==", True, "repetitions were cache hits"),
        ),
    ),
)

KEYS: tuple[str, ...] = tuple(section.key for section in SECTIONS)


def number(key: str) -> int:
    """The section's number in the report (its place in the registry, from 1)."""
    return KEYS.index(key) + 1


def all_targets() -> tuple[Target, ...]:
    return tuple(target for section in SECTIONS for target in section.targets)


def pick(keys: Iterable[str] | None = None) -> tuple[Section, ...]:
    """The sections to run, in registry order: ``keys`` and what they need (None: all)."""
    if keys is None:
        return SECTIONS
    wanted = set(keys)
    unknown = wanted - set(KEYS)
    if unknown:
        raise ValueError(
            f"unknown section(s) {', '.join(sorted(unknown))}; sections: {', '.join(KEYS)}"
        )
    pending = list(wanted)
    while pending:
        for need in _by_key(pending.pop()).needs:
            if need not in wanted:
                wanted.add(need)
                pending.append(need)
    return tuple(section for section in SECTIONS if section.key in wanted)


def _by_key(key: str) -> Section:
    return SECTIONS[KEYS.index(key)]
