"""Products stored as a table in a DuckDB database file (ODCS server type ``duckdb``)."""

from __future__ import annotations

from pathlib import Path

from sqlglot import exp

from connectors.base import AttachDatabase, Connector, SourceSpec


class DuckDBFileConnector(Connector):
    """A table (``schema[].physicalName``) inside a DuckDB file (``servers[].path``)."""

    server_type = "duckdb"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.database_path = self.resolve_path(spec.server.path or spec.server.database)
        self.schema_name = spec.server.schema_ or "main"

    @property
    def data_paths(self) -> tuple[Path, ...]:
        return (self.database_path,)

    def scan(self, attach: AttachDatabase) -> exp.Expression:
        self.check_available()
        alias = attach(self.database_path)
        return exp.table_(self.spec.physical_name, db=self.schema_name, catalog=alias, quoted=True)
