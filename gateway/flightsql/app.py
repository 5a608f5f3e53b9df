"""Assemble a running gateway from a mesh directory."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import structlog

from gateway.audit.log import AuditLog
from gateway.catalog.state import RELOAD_INTERVAL_SECONDS, MeshState
from gateway.config import MeshConfig, load_config
from gateway.engine.watchdog import Watchdog
from gateway.errors import ConfigError
from gateway.flightsql.operator import OperatorActions
from gateway.flightsql.server import MeshgateFlightServer
from gateway.flightsql.service import SqlService
from gateway.metrics.live import LiveCollector
from gateway.metrics.registry import GatewayMetrics
from gateway.metrics.server import MetricsServer
from gateway.security.auth import (
    LOCKED_OUT,
    PASSWORDS_OFF,
    LoginGuard,
    TokenStore,
    UserDirectory,
)
from gateway.security.identity import IdentityProvider
from gateway.security.token_check import TokenRejected
from gateway.signals import (
    ABANDON_CALLS_AFTER_SECONDS,
    STOPPED_QUERIES_SECONDS,
    stopped_within,
    wait_for_stop_signal,
    wait_while,
)

log = structlog.get_logger("meshgate.app")


@dataclass
class Gateway:
    """A configured gateway: its config, catalog and Flight server."""

    mesh_dir: Path
    config: MeshConfig
    state: MeshState
    service: SqlService
    server: MeshgateFlightServer
    _stop: threading.Event
    metrics: GatewayMetrics
    audit: AuditLog
    metrics_server: MetricsServer | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def serve_forever(self) -> bool:
        """Serve until SIGTERM or SIGINT, then shut down gracefully (``shutdown``)."""
        _settle_garbage_collector()

        def refuse_new_queries() -> None:
            self.service.draining = True

        wait_for_stop_signal(refuse_new_queries)
        return self.drain_and_shutdown()

    def drain_and_shutdown(self) -> bool:
        """Refuse new queries, let running ones finish for the grace period, then stop
        (``shutdown``: whatever happened meanwhile)."""
        grace = self.config.gateway.shutdown_grace_seconds
        self.service.draining = True
        try:
            log.info("shutting_down", running=self.service.active_streams, grace_seconds=grace)
            wait_while(lambda: self.service.active_streams, grace)
            if self.service.active_streams:
                log.warning("shutdown_cancels_queries", running=self.service.active_streams)
                self.state.watchdog.stop_all()
                wait_while(lambda: self.service.active_streams, STOPPED_QUERIES_SECONDS)
                self.state.watchdog.close_streams()  # left: clients that stopped reading
        finally:
            stopped = self.shutdown()
        return stopped

    def shutdown(self) -> bool:
        """Stop serving and close the audit log; False when a call could not be stopped
        (a client stopped reading its stream): the process must then exit without waiting
        for it (``gateway.signals.exit_abandoning_calls``)."""
        self._stop.set()
        stopped = stopped_within(self.server.shutdown, ABANDON_CALLS_AFTER_SECONDS)
        if not stopped:
            log.warning("shutdown_abandons_calls", waited_seconds=ABANDON_CALLS_AFTER_SECONDS)
        if self.service.nodes is not None:  # end the audit of queries placed on nodes
            self.service.nodes.ends.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.audit.close()  # its last records fsynced (with fsync = "batch", a window)
        return stopped


def build_gateway(mesh_dir: Path, host: str | None = None, port: int | None = None) -> Gateway:
    """Load the mesh, bind every product and start listening (returns immediately)."""
    mesh_dir = mesh_dir.resolve()
    config = load_config(mesh_dir)
    watchdog = Watchdog(memory_ceiling=config.engine.process_memory_ceiling_bytes)
    state = MeshState(mesh_dir, config, watchdog=watchdog)
    audit = AuditLog.from_settings(config.audit, config.audit.path(mesh_dir))
    metrics = GatewayMetrics()
    service = SqlService(state, audit, metrics=metrics)
    metrics.group_of = lambda principal: service.workload.group_of(principal).name
    metrics.prepare(group.name for group in service.workload.groups)
    service.workload.on_wait = metrics.waited
    settings = config.gateway
    tls = _tls_certificates(mesh_dir, settings)
    scheme = "grpc+tls" if tls else "grpc"
    location = f"{scheme}://{host or settings.host}:{settings.port if port is None else port}"

    def failed_login(user: str, error: str, reason: str) -> None:
        """A refused login, audited with the user name tried (never the password)."""
        event = "login_refused" if reason in (LOCKED_OUT, PASSWORDS_OFF) else "login_failed"
        audit.record(event, user=user, error=error, reason=reason)
        log.warning(event, user=user, error=error, reason=reason)

    try:
        server = MeshgateFlightServer(
            location,
            service,
            UserDirectory(config.users, config.identity is None or config.identity.password_logins),
            TokenStore(
                settings.token_ttl_seconds,
                identity=_identity(config, audit),
                per_user=settings.max_tokens_per_user,
            ),
            LoginGuard(settings.max_failed_logins, settings.failed_login_lockout_seconds),
            secrets=(config.governance.hash_key or "",),
            on_failed_login=failed_login,
            on_refused=lambda login: (
                metrics.refused_logins if login else metrics.refused_tokens
            ).inc(),
            operator=OperatorActions(service.workload, settings.admin_roles, audit, metrics),
            tls_certificates=tls,
        )
    except pa.ArrowException as exc:  # pyarrow only says "Server did not start properly"
        audit.close()
        raise ConfigError(
            f"cannot listen on {location}: the port is in use or the address is not this machine's; "
            "stop the other server, or choose another with --port or `gateway.port` in mesh.toml"
        ) from exc
    try:
        metrics_server = _serve_metrics(config, metrics, state, service)
    except ConfigError:
        server.shutdown()
        audit.close()
        raise
    stop = threading.Event()
    threading.Thread(
        target=_watch_files,
        args=(state, stop, metrics, lambda: _reloaded(state, service, metrics)),
        name="meshgate-reload",
        daemon=True,
    ).start()
    log.info(
        "gateway_started",
        location=location.rsplit(":", 1)[0] + f":{server.port}",
        products=len(state.current.catalog),
        problems=len(state.current.catalog.problems),
        metrics=metrics_server.url if metrics_server is not None else None,
    )
    return Gateway(mesh_dir, config, state, service, server, stop, metrics, audit, metrics_server)


def _identity(config: MeshConfig, audit: AuditLog) -> IdentityProvider | None:
    """``[identity]``: the OpenID provider's tokens, each rejection audited with its reason
    (never the token); its keys are fetched now, in the background."""
    if config.identity is None:
        return None

    def rejected(exc: TokenRejected) -> None:
        fields = {"reason": exc.reason, "error": exc.detail, **exc.facts}
        audit.record("token_refused", **fields)
        log.warning("token_refused", **fields)

    identity = IdentityProvider(config.identity, on_rejected=rejected)
    identity.prefetch()
    return identity


def _serve_metrics(
    config: MeshConfig, metrics: GatewayMetrics, state: MeshState, service: SqlService
) -> MetricsServer | None:
    """The ``/metrics`` endpoint of ``[metrics]`` (None without the section)."""
    if config.metrics is None:
        return None
    metrics.registry.register(LiveCollector(state, service.nodes, service.workload.counts))
    return MetricsServer(metrics.registry, config.metrics.host, config.metrics.port)


def _tls_certificates(mesh_dir: Path, settings) -> list[tuple[bytes, bytes]]:
    """The (certificate, key) pair from config, or [] for plaintext gRPC."""
    if not settings.tls_cert_file and not settings.tls_key_file:
        return []
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ConfigError(
            f"{mesh_dir / 'mesh.toml'}: fields `gateway.tls_cert_file` and `gateway.tls_key_file` "
            "go together; give both or neither"
        )
    pair = []
    for field, name in (
        ("tls_cert_file", settings.tls_cert_file),
        ("tls_key_file", settings.tls_key_file),
    ):
        path = Path(name) if Path(name).is_absolute() else mesh_dir / name
        try:
            pair.append(path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"{mesh_dir / 'mesh.toml'}: field `gateway.{field}`: cannot read {path}: {exc}"
            ) from exc
    return [(pair[0], pair[1])]


def _reloaded(state: MeshState, service: SqlService, metrics: GatewayMetrics) -> None:
    """After a reload: forget plans and product series of what is no longer served."""
    service.planner.forget_stale_plans()
    metrics.forget_products({product.key for product in state.current.catalog})


def _watch_files(
    state: MeshState,
    stop: threading.Event,
    metrics: GatewayMetrics,
    on_reload: Callable[[], None],
) -> None:
    """Reload contracts and policy files when they change, every second; ``on_reload``
    after each change."""
    while not stop.wait(RELOAD_INTERVAL_SECONDS):
        try:
            if state.refresh():
                on_reload()
        except Exception:  # a reload must never take the server down
            metrics.reload_failures.inc()
            log.exception("reload_failed")


def _settle_garbage_collector() -> None:
    """Move everything loaded at startup (modules, the catalog, policies) out of the
    collector's sight, so that the collections planning triggers only walk what queries
    allocate. Thresholds stay at their defaults: syntax trees are cyclic garbage, and
    collecting less often let abandoned plans of long statements pin memory."""
    gc.collect()
    gc.freeze()
