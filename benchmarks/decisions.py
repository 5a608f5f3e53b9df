"""Casbin decision time at a given policy size, measured in a child process (R7).

Each size runs here, in its own process under a wall-clock limit (a policy version that
regresses to minutes of loading fails its size, not the run), and the harness reads one
JSON object from stdout:

- ``build_s``: seconds to build the Governor (rule index, Casbin role links, row filters);
- ``uncached_ms``: ``governor.access(subject, "orders.lineitem")`` for a fresh user each
  time (a principal holding the analyst's role whom this Governor has never seen: nothing
  cached);
- ``cached_us``: the same call repeated for one user (the per-policy-version cache).

Run: ``python -m benchmarks.decisions --mesh DIR --lines N --samples K --budget S``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PRODUCT = "orders.lineitem"


def measure(mesh_dir: Path, lines: int, samples: int, budget: float) -> dict:
    from benchmarks.policy_scale import policy_files
    from benchmarks.settings import ANALYST_USER
    from gateway.catalog.state import MeshState
    from gateway.config import load_config
    from policies.engine import Governor, Subject

    config = load_config(mesh_dir)
    state = MeshState(mesh_dir, config)
    shapes = state.current.catalog.shapes
    files, total = policy_files(lines, shapes)
    started = time.perf_counter()
    governor = Governor(files, shapes, config.governance.hash_key)
    build_s = time.perf_counter() - started

    # Warm-up: the first decision of a Governor pays one-off costs (lazy role links).
    warm = governor.access(Subject("probe_0", (ANALYST_USER,)), PRODUCT)
    uncached: list[float] = []
    deadline = time.perf_counter() + budget
    for i in range(1, samples + 1):
        subject = Subject(f"probe_{i}", (ANALYST_USER,))
        t0 = time.perf_counter()
        governor.access(subject, PRODUCT)
        uncached.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() > deadline:
            break
    subject = Subject("probe_0", (ANALYST_USER,))
    repeats = 10_000
    t0 = time.perf_counter()
    for _ in range(repeats):
        governor.access(subject, PRODUCT)
    cached_us = (time.perf_counter() - t0) / repeats * 1e6
    return {
        "lines": total,
        "build_s": build_s,
        "uncached_ms": uncached,
        "samples_requested": samples,
        "cached_us": cached_us,
        "allowed": warm.allowed,
        "row_filter": warm.row_filter is not None,
        "masked_columns": [c.name for c in warm.visible_columns if c.mask],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mesh", type=Path, required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = measure(args.mesh, args.lines, args.samples, args.budget)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
