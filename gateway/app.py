"""Assemble a running gateway from a mesh directory."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.audit import AuditLog
from gateway.auth import TokenStore, UserDirectory
from gateway.config import MeshConfig, load_config
from gateway.server import MeshgateFlightServer
from gateway.service import SqlService
from gateway.state import MeshState

log = structlog.get_logger("meshgate.app")

RELOAD_INTERVAL_SECONDS = 1.0


@dataclass
class Gateway:
    """A configured gateway: its config, catalog and Flight server."""

    mesh_dir: Path
    config: MeshConfig
    state: MeshState
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
    state = MeshState(mesh_dir, config)
    audit = AuditLog(config.audit.path(mesh_dir), config.audit.max_file_bytes)
    service = SqlService(state, audit)
    location = f"grpc://{host or config.gateway.host}:{config.gateway.port if port is None else port}"
    server = MeshgateFlightServer(
        location,
        service,
        UserDirectory(config.users),
        TokenStore(config.gateway.token_ttl_seconds),
        secrets=(config.governance.hash_key or "",),
    )
    stop = threading.Event()
    threading.Thread(
        target=_watch_files, args=(state, stop), name="meshgate-reload", daemon=True
    ).start()
    log.info("gateway_started", location=location.rsplit(":", 1)[0] + f":{server.port}",
             products=len(state.current.catalog), problems=len(state.current.catalog.problems))
    return Gateway(mesh_dir, config, state, service, server, stop)


def _watch_files(state: MeshState, stop: threading.Event) -> None:
    """Reload contracts and policy files when they change, every second."""
    while not stop.wait(RELOAD_INTERVAL_SECONDS):
        try:
            state.refresh()
        except Exception:  # a reload must never take the server down
            log.exception("reload_failed")
