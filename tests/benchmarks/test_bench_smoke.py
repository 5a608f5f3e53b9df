"""Smoke test of the benchmark harness: the quick mode end to end, no timing asserted.

SF0.01, one repetition, a shortened concurrency section and small policy sizes; checks
that the report, the JSON (with every section and every target) and the charts exist.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

# The harness needs tools that are not test dependencies of the gateway: skip without them.
pytest.importorskip("psutil")
pytest.importorskip("matplotlib")

from benchmarks.cli import run_config
from benchmarks.data import find_executable
from benchmarks.report import SECTIONS
from benchmarks.settings import BenchConfig


@pytest.mark.skipif(find_executable("tpchgen-cli") is None, reason="tpchgen-cli is not installed")
def test_quick_benchmark_writes_report_json_and_charts(tmp_path: Path) -> None:
    config = BenchConfig.make(
        quick=True, out=tmp_path / "bench",
        concurrency_seconds=0.5, concurrency_levels=(1, 2, 4, 8, 16),
        policy_sizes=(10, 100, 1_000), decision_samples=2,
        small_query_calls=5, planning_calls=5,
    )
    started = time.monotonic()
    report = run_config(config)
    elapsed = time.monotonic() - started

    out = config.out_dir
    assert report == out / "report.md" and report.is_file()
    results = json.loads((out / "results.json").read_text())
    sections = results["sections"]
    for name in SECTIONS:
        assert isinstance(sections.get(name), dict), f"section {name} missing"
        assert "error" not in sections[name], f"section {name} failed: {sections[name].get('error')}"
    assert len(sections["tpch"]["queries"]) == 22
    assert not sections["tpch"]["failed"]
    assert sections["tpch"]["all_identical"], sections["tpch"]["not_identical"]
    assert set(sections["concurrency"]["levels"]) == {"1", "2", "4", "8", "16"}
    assert set(sections["planning"]["decisions"]) >= {"10", "100", "1000"}
    assert [t["id"] for t in results["targets"]] == [f"R{i}" for i in range(1, 9)]
    assert results["machine"]["cpu_model"] and results["machine"]["packages"]["duckdb"]
    for chart in ("tpch_ratios", "concurrency", "small_queries", "large_result"):
        assert (out / results["charts"][chart]).stat().st_size > 0
    text = report.read_text()
    assert "## Targets" in text and "R8" in text
    # Every server the run started (gateway, bare Flight servers, ROAPI) was stopped.
    started = {p["name"] for p in results["processes"]}
    assert {"gateway", "bare-duckdb", "bare-memory"} <= started
    assert all(p["returncode"] is not None for p in results["processes"]), results["processes"]
    print(f"quick benchmark took {elapsed:.1f} s")  # informative only: no timing is asserted
