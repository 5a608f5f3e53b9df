"""Products stored as files on the local file system (ODCS server type ``local``).

``format: parquet`` with ``path`` naming a file, a glob, or a directory (read recursively;
``key=value`` folders are read as hive partitions).
"""

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

_GLOB_CHARS = frozenset("*?[")
SUPPORTED_FORMATS = ("parquet",)
#: The file-name column of partition scans (a name no contract column collides with).
_FILE_COLUMN = "__meshgate_file"


class LocalFilesConnector(Connector):
    """Parquet files: one file, a glob, or a (hive-partitioned) directory."""

    server_type = "local"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        file_format = (spec.server.format or "").lower()
        if file_format not in SUPPORTED_FORMATS:
            raise spec.fail(
                spec.field("format"),
                f"unsupported format {spec.server.format!r}",
                f"use one of: {', '.join(SUPPORTED_FORMATS)}",
            )
        raw = spec.server.path or spec.server.location
        glob = raw if raw and _GLOB_CHARS & set(raw) else None
        if glob is not None and ".." in Path(glob).parts:
            raise spec.fail(
                spec.field("path"),
                f"{glob!r}: a glob may not contain '..'",
                "a domain publishes only data inside its own folder",
            )
        if glob is not None:
            root = self.resolve_path(_glob_root(glob))
            self.pattern = str(root / glob[len(_glob_root(glob)) :].lstrip("/"))
            self.root = root
        else:
            self.root = self.resolve_path(raw)
            self.pattern = (
                str(self.root / "**" / "*.parquet") if self.root.is_dir() else str(self.root)
            )
        self.hive_partitioned = self.root.is_dir() and any(
            "=" in child.name for child in self.root.iterdir() if child.is_dir()
        )

    @property
    def data_paths(self) -> tuple[Path, ...]:
        return (self.root,)

    def check_available(self) -> None:
        super().check_available()
        if self.root.is_dir() and not any(self.root.glob("**/*.parquet")):
            raise self.spec.fail(
                self.spec.field("path"),
                f"no .parquet files under {self.root}",
                "publish the data or fix the path",
            )

    def scan(self, attach: AttachDatabase) -> exp.Expr:
        self.check_available()
        return self._read_parquet()

    def partitions(
        self, count: int, attach: AttachDatabase, value: QueryValue
    ) -> Partitioning | None:
        """File groups: a file belongs to partition ``md5(path below the root) % count``.

        A pure function of the file's own name, so every node replica and every moment
        agree (a file published meanwhile lands in exactly one partition), and DuckDB
        prunes the other files before reading them (a filter on the file-name column).
        """
        if self.pattern == str(self.root):
            return None  # one file: nothing to divide by file
        self.check_available()
        files = value(
            exp.select(exp.func("count", exp.Star())).from_(
                exp.Anonymous(this="glob", expressions=[exp.Literal.string(self.pattern)])
            )
        )
        scan = self._read_parquet(_option("filename", exp.Literal.string(_FILE_COLUMN)))
        below_root = exp.func(
            "substr",
            exp.column(_FILE_COLUMN, quoted=True),
            exp.Literal.number(len(str(self.root)) + 2),
        )
        bucket = exp.Mod(
            this=exp.func("md5_number", below_root), expression=exp.Literal.number(count)
        )
        return Partitioning(
            tuple(
                PartitionScan(scan, exp.EQ(this=bucket.copy(), expression=exp.Literal.number(i)))
                for i in range(count)
            ),
            pieces=int(files or 0),
        )

    def _read_parquet(self, *options: exp.Expr) -> exp.Expr:
        return exp.func(
            "read_parquet",
            exp.Literal.string(self.pattern),
            _option("hive_partitioning", exp.Boolean(this=self.hive_partitioned)),
            *options,
        )


def _option(name: str, value: exp.Expr) -> exp.Expr:
    """A named table-function argument ``name = value``."""
    return exp.EQ(this=exp.column(name), expression=value)


def _glob_root(raw: str) -> str:
    """The leading part of a glob before its first wildcard segment."""
    parts = Path(raw).parts
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."
