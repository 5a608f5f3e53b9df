"""Errors of the connectors package."""

from __future__ import annotations


class ConnectorError(Exception):
    """A product source that cannot be bound; the message names the contract, field and fix."""
