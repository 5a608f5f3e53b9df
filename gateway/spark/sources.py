"""Where Spark reads each product, and how big it is.

Parquet products are read by Spark in place (the contract's path: on a cluster, the same
path on shared storage) when Spark reads exactly the files DuckDB reads: one file, a
directory of hive partitions (their values cast to the contract's types, as DuckDB casts
them), or a one-level glob. Any other product (a DuckDB file, nested folders, a ``**``
glob, files Spark skips) reaches Spark as a governed Arrow fragment that the gateway
computes: a temporary view of the query's own, already filtered and masked.
"""

from __future__ import annotations

import glob
from pathlib import Path

from sqlglot import exp

from connectors.local_files import LocalFilesConnector
from connectors.registry import connector_for
from gateway.catalog.catalog import Product
from gateway.planning.query import TargetSource
from gateway.planning.secure import duckdb_type

_HIDDEN_PREFIXES = ("_", ".")  # Spark skips such files and folders; DuckDB reads them


def parquet_path(product: Product) -> str | None:
    """The path Spark reads ``product`` from, or None when Spark would not read exactly
    the files DuckDB reads (or it is not Parquet files)."""
    connector = connector_for(product.contract.source)
    if not isinstance(connector, LocalFilesConnector):
        return None
    root = connector.root
    if not root.is_dir():
        pattern = connector.pattern
        files = [Path(f) for f in glob.glob(pattern)]
        if "**" in pattern or any(f.name.startswith(_HIDDEN_PREFIXES) for f in files):
            return None
        return pattern
    files = list(root.rglob("*.parquet"))
    if any(part.startswith(_HIDDEN_PREFIXES) for f in files for part in f.relative_to(root).parts):
        return None
    nested = {f.parent for f in files} - {root}
    if nested and not connector.hive_partitioned:
        return None  # DuckDB reads nested folders; Spark reads only the top level
    return str(root)


def spark_source(product: Product, suffix: str) -> TargetSource:
    """How a Spark query reads ``product``; ``suffix`` makes a fragment view's name the
    query's own."""
    path = parquet_path(product)
    if path is None:
        view = f"meshgate_{product.domain}__{product.name}_{suffix}"
        return TargetSource(exp.table_(view, quoted=True), governed=True)
    table = exp.Table(this=exp.to_identifier(path, quoted=True), db=exp.to_identifier("parquet"))
    connector = connector_for(product.contract.source)
    if isinstance(connector, LocalFilesConnector) and connector.hive_partitioned:
        typed = exp.select(
            *(
                exp.alias_(
                    exp.Cast(this=exp.column(name, quoted=True), to=duckdb_type(type_).copy()),
                    name,
                    quoted=True,
                )
                for name, type_ in product.column_types.items()
            )
        ).from_(table)
        return TargetSource(
            exp.Subquery(this=typed, alias=exp.TableAlias(this=exp.to_identifier("_typed")))
        )
    return TargetSource(table)


def source_bytes(product: Product) -> int:
    """Bytes of ``product``'s files on disk (an estimate of what a full scan reads)."""
    connector = connector_for(product.contract.source)
    if isinstance(connector, LocalFilesConnector):
        root = connector.root
        files = root.rglob("*.parquet") if root.is_dir() else glob.iglob(connector.pattern)
        return sum(_size(str(path)) for path in files)
    path = connector.spec.server.path or ""
    return _size(str(connector.resolve_path(path))) if path else 0


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:  # gone since the catalog was read: the query will say so
        return 0
