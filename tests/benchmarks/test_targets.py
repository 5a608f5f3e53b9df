"""The section registry and the target judge, on made-up results (no benchmark is run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("psutil")
pytest.importorskip("matplotlib")

from benchmarks.measure import interleaved, paired_ratio, summary
from benchmarks.report import render_markdown, write_outputs
from benchmarks.sections import KEYS, SECTIONS, all_targets, number, pick
from benchmarks.settings import BenchConfig
from benchmarks.targets import OPS, Target, judge, requirement_status

RATIO = Target("R9", "alpha", "ratio", "<=", 1.5, "alpha ratio", "x")
ROWS = Target("R9", "alpha", "nested.rows", "==", 3, "alpha rows")
FAILED = Target("R10", "beta", "failed", "==", [], "beta failures")


def test_a_target_within_its_bound_is_met_and_one_beyond_it_is_missed() -> None:
    results = {"alpha": {"ratio": 1.2, "nested": {"rows": 4}}, "beta": {"failed": ["q6"]}}
    met, rows, failed = judge(results, [RATIO, ROWS, FAILED])
    assert (met.value, met.met, met.measured()) == (1.2, True, "1.2x")
    assert (rows.value, rows.met) == (4, False)
    assert (failed.value, failed.met, failed.measured()) == (["q6"], False, "q6")
    assert requirement_status([met, rows, failed]) == {"R9": False, "R10": False}


def test_missing_skipped_and_failed_sections() -> None:
    results = {"alpha": {"skipped": "roapi not found"}, "beta": {"error": "boom"}}
    skipped, failed, absent = judge(
        results, [RATIO, FAILED, Target("R11", "gamma", "x", ">", 0, "gamma")]
    )
    assert (skipped.met, skipped.note) == (None, "roapi not found")
    assert (failed.met, failed.note) == (False, "failed: boom")
    assert (absent.met, absent.measured()) == (None, "n/a")
    # An error inside the section, on the metric's path, fails the target too.
    (nested,) = judge({"alpha": {"nested": {"error": "timed out"}}}, [ROWS])
    assert nested.met is False and "timed out" in nested.note
    status = requirement_status([skipped, failed, absent])
    assert status == {"R9": None, "R10": False, "R11": None}


def test_a_target_with_an_unknown_comparison_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown comparison"):
        Target("R1", "tpch", "geomean_ratio", "~", 1.0, "typo")


def test_the_registry_declares_each_section_once_and_targets_only_its_own() -> None:
    assert len(set(KEYS)) == len(KEYS) == len(SECTIONS)
    assert KEYS[:2] == ("small_queries", "tpch")  # "sections 1 and 2" in the report
    assert number("tpch") == 2
    for section in SECTIONS:
        assert set(section.needs) <= set(KEYS)
        for target in section.targets:
            assert target.section == section.key and target.op in OPS
    # issue 17's goals by item (S1: small queries at the bare floor, A2: accelerated
    # products, C3: result cache, M1: cross-domain joins in mesh mode)
    issue_17 = {"S1", "A2", "C3", "M1"}
    assert {t.id for t in all_targets()} == {f"R{i}" for i in range(1, 9)} | {"W1"} | issue_17


def test_picking_sections_keeps_registry_order_and_adds_what_they_need() -> None:
    assert pick(None) == SECTIONS
    assert [s.key for s in pick(["tpch", "small_queries"])] == ["small_queries", "tpch"]
    assert [s.key for s in pick(["planning"])] == ["tpch", "planning"]
    with pytest.raises(ValueError, match="unknown section"):
        pick(["tpch", "nope"])


def _results(sections: dict) -> dict:
    return {
        "started": "2026-01-01T00:00:00+00:00",
        "duration_s": 1.0,
        "config": BenchConfig.make(quick=True).as_json(),
        "machine": {
            "cpu_model": "test",
            "logical_cores": 2,
            "ram_gb": 1.0,
            "os": "test",
            "python": "3.11",
            "packages": {},
            "tools": {},
            "git_commit": "0000000",
            "git_dirty": False,
        },
        "machine_load": {},
        "sections": sections,
    }


def test_the_report_shows_a_missed_target_as_missed(tmp_path: Path) -> None:
    select_1 = {
        "sql": "SELECT 1",
        "duckdb": summary([0.2]),
        "flight_one_call": summary([0.5]),
        "flight_one_call_ratio": 2.5,  # R1 wants <= 1.5x
        "flight_one_call_overhead_ms": 0.3,
        "adbc": summary([0.3]),
        "adbc_ratio": 1.5,
        "adbc_overhead_ms": 0.1,
    }
    sections = {
        "small_queries": {"calls_per_repetition": 1, "queries": {"select_1": select_1}},
        "tpch": {"error": "RuntimeError: the gateway died"},
        "peer": {"skipped": "roapi not found"},
    }
    report = write_outputs(_results(sections), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    by_metric = {(t["section"], t["metric"]): t for t in results["targets"]}
    missed = by_metric[("small_queries", "queries.select_1.flight_one_call_ratio")]
    assert (missed["value"], missed["met"]) == (2.5, False)
    assert by_metric[("small_queries", "queries.select_1.adbc_ratio")]["met"] is True
    assert by_metric[("tpch", "geomean_ratio")]["met"] is False
    assert by_metric[("peer", "tpch.geomean_roapi_vs_gateway")]["met"] is None
    assert results["requirements"]["R1"] is False and results["requirements"]["R8"] is None
    assert set(results["charts"]) == {"small_queries"}

    text = report.read_text()
    assert (
        "| R1 | 1 | select_1 p50 via pyarrow.flight (one DoGet) / DuckDB in-process "
        "| <= 1.5x | 2.5x | **missed** |"
    ) in text
    assert "| R1 | 1 | select_1 p50 via ADBC (cursor reused) / DuckDB in-process | <= 1.8x " in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[1 : 1 + len(SECTIONS)] == [f"## {number(s.key)}. {s.title}" for s in SECTIONS]
    assert "## 2. TPC-H (ms; gateway through ADBC)\n\nFailed: RuntimeError" in text
    assert "Not measured: roapi not found" in text
    assert render_markdown(results) == text  # the report can be rebuilt from results.json


def test_a_paired_ratio_is_the_median_of_adjacent_blocks() -> None:
    """A burst that slows one repetition's pair moves both of its blocks: the pair's ratio
    stays, where a ratio of medians taken apart would move."""
    gateway = [3.3, 3.3, 9.9, 3.3, 3.3]
    floor = [3.0, 3.0, 9.0, 3.0, 3.0]
    assert paired_ratio(gateway, floor) == pytest.approx(1.1)
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 1.0]) == 4.0
    assert paired_ratio([], []) is None
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_alternate_repetitions_run_in_reverse() -> None:
    ran: list[str] = []
    variants = {name: (lambda name=name: ran.append(name)) for name in "ABC"}
    interleaved(variants, 3, warmup=0, alternate=True)
    assert "".join(ran) == "ABCCBAABC"
