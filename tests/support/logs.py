"""Reading what servers and the CLI write: JSON log lines, the audit files, CLI text."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

#: A mesh's audit log, relative to the mesh directory.
AUDIT_FILE = Path(".meshgate/audit/audit.jsonl")


def log_records(text: str, event: str | None = None) -> list[dict]:
    """The JSON log records in a server's output (only those of ``event`` when given)."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if event is None or record.get("event") == event:
            records.append(record)
    return records


def log_offset(path: Path) -> int:
    """The size of the log at ``path`` now: where the next lines will start."""
    return path.stat().st_size if path.exists() else 0


def json_lines_since(path: Path, offset: int) -> list[dict]:
    """The JSON records of the log at ``path`` written after ``offset`` (``log_offset``)."""
    with path.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    records = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def wait_for_query_log(
    gateway, *, user: str, after: int, timeout: float, outcomes=None
) -> dict | None:
    """The first ``query`` log line of ``user`` after the first ``after`` query lines.

    Polls the gateway's log for up to ``timeout`` seconds; None when nothing came.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = [r for r in log_records(gateway.log(), "query")[after:] if r.get("user") == user]
        if outcomes is not None:
            lines = [r for r in lines if r.get("outcome") in outcomes]
        if lines:
            return lines[0]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def audit_file(mesh: Path) -> Path:
    """The mesh's current audit file."""
    return mesh / AUDIT_FILE


def audit_records(mesh: Path) -> list[dict]:
    """The records of the mesh's current audit file (none when it does not exist yet)."""
    path = audit_file(mesh)
    if not path.exists():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def statement_records(mesh: Path, sql: str) -> list[dict]:
    """The audit records of the queries of ``sql``: their begin (or refusal) records and
    the end records of those queries, in order."""
    records = audit_records(mesh)
    ids = {r["query_id"] for r in records if r.get("sql") == sql}
    return [r for r in records if r.get("query_id") in ids]


def audit_text(mesh: Path) -> str:
    """Every audit file of the mesh (current and rotated), as one text."""
    directory = mesh / ".meshgate" / "audit"
    return "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in sorted(directory.glob("*.jsonl"))
    )


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (what the CLI prints, as a reader sees it)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
