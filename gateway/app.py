"""Assemble a running gateway from a mesh directory."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.auth import TokenStore, UserDirectory
from gateway.catalog import CatalogHolder
from gateway.config import MeshConfig, load_config
from gateway.server import MeshgateFlightServer
from gateway.service import SqlService

log = structlog.get_logger("meshgate.app")

RELOAD_INTERVAL_SECONDS = 1.0


@dataclass
class Gateway:
    """A configured gateway: its config, catalog and Flight server."""

    mesh_dir: Path
    config: MeshConfig
    catalogs: CatalogHolder
    service: SqlService
    server: MeshgateFlightServer
    _stop: threading.Event

    @property
    def port(self) -> int:
        return self.server.port

    def serve_forever(self) -> None:
        self.server.serve()

    def shutdown(self) -> None:
        self._stop.set()
        self.server.shutdown()


def build_gateway(mesh_dir: Path, host: str | None = None, port: int | None = None) -> Gateway:
    """Load the mesh, bind every product and start listening (returns immediately)."""
    mesh_dir = mesh_dir.resolve()
    config = load_config(mesh_dir)
    catalogs = CatalogHolder(mesh_dir, config.engine)
    service = SqlService(catalogs, config.gateway)
    location = f"grpc://{host or config.gateway.host}:{config.gateway.port if port is None else port}"
    server = MeshgateFlightServer(
        location,
        service,
        UserDirectory(config.users),
        TokenStore(config.gateway.token_ttl_seconds),
    )
    stop = threading.Event()
    threading.Thread(
        target=_watch_contracts, args=(catalogs, stop), name="meshgate-reload", daemon=True
    ).start()
    log.info("gateway_started", location=location.rsplit(":", 1)[0] + f":{server.port}",
             products=len(catalogs.current), problems=len(catalogs.current.problems))
    return Gateway(mesh_dir, config, catalogs, service, server, stop)


def _watch_contracts(catalogs: CatalogHolder, stop: threading.Event) -> None:
    while not stop.wait(RELOAD_INTERVAL_SECONDS):
        try:
            catalogs.reload_if_changed()
        except Exception:  # a reload must never take the server down
            log.exception("catalog_reload_failed")
