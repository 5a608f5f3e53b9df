"""What the security barrier costs: the 22 TPC-H queries planned for the analyst (the
benchmark's policy set), run on the gateway's own engine in process, interleaved, as

- ``gateway``: the governed SQL the gateway runs (a barrier only where a predicate is not
  leakproof, with the leakproof conjuncts below it);
- ``always``: every row-filtered secure subquery behind a barrier, leakproof conjuncts
  below it (what a statement with one non-leakproof predicate gets; a product without a
  row filter hides no row and never needs one);
- ``no_pushdown``: every row-filtered secure subquery behind a barrier, nothing below it;
- ``unsafe``: no barrier at all (what the gateway ran before: DuckDB may evaluate user
  predicates on rows the row filter removes).

``python -m benchmarks.barrier [--scale SF] [--repetitions N] [--out DIR]`` prints the
median of each variant per query and the geometric means of the ratios to ``unsafe``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median

from benchmarks.measure import geomean
from benchmarks.settings import ANALYST_USER, BenchConfig
from benchmarks.tpch import QUERY_NUMBERS, qualified


@contextlib.contextmanager
def _planning_variant(name: str) -> Iterator[None]:
    """Plan as ``name`` says, by swapping the barrier's two entry points for the duration."""
    from gateway.planning import barrier, secure

    saved = secure.needs_barrier, secure.leakproof_conjuncts
    if name in ("always", "no_pushdown"):
        secure.needs_barrier = lambda *args: True
    if name == "no_pushdown":
        secure.leakproof_conjuncts = lambda *args: ([], [])
    if name == "unsafe":
        secure.needs_barrier = lambda *args: False
    try:
        yield
    finally:
        secure.needs_barrier, secure.leakproof_conjuncts = saved
        assert barrier.needs_barrier is secure.needs_barrier


def run(scale: float, repetitions: int, out: Path) -> dict:
    from benchmarks.data import write_mesh
    from gateway.catalog.state import MeshState
    from gateway.config import load_config
    from gateway.planning.planner import plan
    from gateway.planning.query import PlanContext
    from gateway.security.auth import UserDirectory

    config = BenchConfig.make(scale=scale, out=out)
    mesh = write_mesh(config, log=lambda line: None)
    mesh_config = load_config(mesh.mesh_dir)
    state = MeshState(mesh.mesh_dir, mesh_config)
    snapshot = state.current
    principal = UserDirectory(mesh_config.users).principal(ANALYST_USER)
    context = PlanContext(
        principal, snapshot.catalog, snapshot.governor, hash_key=mesh_config.governance.hash_key
    )
    engine = snapshot.catalog.engine
    variants = ("gateway", "always", "no_pushdown", "unsafe")
    results: dict = {}
    for number in QUERY_NUMBERS:
        sqls = {}
        for name in variants:
            with _planning_variant(name):
                sqls[name] = plan(qualified(number, scale), context).sql
        timings: dict[str, list[float]] = {name: [] for name in variants}
        rows = {}
        with engine.cursor() as cursor:
            for name in variants:  # warm-up, and the results compared
                rows[name] = _rounded(cursor.sql(sqls[name]).fetchall())
            for _ in range(repetitions):
                for name in variants:
                    started = time.perf_counter()
                    cursor.sql(sqls[name]).to_arrow_table()
                    timings[name].append((time.perf_counter() - started) * 1000)
        results[str(number)] = {
            "identical": all(rows[name] == rows["unsafe"] for name in variants),
            "barrier": "OFFSET 0" in sqls["gateway"],
            **{name: median(values) for name, values in timings.items()},
        }
        print(
            f"q{number:>2}: "
            + "  ".join(f"{n} {results[str(number)][n]:8.1f} ms" for n in variants)
            + ("" if results[str(number)]["identical"] else "  RESULTS DIFFER"),
            flush=True,
        )
    summary = {
        **{
            f"geomean_{name}_vs_unsafe": geomean(r[name] / r["unsafe"] for r in results.values())
            for name in variants[:-1]
        },
        "max_gateway_vs_unsafe": max(r["gateway"] / r["unsafe"] for r in results.values()),
        "queries_behind_barrier": [n for n, r in results.items() if r["barrier"]],
        "all_identical": all(r["identical"] for r in results.values()),
    }
    print(json.dumps(summary, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    (out / "barrier.json").write_text(json.dumps({"queries": results, **summary}, indent=2))
    return summary


def _rounded(rows: list[tuple]) -> list[str]:
    """Rows as comparable text, floats to 9 significant digits (summation order varies)."""
    return sorted(
        repr(tuple(f"{v:.9g}" if isinstance(v, float) else v for v in row)) for row in rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    arguments = parser.parse_args()
    run(arguments.scale, arguments.repetitions, arguments.out)


if __name__ == "__main__":
    main()
