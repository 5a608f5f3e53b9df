"""Step: ask the policy what the user may see of every product the statement reads.

A product the user may not read is reported exactly like one that does not exist, so a
refusal does not reveal what the mesh holds.
"""

from __future__ import annotations

from gateway.errors import AccessDenied
from gateway.planning.query import PlanContext, Query


def authorize(query: Query, context: PlanContext) -> Query:
    """Attach each product's ProductAccess; refuse products the user may not read."""
    accesses = {}
    for product in query.products:
        access = context.governor.access(context.subject, product.key)
        if not access.allowed or not access.visible_columns:
            reason = "; ".join(access.reasons) or "every column is denied"
            raise AccessDenied(not_readable_message(product.key), f"{product.key}: {reason}")
        accesses[product.key] = access
    return query.evolve(accesses=accesses)


def not_readable_message(key: str) -> str:
    return (
        f"unknown product {key} (or you may not read it); `meshgate products --user <you>` "
        "lists the products you can read"
    )
