"""The barrier benchmark (``python -m benchmarks.barrier``) at a tiny scale: the four
planning variants give the same TPC-H results, and the queries that need a barrier are
the ones whose predicates are not all leakproof. No timing asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.barrier import run
from benchmarks.data import find_executable

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]  # TPC-H generated and run four ways


@pytest.mark.skipif(find_executable("tpchgen-cli") is None, reason="tpchgen-cli is not installed")
def test_barrier_variants_agree_on_tpch(tmp_path: Path) -> None:
    summary = run(scale=0.01, repetitions=1, out=tmp_path)
    assert summary["all_identical"] is True
    # scalar subqueries compared with a column, HAVING on aggregates: not leakproof, and
    # these read the analyst's one row-filtered product, lineitem (q2, q11 and q22 have such
    # predicates too but read no row-filtered product: nothing to guard)
    assert summary["queries_behind_barrier"] == ["15", "17", "18", "20"]
    assert (tmp_path / "barrier.json").exists()
