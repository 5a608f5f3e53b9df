"""Where a rule stands in a mesh's policy files: ``crm/policy.csv:3``, as ``explain`` and
the audit name it."""

from __future__ import annotations

from pathlib import Path


def policy_file(mesh: Path, scope: str) -> Path:
    """The policy file of ``scope``: a domain name, or ``global``."""
    return mesh / "policies" / "global.csv" if scope == "global" else mesh / scope / "policy.csv"


def rule_origin(mesh: Path, scope: str, line_text: str) -> str:
    """``crm/policy.csv:3`` / ``policies/global.csv:12``: where ``line_text`` stands in the file
    (relative to the mesh dir, as ``explain`` and the audit name it)."""
    wanted = _canonical(line_text)
    lines = policy_file(mesh, scope).read_text(encoding="utf-8").splitlines()
    numbers = [i for i, line in enumerate(lines, start=1) if _canonical(line) == wanted]
    assert len(numbers) == 1, f"{line_text!r} found at lines {numbers} of {scope}'s policy file"
    relative = "policies/global.csv" if scope == "global" else f"{scope}/policy.csv"
    return f"{relative}:{numbers[0]}"


def _canonical(line: str) -> str:
    return ",".join(part.strip() for part in line.strip().split(","))
