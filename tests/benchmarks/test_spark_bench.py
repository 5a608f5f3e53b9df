"""The Spark benchmark section (``python -m benchmarks.spark``) at a tiny scale: a real
standalone Spark cluster (a master and two workers on 127.0.0.1) runs the cross-domain
TPC-H queries through the gateway with the same rows as DuckDB. No timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.data import find_executable
from benchmarks.spark import run

#: a Spark cluster started and 17 queries run twice: minutes on a loaded 2-core machine
pytestmark = [pytest.mark.bench, pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.skipif(find_executable("tpchgen-cli") is None, reason="tpchgen-cli is not installed")
def test_spark_section_runs_cross_domain_tpch_on_a_cluster(tmp_path: Path) -> None:
    summary = run(scale=0.01, repetitions=1, out=tmp_path, log=lambda _: None)
    numbers = [q["query"] for q in summary["cross_domain_queries"]]
    assert len(numbers) == 17 and 1 not in numbers and 6 not in numbers
    assert summary["all_identical"] is True, summary["cross_domain_queries"]
    assert all(
        q["spark_seconds"] > 0 and q["duckdb_seconds"] > 0 for q in summary["cross_domain_queries"]
    )
    big = summary["big_join"]
    assert big["spark"]["outcome"] == "ok, 20 rows"
    assert json.loads((tmp_path / "spark.json").read_text())["scale"] == 0.01
    assert "| q19 |" in (tmp_path / "spark.md").read_text()
