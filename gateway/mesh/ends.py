"""How a query served straight from a domain node gets its audit end record.

A client that follows a node ticket's locations fetches the rows from the node: the gateway
sees none of them. So each ticket the gateway seals for such a query carries an
``AuditTag`` (the gateway process, the query's audit id, which endpoint of how many), and
the node reports what happened to it:

- the node keeps an ``EndOutbox``: per gateway process, the tickets it is streaming (rows
  and bytes so far) and those that ended (rows, bytes, start, duration, outcome, error);
- the gateway's ``EndCollector`` asks each replica of a domain with pending queries for
  its reports (the node's ``ends`` action, answered only to a control ticket sealed by
  the gateway) a few times a second, and writes one end record per query when all its
  endpoints are reported: rows and bytes summed, the duration from the first start to the
  last end, the first failure's outcome and error.

Reports are pulled from the locations the gateway knows for a domain and accepted only for
queries it placed on that domain: a node can report nothing of another domain's queries,
nor of queries it was never given. A replica that stops answering (its process gone) or
comes back as another process fails the endpoints it was streaming, with an error naming
its domain; endpoints never reported by the time their tickets expired end the query as
``incomplete``, and so do the queries still pending when the gateway shuts down. A
proxy-mode fetch that fails in the gateway is reported by the gateway's relay
(``EndCollector.failed``). The first report of an endpoint counts.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from gateway.engine.streaming import StreamStats
from gateway.errors import Unavailable
from gateway.mesh.tickets import AuditTag

if TYPE_CHECKING:
    from gateway.audit.recorder import Finish

log = structlog.get_logger("meshgate.ends")

#: How often the gateway asks the nodes of pending queries for their reports.
POLL_SECONDS = 0.2
#: After its tickets expired, how long a query waits for reports still on their way.
EXPIRY_GRACE_SECONDS = 2.0
#: Reports and pending queries kept at most (the oldest go first).
MAX_KEPT = 100_000
#: A report nobody collected is forgotten after this (its gateway process is gone).
UNCOLLECTED_SECONDS = 3600.0


# --------------------------------------------------------------------------- node side


@dataclass
class Streaming:
    """One audited ticket a node is streaming: counted as its batches leave."""

    tag: AuditTag
    started: float = field(default_factory=time.time)
    rows: int = 0
    bytes: int = 0
    _clock: float = field(default_factory=time.perf_counter, repr=False)

    def report(self, outcome: str | None = None, error: str | None = None) -> dict[str, object]:
        answer: dict[str, object] = {
            "query": self.tag.query_id,
            "part": self.tag.part,
            "rows": self.rows,
            "bytes": self.bytes,
            "started": self.started,
        }
        if outcome is not None:
            answer.update(
                outcome=outcome,
                error=error,
                duration_ms=round((time.perf_counter() - self._clock) * 1000, 3),
            )
        return answer


class Tracker:
    """One audited ticket on a node: streaming from its first batch on (a stream that never
    starts is never reported streaming), reported when it ends."""

    def __init__(self, outbox: EndOutbox, tag: AuditTag) -> None:
        self._outbox = outbox
        self._tag = tag
        self._streaming: Streaming | None = None

    def started(self) -> None:
        self._streaming = self._outbox.start(self._tag)

    def count(self, rows: int, size: int) -> None:
        if self._streaming is not None:
            self._streaming.rows += rows
            self._streaming.bytes += size

    def ended(self, outcome: str, error: str | None) -> None:
        if self._streaming is not None:
            self._outbox.end(self._streaming, outcome, error)
        else:  # failed before streaming (its SQL could not be bound, its policy changed)
            self._outbox.failed(self._tag, outcome, error)


class EndOutbox:
    """A node's reports for the gateway processes that placed its audited tickets."""

    def __init__(self) -> None:
        self.instance = uuid.uuid4().hex  # this node process (a restart is another one)
        self._streaming: dict[int, Streaming] = {}
        self._ended: dict[str, list[tuple[float, dict[str, object]]]] = {}
        self._lock = threading.Lock()

    def start(self, tag: AuditTag) -> Streaming:
        streaming = Streaming(tag)
        with self._lock:
            self._streaming[id(streaming)] = streaming
        return streaming

    def end(self, streaming: Streaming, outcome: str, error: str | None) -> None:
        """``streaming`` ended (once: a second call is ignored)."""
        with self._lock:
            if self._streaming.pop(id(streaming), None) is None:
                return
            self._keep(streaming.tag.gateway, streaming.report(outcome, error))

    def tracker(self, tag: AuditTag) -> Tracker:
        return Tracker(self, tag)

    def failed(self, tag: AuditTag, outcome: str, error: str | None) -> None:
        """A ticket of ``tag`` ended before streaming (refused, or its SQL failed)."""
        with self._lock:
            self._keep(tag.gateway, Streaming(tag).report(outcome, error))

    def _keep(self, gateway: str, report: dict[str, object]) -> None:
        """Under the lock: keep ``report`` for ``gateway``; forget what no gateway
        collected for a long time (its process is gone) and the oldest past the bound."""
        now = time.monotonic()
        self._ended.setdefault(gateway, []).append((now, report))
        for key, kept in list(self._ended.items()):
            if len(kept) > MAX_KEPT or now - kept[0][0] > UNCOLLECTED_SECONDS:
                fresh = [k for k in kept[-MAX_KEPT:] if now - k[0] <= UNCOLLECTED_SECONDS]
                if fresh:
                    self._ended[key] = fresh
                else:
                    del self._ended[key]

    def uncollected(self) -> int:
        """End reports no gateway has collected yet."""
        with self._lock:
            return sum(len(kept) for kept in self._ended.values())

    def drain(self, gateway: str) -> dict[str, object]:
        """What ``gateway`` collects: this process, its tickets streaming now, and those
        that ended since it last asked (handed over once)."""
        with self._lock:
            ended = [report for _, report in self._ended.pop(gateway, [])]
            streaming = [s.report() for s in self._streaming.values() if s.tag.gateway == gateway]
        return {"instance": self.instance, "streaming": streaming, "ended": ended}


# --------------------------------------------------------------------------- gateway side


@dataclass
class _Pending:
    """A placed query waiting for its endpoints' reports."""

    domain: str
    parts: int
    finish: Finish
    expires: float  # monotonic: when its tickets expire
    ended: dict[int, dict[str, object]] = field(default_factory=dict)
    #: part -> (location, last report) of the endpoints seen streaming
    streaming: dict[int, tuple[str, dict[str, object]]] = field(default_factory=dict)

    def end(self, part: int, report: dict[str, object]) -> None:
        if 0 <= part < self.parts and part not in self.ended:
            self.ended[part] = report
            self.streaming.pop(part, None)

    @property
    def complete(self) -> bool:
        return len(self.ended) == self.parts


Ask = Callable[[str, str], Mapping[str, object]]
"""``ask(domain, location)``: that replica's ``ends`` answer for this gateway process;
ReplicaSilent when it does not answer."""


class ReplicaSilent(Unavailable):
    """A node replica did not answer for its reports; ``gone``: its process is gone (the
    connection is refused), not merely slow or erring."""

    def __init__(self, message: str, gone: bool) -> None:
        super().__init__(message)
        self.gone = gone


class EndCollector:
    """The gateway's side: pending placed queries, completed from their nodes' reports."""

    def __init__(
        self,
        locations: Callable[[str], tuple[str, ...]],
        ask: Ask,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        """``locations(domain)``: its replicas; ``ask``: one replica's answer (or
        ReplicaSilent)."""
        self.gateway = uuid.uuid4().hex  # this process: whose reports the nodes keep apart
        self._locations = locations
        self._ask = ask
        self._poll = poll_seconds
        self._pending: dict[str, _Pending] = {}
        self._instances: dict[str, str] = {}  # location -> the node process last seen there
        self._changed = threading.Condition()
        self._round = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False

    def tag(self, query_id: str, part: int, parts: int) -> AuditTag:
        return AuditTag(self.gateway, query_id, part, parts)

    def expect(
        self, query_id: str, domain: str, parts: int, finish: Finish, expires_in: float
    ) -> None:
        """Wait for ``parts`` reports of ``query_id`` from ``domain``'s node, then call
        ``finish``; endpoints not reported ``expires_in`` seconds from now (when its
        tickets expire) and a grace end the query incomplete."""
        pending = _Pending(domain, parts, finish, time.monotonic() + expires_in)
        with self._changed:
            self._pending[query_id] = pending
            overflow = list(self._pending)[: max(0, len(self._pending) - MAX_KEPT)]
            dropped = [(q, self._pending.pop(q)) for q in overflow]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="meshgate-node-ends", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()
        for query_id_, dropped_pending in dropped:
            _finish(dropped_pending, "too many queries were waiting for their nodes' reports")
            log.warning("end_report_dropped", query_id=query_id_)

    def failed(self, tag: AuditTag, domain: str, error: str) -> None:
        """The gateway itself saw endpoint ``tag`` fail (proxy mode: relaying it)."""
        with self._changed:
            pending = self._pending.get(tag.query_id)
            if pending is None or pending.domain != domain:
                return
            pending.end(tag.part, {"outcome": "error", "error": error, "rows": 0, "bytes": 0})
            done = self._take_complete()
        for pending in done:
            _finish(pending)

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._pending)

    def close(self) -> None:
        """At shutdown: stop the collecting thread, collect once more, then end every query
        still pending (this process will not hear of it again) as incomplete; nothing is
        recorded after this returns (the audit log closes next)."""
        with self._changed:
            self._closing = True
            thread = self._thread
            self._changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._collect_all()
        with self._changed:
            left = list(self._pending.values())
            self._pending.clear()
        for pending in left:
            missing = pending.parts - len(pending.ended)
            _finish(
                pending,
                f"the gateway stopped before domain {pending.domain}'s node reported the end "
                f"of {missing} of {pending.parts} endpoint(s)",
            )

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._pending or self._closing:
                    self._thread = None
                    return
            self._collect_all()
            self._expire()
            with self._changed:
                self._changed.wait(self._poll)

    def _collect_all(self) -> None:
        """Collect from every replica of the domains with pending queries (one round at a
        time: what one round drained, another must not take for lost)."""
        with self._round:
            with self._changed:
                domains = sorted({p.domain for p in self._pending.values()})
            for domain in domains:
                for location in self._locations(domain):
                    self._collect(domain, location)

    def _collect(self, domain: str, location: str) -> None:
        try:
            answer = self._ask(domain, location)
        except ReplicaSilent as exc:
            if exc.gone:
                self._lost(domain, location, "stopped")
            return
        instance = str(answer.get("instance", ""))
        if self._instances.get(location, instance) != instance:
            self._lost(domain, location, "restarted")  # what the old process streamed is lost
        self._instances[location] = instance
        with self._changed:
            for raw in _reports(answer.get("ended")):
                pending = self._pending.get(str(raw.get("query")))
                if pending is None:  # ended already (expired, or failed by the relay)
                    log.info("end_report_late", domain=domain, location=location)
                elif pending.domain != domain:  # never placed there: refused, whatever it says
                    log.warning("end_report_refused", domain=domain, location=location)
                else:
                    pending.end(_part(raw), raw)
            seen: set[tuple[str, int]] = set()
            for raw in _reports(answer.get("streaming")):
                pending = self._pending.get(str(raw.get("query")))
                if pending is not None and pending.domain == domain:
                    part = _part(raw)
                    seen.add((str(raw.get("query")), part))
                    if part not in pending.ended:
                        pending.streaming[part] = (location, raw)
            # streaming at the last look, neither streaming nor ended now: lost by the node
            for query_id, pending in self._pending.items():
                for part, (where, last) in list(pending.streaming.items()):
                    if where == location and (query_id, part) not in seen:
                        error = f"domain {domain}'s node lost track of the stream; the query failed"
                        pending.end(part, {**last, "outcome": "error", "error": error})
            done = self._take_complete()
        for pending in done:
            _finish(pending)

    def _lost(self, domain: str, location: str, why: str) -> None:
        """Every endpoint ``location`` was streaming failed with it (with the rows and
        bytes of its last report, and its time until now)."""
        error = f"domain {domain}'s node stopped while streaming; the query failed"
        now = time.time()
        with self._changed:
            for pending in self._pending.values():
                for part, (where, last) in list(pending.streaming.items()):
                    if where == location:
                        took = max(0.0, now - _number(last, "started")) * 1000
                        failure = {"outcome": "error", "error": error, "duration_ms": took}
                        pending.end(part, {**last, **failure})
            done = self._take_complete()
        if done:
            log.warning("node_lost_streams", domain=domain, location=location, why=why)
        for pending in done:
            _finish(pending)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._changed:
            late = [
                q
                for q, p in self._pending.items()
                if now > p.expires + EXPIRY_GRACE_SECONDS and not p.streaming
            ]
            expired = [self._pending.pop(q) for q in late]
        for pending in expired:
            missing = pending.parts - len(pending.ended)
            _finish(
                pending,
                f"{missing} of {pending.parts} endpoint(s) of domain {pending.domain}'s node "
                "reported no end: never fetched before their tickets expired, or the node stopped",
            )

    def _take_complete(self) -> list[_Pending]:
        """Under the lock: remove and return the queries whose every endpoint is reported."""
        done = [q for q, p in self._pending.items() if p.complete]
        return [self._pending.pop(q) for q in done]


def _reports(raw: object) -> list[dict[str, object]]:
    return [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []


def _part(raw: Mapping[str, object]) -> int:
    part = raw.get("part")
    return part if isinstance(part, int) else -1


def _number(raw: Mapping[str, object], key: str) -> float:
    value = raw.get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


_CONSEQUENCES = ("cancelled", "disconnected")


def _consequence(report: Mapping[str, object]) -> bool:
    """Whether an endpoint's outcome may be the consequence of another's failure."""
    return report.get("outcome") in _CONSEQUENCES


def _finish(pending: _Pending, missing: str | None = None) -> None:
    """``pending``'s end record: rows and bytes summed over its endpoints, the time from
    the first start to the last end, the first failure (by endpoint, a cause before a
    cancel or disconnect) or ``missing``."""
    reports = [pending.ended[part] for part in sorted(pending.ended)]
    stats = StreamStats(
        rows=int(sum(_number(r, "rows") for r in reports)),
        bytes=int(sum(_number(r, "bytes") for r in reports)),
    )
    timed = [r for r in reports if "started" in r and "duration_ms" in r]
    if timed:
        first = min(_number(r, "started") for r in timed)
        last = max(_number(r, "started") + _number(r, "duration_ms") / 1000 for r in timed)
        stats.started = time.perf_counter() - (last - first)  # the recorder measures from here
    failures = [r for r in reports if r.get("outcome") != "ok"]
    # the cause before its consequences: a client stops fetching the other endpoints
    # (cancelled, disconnected) when one fails
    failed = min(failures, key=_consequence, default=None)
    if failed is not None:
        outcome, error = str(failed.get("outcome")), failed.get("error")
    elif missing is not None:
        outcome, error = "incomplete", missing
    else:
        outcome, error = "ok", None
    try:
        pending.finish(stats, outcome, None if error is None else str(error))
    except Exception:  # e.g. the audit log closed at shutdown: never kill the collector
        log.exception("end_record_failed", domain=pending.domain)
