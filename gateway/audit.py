"""The audit log: every query attempt, allowed or denied, durably, before any row leaves.

JSON lines, one record per event, each appended with a single ``write`` on an
``O_APPEND`` descriptor and ``fsync``ed before the call returns: a crash cannot leave a
half-written record behind a complete one, and a query's ``begin`` record is on disk
before its first batch is sent. Files rotate at a size limit (``audit-<time>.jsonl``).
JSON lines were chosen over a DuckDB table because appends are atomic and durable line
by line, any tool can read them, and the engine's DuckDB stays read-only.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

CURRENT_FILE = "audit.jsonl"


class AuditLog:
    """Append-only, fsynced, rotating JSON-lines audit log in ``directory``."""

    def __init__(self, directory: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rotations = 0
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.directory / CURRENT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @staticmethod
    def new_query_id() -> str:
        return uuid.uuid4().hex

    def record(self, event: str, **fields: object) -> None:
        """Append one event durably (written and fsynced before returning)."""
        entry = {"time": datetime.now(UTC).isoformat(timespec="microseconds"), "event": event, **fields}
        line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            os.write(self._fd, line)
            os.fsync(self._fd)
            if os.fstat(self._fd).st_size >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._rotations += 1  # never two rotated files with one name, however fast
        os.replace(self.directory / CURRENT_FILE, self.directory / f"audit-{stamp}-{self._rotations:06d}.jsonl")
        self._fd = self._open()

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def read_audit(directory: Path) -> Iterator[dict]:
    """Every complete record, oldest file first; a torn last line (power loss) is skipped."""
    files = sorted(directory.glob("audit-*.jsonl")) + [directory / CURRENT_FILE]
    for path in files:
        if not path.exists():
            continue
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    continue


def monotonic_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
