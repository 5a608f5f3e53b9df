"""Where Spark reads each product, and how big it is.

Parquet products are read by Spark in place (the contract's path: on a cluster, the same
path on shared storage). Any other product (a DuckDB file) reaches Spark as a governed
Arrow fragment that the gateway computes: its temporary view, already filtered and
masked.
"""

from __future__ import annotations

import glob
from pathlib import Path

from sqlglot import exp

from connectors.local_files import LocalFilesConnector
from connectors.registry import connector_for
from gateway.catalog.catalog import Product
from gateway.planning.query import TargetSource


def parquet_path(product: Product) -> str | None:
    """The path Spark reads ``product`` from, or None when it is not Parquet files."""
    connector = connector_for(product.contract.source)
    if not isinstance(connector, LocalFilesConnector):
        return None
    root = connector.root
    return str(root) if root.is_dir() else connector.pattern


def fragment_view(product: Product) -> str:
    """The temporary view name of ``product``'s governed fragment in a Spark session."""
    return f"meshgate_{product.domain}__{product.name}"


def spark_source(product: Product) -> TargetSource:
    """How a Spark query reads ``product``."""
    path = parquet_path(product)
    if path is None:
        return TargetSource(exp.table_(fragment_view(product), quoted=True), governed=True)
    table = exp.Table(this=exp.to_identifier(path, quoted=True), db=exp.to_identifier("parquet"))
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
