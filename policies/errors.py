"""Errors of the policies package (their place in the tree: ``gateway.errors``)."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import MeshgateError


class PolicyError(MeshgateError):
    """A policy rule that cannot be used; names the file and line, the problem and the fix."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem


class PolicyExpressionError(MeshgateError, ValueError):
    """A mask or row-filter expression that is not allowed (before file:line is known).

    Also a ValueError: the Governor compiles masks under ``except ValueError`` (a mask that
    does not fit the column's type fails closed)."""


class PolicyTestFileError(MeshgateError):
    """A policy test file that cannot be read; names file and case."""
