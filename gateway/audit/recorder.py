"""What the gateway records of each query attempt, on top of ``AuditLog``.

``AuditRecorder`` writes the records; ``NullAuditRecorder`` (a gateway run without an
audit log, e.g. the local ``meshgate explain`` command) records nothing, so callers never
check whether there is a log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from gateway.audit.log import AuditLog, monotonic_ms
from gateway.errors import AccessDenied, MeshgateError, QueryRefused, UnknownObject

if TYPE_CHECKING:
    import pyarrow as pa

    from gateway.engine.streaming import PlannedQuery, StreamStats
    from gateway.metrics.registry import GatewayMetrics
    from gateway.security.principal import Principal

Finish = Callable[["StreamStats", str, "str | None"], None]
"""Records a query's end: ``finish(stats, outcome, error)``."""

Opened = tuple["pa.Schema", Iterator["pa.RecordBatch"]]


def _no_finish(stats: StreamStats, outcome: str, error: str | None) -> None:
    return None


class AuditRecorder:
    """Records refusals, and the begin and end of every query, in an ``AuditLog`` (and
    counts them in ``metrics``: the one place query metrics are fed from)."""

    def __init__(self, log: AuditLog, metrics: GatewayMetrics | None = None) -> None:
        self._log = log
        self._metrics = metrics

    def refusal(self, principal: Principal, text: str, exc: MeshgateError) -> None:
        """Record that ``text`` was refused (denied, refused or failed) before running."""
        if isinstance(exc, AccessDenied):
            decision = "denied"
        elif isinstance(exc, (QueryRefused, UnknownObject)):
            decision = "refused"
        else:
            decision = "failed"
        self._log.record(
            "query_refused",
            query_id=self._log.new_query_id(),
            user=principal.user,
            roles=list(principal.roles),
            client=principal.client,
            sql=text,
            decision=decision,
            error=exc.client_message,
            reason=getattr(exc, "reason", None),
        )
        if self._metrics is not None:
            self._metrics.refused(principal, decision)

    def begin(
        self, planned: PlannedQuery, node: str | None = None, engine: str = "embedded"
    ) -> Finish:
        """Record (durably) that ``planned`` starts; return the callback that records its end."""
        sequence, finish = self.begin_deferred(planned, node, engine)
        self.wait_durable(sequence)
        return finish

    def wait_durable(self, sequence: int) -> None:
        """Wait until the record numbered ``sequence`` is on disk."""
        self._log.wait_durable(sequence)

    def begin_deferred(
        self, planned: PlannedQuery, node: str | None = None, engine: str = "embedded"
    ) -> tuple[int, Finish]:
        """Append the begin record of ``planned`` (run by the executor named ``engine``)
        without waiting for the disk; return its sequence number (for ``wait_durable``) and
        the callback that appends its end."""
        audit = self._log
        query_id = audit.new_query_id()
        sequence = audit.append(
            "query_begin", query_id=query_id, **_begin_fields(planned, node), engine=engine
        )

        metrics = self._metrics

        def finish(stats: StreamStats, outcome: str, error: str | None) -> None:
            duration_ms = monotonic_ms(stats.started)
            audit.append_lazily(  # nobody waits for it: the rows have left already
                "query_end",
                query_id=query_id,
                user=planned.principal.user,
                outcome=outcome,
                rows=stats.rows,
                bytes=stats.bytes,
                duration_ms=duration_ms,
                error=error,
                engine_operation=stats.operation,
            )
            if metrics is not None:
                metrics.ended(
                    planned.principal,
                    planned.products,
                    outcome,
                    stats.rows,
                    stats.bytes,
                    duration_ms / 1000,
                )

        return sequence, finish

    def streamed(
        self, planned: PlannedQuery, open_: Callable[[Finish], Opened], engine: str = "embedded"
    ) -> Opened:
        """``open_(finish)`` (an executor's ``open``, whose stream calls ``finish`` when it
        ends) with the audit records of ``planned``: the begin record is written when
        streaming begins and is on disk before the first batch leaves (the query computes
        while it is flushed); the end record always follows."""
        end = _LateFinish()
        schema, batches = open_(end)
        return schema, self._audited(planned, end, batches, engine)

    def _audited(
        self,
        planned: PlannedQuery,
        end: _LateFinish,
        batches: Iterator[pa.RecordBatch],
        engine: str,
    ) -> Iterator[pa.RecordBatch]:
        sequence, finish = self.begin_deferred(planned, engine=engine)
        end.bind(finish)
        try:
            first = next(batches, None)
            self.wait_durable(sequence)
            if first is not None:
                yield first
                yield from batches
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()


class _LateFinish:
    """An executor's end callback whose target (the audit's end record) is bound when
    streaming begins, after the executor was opened."""

    def __init__(self) -> None:
        self._finish: Finish | None = None

    def bind(self, finish: Finish) -> None:
        self._finish = finish

    def __call__(self, stats: StreamStats, outcome: str, error: str | None) -> None:
        if self._finish is not None:
            self._finish(stats, outcome, error)


class NullAuditRecorder(AuditRecorder):
    """Records nothing (no audit log configured)."""

    def __init__(self) -> None:
        pass

    def refusal(self, principal: Principal, text: str, exc: MeshgateError) -> None:
        return None

    def wait_durable(self, sequence: int) -> None:
        return None

    def begin_deferred(
        self, planned: PlannedQuery, node: str | None = None, engine: str = "embedded"
    ) -> tuple[int, Finish]:
        return 0, _no_finish


def _begin_fields(planned: PlannedQuery, node: str | None) -> dict[str, object]:
    """The fields of a ``query_begin`` record: who, what SQL, which products, columns,
    masks and rules."""
    query = planned.query
    return dict(
        user=planned.principal.user,
        roles=list(planned.principal.roles),
        client=planned.principal.client,
        sql=query.text,
        governed_sql=query.display_sql,
        explain=query.explain,
        products=list(planned.products),
        columns={
            key: {
                "visible": [c.name for c in access.visible_columns],
                "masked": {c.name: c.mask.spec for c in access.visible_columns if c.mask},
                "row_filter": access.row_filter is not None,
            }
            for key, access in query.accesses.items()
        },
        rules=[reason for access in query.accesses.values() for reason in access.reasons]
        + [r for a in query.accesses.values() for c in a.columns for r in c.reasons],
        decision="allowed",
        parameters=len(planned.parameters),
        node=node,
    )
