"""Errors of the connectors package (their place in the tree: ``gateway.errors``)."""

from __future__ import annotations

from gateway.errors import ContractError


class ConnectorError(ContractError):
    """A product source that cannot be bound; the message names the contract, field and fix.

    A ContractError: the contract's ``servers`` entry is what cannot be served."""
