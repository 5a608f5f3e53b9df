"""Errors of the policies package."""

from __future__ import annotations

from pathlib import Path


class PolicyError(Exception):
    """A policy rule that cannot be used; names the file and line, the problem and the fix."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem


class PolicyExpressionError(ValueError):
    """A mask or row-filter expression that is not allowed (before file:line is known)."""
