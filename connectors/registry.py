"""Maps an ODCS ``servers[].type`` to the connector class serving it.

Adding a source kind never touches the core: write a Connector subclass and call
``register_connector``.
"""

from __future__ import annotations

from connectors.base import Connector, SourceSpec
from connectors.duckdb_file import DuckDBFileConnector
from connectors.local_files import LocalFilesConnector

_CONNECTORS: dict[str, type[Connector]] = {}


def register_connector(cls: type[Connector]) -> type[Connector]:
    """Register ``cls`` for its ``server_type`` (usable as a class decorator)."""
    _CONNECTORS[cls.server_type] = cls
    return cls


def known_server_types() -> tuple[str, ...]:
    return tuple(sorted(_CONNECTORS))


def connector_for(spec: SourceSpec) -> Connector:
    """Build the connector for ``spec``; ConnectorError names the file and field when wrong."""
    server_type = (spec.server.type or "").lower()
    cls = _CONNECTORS.get(server_type)
    if cls is None:
        raise spec.fail(
            spec.field("type"),
            f"unknown server type {spec.server.type!r}",
            f"use one of: {', '.join(known_server_types())}",
        )
    return cls(spec)


register_connector(DuckDBFileConnector)
register_connector(LocalFilesConnector)
