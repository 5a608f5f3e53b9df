"""What each user may see of the catalog: the products they may read, cut to their columns
(Flight SQL metadata, health, ``meshgate products --user``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import exp

from gateway.catalog.catalog import Product
from gateway.catalog.state import MeshSnapshot, MeshState
from gateway.planning.secure import governed_columns
from gateway.security.principal import Principal
from policies.engine import Subject

if TYPE_CHECKING:
    from policies.engine import ProductAccess

_MAX_SCHEMAS = 10_000


class VisibleCatalog:
    """The current snapshot's products as each principal sees them; never reads data."""

    def __init__(self, state: MeshState) -> None:
        self._state = state
        self._schemas: dict[tuple[int, str, str], pa.Schema] = {}

    def products(self, principal: Principal) -> list[Product]:
        """The products ``principal`` may read, each reduced to the columns they may see,
        with the schema they would get (masks may change a column's type)."""
        snapshot = self._state.current
        subject = Subject(principal.user, principal.roles, principal.attributes)
        visible = []
        for product in snapshot.catalog:
            access = snapshot.governor.access(subject, product.key)
            if not access.allowed or not access.visible_columns:
                continue
            visible.append(
                product.restricted_to(
                    [c.name for c in access.visible_columns],
                    self._user_schema(snapshot, principal, product, access),
                )
            )
        return visible

    def _user_schema(
        self, snapshot: MeshSnapshot, principal: Principal, product: Product, access: ProductAccess
    ) -> pa.Schema:
        """The schema ``principal`` gets from ``product`` (masks may change types), learnt
        from typed NULLs: metadata never reads the product's data."""
        key = (snapshot.governor.version, principal.user, product.key)
        schema = self._schemas.get(key)
        if schema is None:
            select = exp.select(*governed_columns(access, product.column_types, typed_nulls=True))
            schema = snapshot.catalog.engine.result_schema(select.sql("duckdb"))
            if len(self._schemas) > _MAX_SCHEMAS:
                self._schemas.clear()
            self._schemas[key] = schema
        return schema
