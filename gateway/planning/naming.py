"""SQL names: the catalog clients see, and the engine's names for products and partitions.

Only sqlglot nodes are built here (no database), so planning, the engine and the mesh
share the names without importing each other.
"""

from __future__ import annotations

from sqlglot import exp

#: The Flight SQL catalog clients address products in (``mesh.<domain>.<product>``).
FLIGHT_SQL_CATALOG = "mesh"
#: The engine's own catalog, holding one view per product.
INTERNAL_CATALOG = "memory"
#: Schema of the hidden partition views (never catalogued: no user can name them).
PARTITION_SCHEMA = "__meshgate_partitions"
#: Schema of the in-memory copies of accelerated products (never catalogued either).
ACCELERATED_SCHEMA = "__meshgate_accelerated"


def product_table(domain: str, name: str) -> exp.Table:
    """The internal, fully qualified reference to a product's view."""
    return exp.table_(name, db=domain, catalog=INTERNAL_CATALOG, quoted=True)


def accelerated_table(domain: str, name: str) -> exp.Table:
    """The hidden in-memory table holding an accelerated product's rows."""
    return exp.table_(
        f"{domain}.{name}", db=ACCELERATED_SCHEMA, catalog=INTERNAL_CATALOG, quoted=True
    )


def partition_table(domain: str, name: str, index: int, count: int) -> exp.Table:
    """The hidden view of partition ``index`` (of ``count``) of a product."""
    return exp.table_(
        f"{domain}.{name}#{index}/{count}",
        db=PARTITION_SCHEMA,
        catalog=INTERNAL_CATALOG,
        quoted=True,
    )
