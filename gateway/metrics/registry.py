"""The gateway's Prometheus metrics, in a registry of its own (several gateways in one
process never share a series).

Query metrics are fed from one place, the audit recorder (``gateway.audit.recorder``),
which sees every attempt: refused before running, or begun and ended. Labels are bounded:
outcomes and resource groups are fixed sets, products come from the catalog; never a user
name, a statement or an error text.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from gateway.security.principal import Principal

#: The outcome label of a query that ran, from its audit outcome (anything else: failed).
_ENDED = {
    "ok": "ok",
    "error": "failed",
    "memory": "failed",
    "timeout": "timeout",
    "cancelled": "cancelled",
    "disconnected": "cancelled",
    "shutdown": "cancelled",
}
#: ... and of an attempt refused before running, from its audit decision.
_REFUSED = {"denied": "denied", "refused": "refused", "failed": "failed"}

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DEFAULT_GROUP = "default"
#: What a query takes a slot for (``gateway.workload``): to be planned, then to run.
PHASES = ("planning", "running")


def ended_outcome(outcome: str) -> str:
    """The metrics' outcome of a query that ran and ended with audit ``outcome``."""
    return _ENDED.get(outcome, "failed")


class GatewayMetrics:
    """Counters and histograms of one gateway; ``registry`` is what ``/metrics`` serves.

    ``group_of`` names the resource group a principal's queries run in (the workload's
    classification); until one is set, every query is in ``default``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.group_of: Callable[[Principal], str] = lambda principal: DEFAULT_GROUP
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        registry = self.registry
        self.queries = Counter(
            "meshgate_queries",
            "Query attempts by outcome (ok, denied, refused, failed, timeout, cancelled) "
            "and resource group",
            ["outcome", "group"],
            registry=registry,
        )
        self.product_queries = Counter(
            "meshgate_product_queries",
            "Queries that ran and read a product, by product and outcome",
            ["product", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "meshgate_query_duration_seconds",
            "Time from a query's start to its end, by resource group",
            ["group"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "meshgate_queue_wait_seconds",
            "Time a query waited in its resource group's queue for a slot to be planned or "
            "to run (phase), 0 when one was free; also a wait that ended in a refusal",
            ["group", "phase"],
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.rows = Counter(
            "meshgate_result_rows", "Rows sent to clients", ["group"], registry=registry
        )
        self.bytes = Counter(
            "meshgate_result_bytes",
            "Bytes of Arrow data sent to clients",
            ["group"],
            registry=registry,
        )
        self.refused_logins = Counter(
            "meshgate_refused_logins",
            "Logins refused (wrong credentials, unknown user, lockout, malformed)",
            registry=registry,
        )
        self.refused_tokens = Counter(
            "meshgate_refused_tokens",
            "Calls refused for their bearer token (missing, unknown, revoked, expired)",
            registry=registry,
        )
        self.reload_failures = Counter(
            "meshgate_reload_failures",
            "Reloads of contracts and policies that failed with an unexpected error",
            registry=registry,
        )
        self.admin_cancels = Counter(
            "meshgate_admin_cancels",
            "Queries an admin cancelled (meshgate cancel)",
            registry=registry,
        )
        self.result_cache_lookups = Counter(
            "meshgate_result_cache",
            "Cacheable queries answered from the result cache (hit) or computed (miss)",
            ["result"],
            registry=registry,
        )
        for result in ("hit", "miss"):
            self.result_cache_lookups.labels(result)
        self.bytes_moved = Counter(
            "meshgate_federated_bytes_moved",
            "Arrow bytes domain nodes sent to the gateway for federated queries' fragments",
            registry=registry,
        )
        self.result_cache_bytes = Gauge(
            "meshgate_result_cache_bytes",
            "Bytes of results the result cache holds (bounded by [cache] max_bytes)",
            registry=registry,
        )
        self.accelerated_bytes = Gauge(
            "meshgate_accelerated_bytes",
            "Memory the accelerated products' in-memory copies take (bounded by [engine] "
            "accelerate_memory_bytes)",
            registry=registry,
        )
        ProcessCollector(namespace="meshgate", registry=registry)

    def prepare(self, groups: Iterable[str]) -> None:
        """Expose every outcome and per-group series of ``groups`` at 0 from the start, so
        that rates and alerts see the first query of each."""
        for group in groups:
            for outcome in sorted({*_ENDED.values(), *_REFUSED.values()}):
                self.queries.labels(outcome, group)
            self.duration.labels(group)
            for phase in PHASES:
                self.queue_wait.labels(group, phase)
            self.rows.labels(group)
            self.bytes.labels(group)

    def forget_products(self, served: Collection[str]) -> None:
        """Remove the series of products no longer ``served`` (after a reload): a product
        renamed or withdrawn leaves no series behind for ever."""
        gone = [
            key
            for key in list(self._children)
            if key[0] is self.product_queries and key[1][0] not in served
        ]
        for key in gone:
            self._children.pop(key, None)
            self.product_queries.remove(*key[1])

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: label sets are bounded (see above; a
        product's series go with it, ``forget_products``), so a repeated query looks its
        series up in one dict instead of validating and hashing its labels again."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def refused(self, principal: Principal, decision: str) -> None:
        """An attempt refused before it ran, with its audit ``decision``."""
        outcome = _REFUSED.get(decision, "failed")
        self._child(self.queries, outcome, self.group_of(principal)).inc()

    def ended(
        self,
        principal: Principal,
        products: Iterable[str],
        outcome: str,
        rows: int,
        bytes_: int,
        seconds: float,
    ) -> None:
        """A query that ran ended with audit ``outcome`` after ``seconds``, having sent
        ``rows`` rows of ``bytes_`` bytes."""
        group = self.group_of(principal)
        label = ended_outcome(outcome)
        child = self._child
        child(self.queries, label, group).inc()
        for product in products:
            child(self.product_queries, product, label).inc()
        child(self.duration, group).observe(seconds)
        child(self.rows, group).inc(rows)
        child(self.bytes, group).inc(bytes_)

    def moved(self, nbytes: int) -> None:
        """A federated query ended, its fragments having moved ``nbytes`` from the nodes."""
        self.bytes_moved.inc(nbytes)

    def result_cache(self, result: str) -> None:
        """A cacheable query was answered from the result cache (``hit``) or computed
        (``miss``)."""
        self._child(self.result_cache_lookups, result).inc()

    def waited(self, group: str, phase: str, seconds: float) -> None:
        """A query of ``group`` took a slot for ``phase`` (or gave up) after ``seconds``
        in the queue."""
        self._child(self.queue_wait, group, phase).observe(seconds)
