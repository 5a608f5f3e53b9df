"""What one benchmark run does: scale, repetitions, durations, where it writes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Users of the benchmark mesh; each password equals the user name.
ADMIN_USER = "bench"
ANALYST_USER = "analyst"
#: The fairness section's two analysts: one keeps heavy queries running, the other runs
#: point lookups beside them.
HEAVY_USER = "heavy"
LIGHT_USER = "light"

#: The analyst's row filter on orders.lineitem (removes 1992's shipments, ~15 % of rows,
#: and leaves every TPC-H query meaningful: their date ranges are all later).
LINEITEM_FILTER = "l_shipdate >= DATE '1993-01-01'"

FULL_SCALE = 1.0
QUICK_SCALE = 0.01


@dataclass
class BenchConfig:
    """Every knob of a run. ``BenchConfig.make`` applies the quick-mode defaults."""

    scale: float = FULL_SCALE
    out: Path = Path("bench-out")
    quick: bool = False
    repetitions: int = 5
    #: Seconds each concurrency level runs per system (split into ``repetitions`` windows).
    concurrency_seconds: float = 10.0
    concurrency_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    #: Policy sizes for the Casbin decision benchmark.
    policy_sizes: tuple[int, ...] = (10, 1_000, 100_000)
    #: Calls per repetition of a small query (each repetition's value is their median).
    small_query_calls: int = 20
    #: Repetitions of the small queries: their blocks take a tenth of a second, and the
    #: floor ratios (S1) are the median of paired, adjacent blocks.
    small_query_repetitions: int = 15
    #: Planning calls per query (p50 / p99 over them).
    planning_calls: int = 50
    #: Uncached decisions measured per policy size, and the time budget per size.
    decision_samples: int = 20
    decision_budget_seconds: float = 120.0
    #: Engine settings written to mesh.toml and applied to every DuckDB baseline.
    engine_threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    engine_memory_limit: str = "4GB"
    #: Keys of the sections to run (benchmarks/sections.py), with what they need; None: all.
    sections: tuple[str, ...] | None = None
    #: Seconds a single query may take before the harness gives up on it (peer only).
    peer_query_timeout: float = 120.0
    #: Mesh section (benchmarks/mesh.py): the ``split_endpoints`` settings compared on the
    #: single-domain full scan.
    mesh_splits: tuple[int, ...] = (1, 2, 4)
    #: Node replicas of the orders domain in the throughput-scaling measurement.
    mesh_replicas: tuple[int, ...] = (1, 2, 3)
    #: Concurrent ADBC clients in the throughput-scaling measurement.
    mesh_clients: int = 8
    #: Seconds of load per replica count (split into ``repetitions`` windows).
    mesh_seconds: float = 10.0
    #: Fairness section: the heavy user's concurrent clients, the light user's point
    #: lookups per unloaded window, and the seconds of lookups under load per configuration.
    fairness_heavy_clients: int = 8
    fairness_lookups: int = 200
    fairness_seconds: float = 30.0

    @classmethod
    def make(
        cls,
        scale: float | None = None,
        out: Path | None = None,
        quick: bool = False,
        repetitions: int | None = None,
        **overrides: object,
    ) -> BenchConfig:
        if quick:
            defaults: dict[str, object] = {
                "scale": QUICK_SCALE,
                "repetitions": 1,
                "concurrency_seconds": 2.0,
                "small_query_calls": 10,
                "small_query_repetitions": 1,
                "planning_calls": 10,
                "decision_samples": 3,
                "decision_budget_seconds": 10.0,
                "mesh_seconds": 1.0,
                "fairness_lookups": 20,
                "fairness_seconds": 2.0,
                # R7's own sizes: a Governor over 100,000 lines builds in a few seconds.
                "policy_sizes": (10, 1_000, 100_000),
            }
        else:
            defaults = {}
        if scale is not None:
            defaults["scale"] = scale
        if repetitions is not None:
            defaults["repetitions"] = repetitions
        if out is not None:
            defaults["out"] = Path(out)
        defaults.update(overrides)
        config = cls(quick=quick, **defaults)  # type: ignore[arg-type]
        if config.repetitions < 1:
            raise ValueError("repetitions must be at least 1")
        return config

    @property
    def out_dir(self) -> Path:
        return Path(self.out).resolve()

    @property
    def scale_tag(self) -> str:
        return f"sf{self.scale:g}".replace(".", "_")

    @property
    def data_dir(self) -> Path:
        """tpchgen-cli's Parquet output, kept between runs of the same scale."""
        return self.out_dir / "data" / self.scale_tag

    @property
    def mesh_dir(self) -> Path:
        return self.out_dir / "mesh"

    @property
    def logs_dir(self) -> Path:
        return self.out_dir / "logs"

    def as_json(self) -> dict:
        values = asdict(self)
        values["out"] = str(self.out_dir)
        return values
