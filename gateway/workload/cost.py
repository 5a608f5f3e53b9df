"""How an estimated cost is shown to a user."""

from __future__ import annotations


def magnitude(value: float) -> str:
    """``value`` to one significant figure in scientific notation (``8e+15``): enough to
    compare with a limit, and no exact row count of any product."""
    return f"{value:.0e}"
