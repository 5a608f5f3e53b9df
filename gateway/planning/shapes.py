"""Products as their shape only: one row of typed NULLs standing in for the data.

Planned over these sources (``PlanContext.sources``), a statement binds exactly as over
the products (same columns, same types, same masks and filters above them) but reads no
data and scans nothing: what DuckDB needs to describe a plan, e.g. to tell the types of a
prepared statement's parameters (``gateway.engine.parameters``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.planning.query import TargetSource
from gateway.planning.secure import duckdb_type

if TYPE_CHECKING:
    from gateway.catalog.catalog import Product


def shape_sources(products: Iterable[Product]) -> dict[str, TargetSource]:
    """Each product (by key) read from a row of NULLs of its columns' types."""
    return {product.key: TargetSource(_typed_nulls(product)) for product in products}


def _typed_nulls(product: Product) -> exp.Expr:
    row = exp.select(
        *(
            exp.alias_(
                exp.Cast(this=exp.Null(), to=duckdb_type(column_type).copy()), name, quoted=True
            )
            for name, column_type in product.column_types.items()
        )
    )
    return exp.Subquery(this=row, alias=exp.TableAlias(this=exp.to_identifier("shape")))
