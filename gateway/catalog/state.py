"""The mesh as requests see it: one catalog snapshot and the policy decided against it.

Both are swapped together, atomically, so a request never plans with a catalog and a
policy from different moments.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from gateway.catalog.catalog import Catalog, CatalogHolder
from gateway.config import MeshConfig
from gateway.engine.watchdog import Watchdog
from policies.engine import Governor
from policies.holder import PolicyHolder

#: How often the gateway and each domain node look for changed contracts and policy files.
RELOAD_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class MeshSnapshot:
    """A catalog and the Governor built for it."""

    catalog: Catalog
    governor: Governor


class MeshState:
    """Loads the mesh, then reloads catalog and policies when their files change."""

    def __init__(
        self,
        mesh_dir: Path,
        config: MeshConfig,
        domains: frozenset[str] | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        """``domains``: only these domains' products and policies (a domain node).
        ``watchdog``: shared by the engine of every catalog snapshot (a new one, without
        memory ceiling, by default); ``self.watchdog``."""
        self.config = config
        self._catalogs = CatalogHolder(
            mesh_dir,
            config.engine,
            domains,
            partitions=config.nodes.split_endpoints,
            watchdog=watchdog,
        )
        self.watchdog = self._catalogs.watchdog
        self.policies = PolicyHolder(
            mesh_dir,
            config.governance.hash_key,
            served_domains=domains,
        )
        self._lock = threading.Lock()
        catalog = self._catalogs.current
        self.policies.refresh(catalog.shapes)
        self._snapshot = MeshSnapshot(catalog, self.policies.governor)

    @property
    def current(self) -> MeshSnapshot:
        return self._snapshot

    def refresh(self) -> bool:
        """Pick up changed contracts and policy files; True when the snapshot changed."""
        with self._lock:
            self._catalogs.reload_if_changed()
            catalog = self._catalogs.current
            changed = self.policies.refresh(catalog.shapes)
            if changed or catalog is not self._snapshot.catalog:
                self._snapshot = MeshSnapshot(catalog, self.policies.governor)
                return True
            return False
