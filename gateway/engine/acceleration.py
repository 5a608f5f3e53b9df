"""Accelerated products: a product's rows held in the gateway's DuckDB memory.

A product is accelerated when its contract says so (``customProperties: accelerate:
true``) or, unless it says ``false``, when its files total less than the operator's
``[engine] accelerate_below_bytes``. Its copy is loaded into the catalog snapshot's
engine before the engine is locked, so a refresh is a new snapshot: queries keep reading
the old copy until the new one is complete, then the snapshot is swapped in one step.
The version of its files (``connectors.file_versions``) says when a copy is stale.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from connectors.file_versions import FileVersion, files_version


@dataclass(frozen=True)
class AcceleratedCopy:
    """One product's in-memory copy: what it holds and what it was loaded from."""

    rows: int
    bytes: int
    loaded_at: float
    paths: tuple[Path, ...]
    source: FileVersion

    def stale(self) -> bool:
        """True when the product's files changed since the copy was loaded (a refresh is
        due at the next reload)."""
        return files_version(self.paths) != self.source

    def describe(self, operator: bool, now: float | None = None) -> dict[str, object]:
        """How fresh the copy is; sizes only for the operator (a user under a row filter
        must not learn how many rows the product holds)."""
        now = time.time() if now is None else now
        answer: dict[str, object] = {
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "age_seconds": round(max(0.0, now - self.loaded_at), 1),
            "stale": self.stale(),
        }
        if operator:
            answer.update(rows=self.rows, bytes=self.bytes)
        return answer


def describe_copy(facts: Mapping[str, object]) -> str:
    """One line for ``meshgate products`` from a copy's facts (``AcceleratedCopy.describe``,
    as a gateway's Health lists them): ``yes[, 12 s old][, 1.2 MB][, stale: refreshing]``."""
    parts = ["yes"]
    if "age_seconds" in facts:
        parts.append(f"{facts['age_seconds']} s old")
    size = facts.get("bytes")
    if isinstance(size, int):
        parts.append(f"{size / 1024**2:.1f} MB")
    if facts.get("stale"):
        parts.append("stale: refreshing")
    return ", ".join(parts)


def wants_acceleration(hint: bool | None, size: int, below_bytes: int) -> bool:
    """Whether a product of ``size`` file bytes is accelerated: its contract's ``hint``
    decides when given, else the operator's threshold (0: off)."""
    if hint is not None:
        return hint
    return below_bytes > 0 and size < below_bytes
