"""The fairness section (``meshgate bench --section fairness``) at a tiny scale: each
configuration's gateway starts with its settings, the heavy user's queries run beside the
light user's lookups without errors, and the results and the report carry every figure.
No timing asserted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("psutil")

from benchmarks.cli import run_config
from benchmarks.data import find_executable
from benchmarks.fairness import SECTION_CONFIGURATIONS
from benchmarks.settings import HEAVY_USER, BenchConfig
from gateway.config import load_config

#: TPC-H generated, then a gateway per configuration under load
pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]


@pytest.mark.skipif(find_executable("tpchgen-cli") is None, reason="tpchgen-cli is not installed")
def test_fairness_section_measures_each_configuration(tmp_path: Path) -> None:
    config = BenchConfig.make(
        quick=True,
        out=tmp_path / "bench",
        sections=("fairness",),
        fairness_heavy_clients=2,
        fairness_lookups=5,
        fairness_seconds=1.0,
    )
    report = run_config(config)

    results = json.loads((config.out_dir / "results.json").read_text())
    fairness = results["sections"]["fairness"]
    assert "error" not in fairness, fairness.get("traceback")
    assert tuple(fairness["configurations"]) == SECTION_CONFIGURATIONS
    for name, entry in fairness["configurations"].items():
        assert entry["unloaded"]["n"] == 10 and entry["loaded"]["n"] > 0, name
        for window in ("unloaded", "loaded"):
            assert entry[window]["p50_ms"] > 0 and entry[window]["p95_ms"] > 0, (name, window)
        assert entry["p95_ratio"] > 0 and entry["p50_ratio"] > 0
        heavy = entry["heavy"]
        assert heavy["clients"] == 2 and heavy["finished"] > 0, (name, heavy)
        assert heavy["errors"] == 0 and entry["lookup_errors"] == 0, (name, heavy, entry)
    # the grouped configurations ran on gateways of their own, with their settings
    grouped = load_config(config.out_dir / "mesh-fairness-heavy_group_1_threads_1")
    assert grouped.workload.groups[HEAVY_USER].max_running == 1
    assert grouped.engine.threads == 1
    started = {p["name"]: p["returncode"] for p in results["processes"]}
    assert {f"gateway-fairness-{name}" for name in SECTION_CONFIGURATIONS[1:]} <= set(started)
    assert all(code is not None for code in started.values()), started

    judged = [t for t in results["targets"] if t["section"] == "fairness"]
    assert [t["id"] for t in judged] == ["W1", "W1"]
    assert all(t["met"] is not None for t in judged), judged
    text = report.read_text()
    assert re.search(r"^## \d+\. Fairness", text, re.MULTILINE), "no Fairness heading"
    assert all(f"| {name} |" in text for name in SECTION_CONFIGURATIONS)
