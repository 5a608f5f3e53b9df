"""Metrics read at scrape time from the running gateway: running and queued queries, the
engine's memory and spill, node reachability, policy and contract problems."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.catalog.state import MeshState
from gateway.mesh.federation import NodeDirectory

log = structlog.get_logger("meshgate.metrics")

#: (running, queued) queries of each resource group
GroupCounts = Callable[[], Mapping[str, tuple[int, int]]]


class LiveCollector(Collector):
    """Collects, at each scrape, what the gateway is doing now."""

    def __init__(
        self,
        state: MeshState,
        nodes: NodeDirectory | None = None,
        groups: GroupCounts | None = None,
    ) -> None:
        """``nodes``: the domain nodes in mesh mode; ``groups``: the workload's counts."""
        self.state = state
        self.nodes = nodes
        self.groups = groups

    def collect(self) -> Iterator[Metric]:
        yield from self._groups()
        yield from self._engine()
        yield from self._nodes()
        yield from self._governance()

    def _groups(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "meshgate_queries_running", "Queries running now, by resource group", labels=["group"]
        )
        queued = GaugeMetricFamily(
            "meshgate_queries_queued",
            "Queries waiting for a slot now, by resource group",
            labels=["group"],
        )
        for group, (now_running, now_queued) in sorted((self.groups or dict)().items()):
            running.add_metric([group], now_running)
            queued.add_metric([group], now_queued)
        yield running
        yield queued

    def _engine(self) -> Iterator[Metric]:
        engine = self.state.current.catalog.engine
        try:
            memory, temporary = engine.memory_usage()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer with what it has
            log.warning("metrics_engine_memory_unavailable", error=type(exc).__name__)
        else:
            yield GaugeMetricFamily(
                "meshgate_engine_memory_bytes",
                "Memory DuckDB holds now (duckdb_memory(), all tags)",
                value=memory,
            )
            yield GaugeMetricFamily(
                "meshgate_engine_temporary_storage_bytes",
                "Temporary storage DuckDB holds now (duckdb_memory(), all tags)",
                value=temporary,
            )
        yield GaugeMetricFamily(
            "meshgate_engine_spill_bytes",
            "Bytes in the engine's spill directory now",
            value=engine.spill_bytes(),
        )

    def _nodes(self) -> Iterator[Metric]:
        if self.nodes is None:
            return
        up = GaugeMetricFamily(
            "meshgate_node_up",
            "Whether a domain node replica answers its health check (1) or not (0)",
            labels=["domain", "location"],
        )
        for domain in self.nodes.domains:
            for replica in self.nodes.health(domain):
                up.add_metric([domain, replica["location"]], 1 if replica["reachable"] else 0)
        yield up

    def _governance(self) -> Iterator[Metric]:
        policies = self.state.policies
        yield GaugeMetricFamily(
            "meshgate_policy_files_rejected",
            "Policy files rejected now (their last good version, or none, is in force)",
            value=len(policies.errors),
        )
        yield CounterMetricFamily(
            "meshgate_policy_reload_failures",
            "Policy file loads rejected since start (a broken file counted once per change)",
            value=policies.rejections,
        )
        yield GaugeMetricFamily(
            "meshgate_catalog_problems",
            "Contracts not served now (invalid, or not matching their data)",
            value=len(self.state.current.catalog.problems),
        )
