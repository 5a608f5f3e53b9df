"""What each user may see of the catalog: the products they may read, cut to their columns,
and their health (Flight SQL metadata, health, ``meshgate products --user``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import exp

from gateway.catalog.catalog import Product
from gateway.catalog.state import MeshSnapshot, MeshState
from gateway.mesh.federation import NodeDirectory
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
        self._schemas: dict[tuple[int, str, str], tuple[pa.Schema, dict[str, str]]] = {}

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
            schema, types = self._user_schema(snapshot, principal, product, access)
            visible.append(
                product.restricted_to([c.name for c in access.visible_columns], schema, types)
            )
        return visible

    def health(self, principal: Principal | None, nodes: NodeDirectory | None) -> dict:
        """Products' health and node reachability: all of it without a ``principal`` (the
        operator); for a user, only the products they may read, and the nodes of the domains
        where they may read one (locations they get in endpoints anyway), each listing only
        those products: no product, domain or node address their catalog does not show."""
        snapshot = self._state.current
        health = snapshot.catalog.engine.health
        keys = [p.key for p in (self.products(principal) if principal else snapshot.catalog)]
        answer: dict = {"products": {key: health.get(key, "unknown") for key in keys}}
        answer["accelerated"] = acceleration_of(snapshot, keys, operator=principal is None)
        if nodes is not None:
            if principal is None:
                answer["nodes"] = {d: nodes.health(d) for d in nodes.domains}
            else:
                readable = {d: {k for k in keys if k.startswith(d + ".")} for d in nodes.domains}
                answer["nodes"] = {
                    d: [_user_replica_view(r, readable[d]) for r in nodes.health(d)]
                    for d in nodes.domains
                    if readable[d]
                }
        return answer

    def _user_schema(
        self, snapshot: MeshSnapshot, principal: Principal, product: Product, access: ProductAccess
    ) -> tuple[pa.Schema, dict[str, str]]:
        """The schema ``principal`` gets from ``product`` and its columns' DuckDB types
        (masks may change types), learnt from typed NULLs: metadata never reads the
        product's data."""
        # by the decision, not the user: a user may come back with other roles (a token)
        key = (snapshot.governor.version, access.fingerprint, product.key)
        known = self._schemas.get(key)
        if known is None:
            select = exp.select(*governed_columns(access, product.column_types, typed_nulls=True))
            schema, types = snapshot.catalog.engine.result_columns(select.sql("duckdb"))
            known = schema, dict(zip(schema.names, types, strict=True))
            if len(self._schemas) > _MAX_SCHEMAS:
                self._schemas.clear()
            self._schemas[key] = known
        return known


def acceleration_of(snapshot: MeshSnapshot, keys: list[str], operator: bool) -> dict:
    """How fresh the in-memory copy of each accelerated product of ``keys`` is; for the
    operator, with sizes and the memory all copies take against the budget."""
    engine = snapshot.catalog.engine
    copies = {key: engine.accelerated[key] for key in keys if key in engine.accelerated}
    answer: dict = {key: copy.describe(operator) for key, copy in copies.items()}
    if operator:
        return {
            "products": answer,
            "memory_bytes": sum(copy.bytes for copy in engine.accelerated.values()),
            "budget_bytes": engine.settings.accelerate_memory_bytes,
        }
    return {"products": answer}


def _user_replica_view(replica: dict, readable: set[str]) -> dict:
    """A node replica's health as a user sees it: reachability and the products they may
    read (never the node's other products, validation problems or connection errors)."""
    view = {"location": replica["location"], "reachable": replica["reachable"]}
    if replica["reachable"]:
        view["status"] = replica.get("status", "unknown")
        view["products"] = sorted(p for p in replica.get("products", ()) if p in readable)
    return view
