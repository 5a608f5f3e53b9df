"""The ``/metrics`` endpoint: prometheus_client's own HTTP server on a thread."""

from __future__ import annotations

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from gateway.errors import ConfigError


class MetricsServer:
    """Serves ``registry`` over HTTP at ``http://host:port/metrics`` until ``close``."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        """``port`` 0 picks a free one (``self.port`` says which)."""
        try:
            self._httpd, self._thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose another "
                "`metrics.port` in mesh.toml, or 0 for a free one"
            ) from exc
        self.host = host

    @property
    def port(self) -> int:
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
