"""Planning a statement in process, without governance: a ``PlanContext`` for bob that
may read every column of every product, unmasked (the planner's own tests are about
parsing, refusing and binding; governance has its own tests)."""

from __future__ import annotations

import dataclasses

from gateway.catalog.catalog import Catalog
from gateway.planning.query import PlanContext
from gateway.security.principal import Principal


class AllowEverything:
    """A governor that lets anyone read every column of every product, unmasked."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def may_read(self, subject: object, product_key: str) -> bool:
        return True

    def access(self, subject: object, product_key: str):
        from policies.engine import ColumnAccess, ProductAccess

        product = self.catalog.product(*product_key.split("."))
        columns = tuple(ColumnAccess(c.name, True, None, ()) for c in product.columns)
        return ProductAccess(product_key, True, None, columns, ())


def make_context(catalog: Catalog) -> PlanContext:
    """``PlanContext(Principal('bob'), catalog)``, plus an allow-all governor when required."""
    if "governor" in {f.name for f in dataclasses.fields(PlanContext)}:
        return PlanContext(Principal("bob"), catalog, governor=AllowEverything(catalog))
    return PlanContext(Principal("bob"), catalog)
