"""Products stored as a table in a DuckDB database file (ODCS server type ``duckdb``)."""

from __future__ import annotations

from pathlib import Path

from sqlglot import exp

from connectors.base import (
    AttachDatabase,
    Connector,
    Partitioning,
    PartitionScan,
    QueryValue,
    SourceSpec,
)

#: DuckDB's rows per row group: range bounds on these multiples read no row group twice.
ROW_GROUP_ROWS = 122_880
#: Rows per unit of work below which an extra endpoint costs more than it gains.
ROWS_PER_PIECE = 32_768


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

    def scan(self, attach: AttachDatabase) -> exp.Expr:
        self.check_available()
        alias = attach(self.database_path)
        return exp.table_(self.spec.physical_name, db=self.schema_name, catalog=alias, quoted=True)

    def check_source(self, attach: AttachDatabase, value: QueryValue) -> None:
        """Refuse a view: its SQL would run with the gateway's rights (any product's
        files, the gateway's own catalog of ungoverned product views) and may read the
        clock, which the result cache cannot see; and generated columns, computed on every
        read. A product is a table of plain columns."""
        alias, name = attach(self.database_path), self.spec.physical_name
        field = f"{self.spec.schema_field}.physicalName"
        if value(self._catalog_count("duckdb_views", "view_name", alias)):
            raise self.spec.fail(
                field,
                f"{name!r} in {self.database_path.name} is a view, whose SQL would run with "
                "the gateway's rights (other products' files, the gateway's catalog)",
                "publish the rows as a table",
            )
        if value(self._catalog_count("duckdb_columns", "table_name", alias, "is_generated")):
            raise self.spec.fail(
                field,
                f"table {name!r} in {self.database_path.name} has generated columns, computed "
                "on every read (random(), now(), ...)",
                "publish their values as plain columns",
            )

    def _catalog_count(
        self, function: str, name_column: str, alias: str, *conditions: str
    ) -> exp.Query:
        """How many rows of DuckDB's catalog ``function`` name this product's table in its
        attached database (and meet ``conditions``, boolean columns)."""
        return (
            exp.select(exp.func("count", exp.Star()))
            .from_(exp.Table(this=exp.Anonymous(this=function)))
            .where(
                exp.and_(
                    exp.column("database_name").eq(exp.Literal.string(alias)),
                    exp.Lower(this=exp.column("schema_name")).eq(
                        exp.Literal.string(self.schema_name.lower())
                    ),
                    exp.Lower(this=exp.column(name_column)).eq(
                        exp.Literal.string(self.spec.physical_name.lower())
                    ),
                    *(exp.column(condition) for condition in conditions),
                )
            )
        )

    def partitions(
        self, count: int, attach: AttachDatabase, value: QueryValue
    ) -> Partitioning | None:
        """Contiguous rowid ranges (DuckDB prunes row groups outside a rowid range filter).

        Bounds come from the table's own rows (``max(rowid)``), so replicas of the same
        file agree; the first and last ranges are open, so every rowid is in exactly one.
        """
        table = self.scan(attach)
        end = value(exp.select(exp.func("max", exp.column("rowid")) + 1).from_(table.copy()))
        rows = int(end or 0)
        bounds = range_bounds(rows, count)
        rowid = exp.column("rowid")
        scans = []
        for index in range(count):
            low = bounds[index - 1] if index else None
            high = bounds[index] if index < count - 1 else None
            conditions = [
                c
                for c in (
                    low is not None
                    and exp.GTE(this=rowid.copy(), expression=exp.Literal.number(low)),
                    high is not None
                    and exp.LT(this=rowid.copy(), expression=exp.Literal.number(high)),
                )
                if c
            ]
            scans.append(
                PartitionScan(table.copy(), exp.and_(*conditions) if conditions else exp.true())
            )
        return Partitioning(tuple(scans), pieces=rows // ROWS_PER_PIECE)


def range_bounds(rows: int, count: int) -> tuple[int, ...]:
    """The ``count - 1`` ascending rowid bounds between ``count`` near-equal ranges of
    ``rows`` rows, on row-group multiples when every range spans at least one."""
    exact = [index * rows // count for index in range(1, count)]
    if rows // count < ROW_GROUP_ROWS:
        return tuple(exact)
    return tuple(round(bound / ROW_GROUP_ROWS) * ROW_GROUP_ROWS for bound in exact)
