"""What the gateway records of each query attempt, on top of ``AuditLog``.

``AuditRecorder`` writes the records; ``NullAuditRecorder`` (a service run without an
audit log, as in some tests) records nothing, so callers never check whether there is a
log. Every begin record gets its end: from the executor's stream, from the domain node's
reports for endpoints a client fetches there (``placed``), or here when the executor
failed before its stream could say.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from gateway.audit.log import AuditLog, encode_json, encode_members, monotonic_ms
from gateway.engine.streaming import StreamStats, closed_outcome
from gateway.errors import AccessDenied, MeshgateError, QueryRefused, UnknownObject
from gateway.memo import held_bytes

if TYPE_CHECKING:
    import pyarrow as pa

    from gateway.engine.streaming import PlannedQuery
    from gateway.metrics.registry import GatewayMetrics
    from gateway.security.principal import Principal

Finish = Callable[["StreamStats", str, "str | None"], None]
"""Records a query's end: ``finish(stats, outcome, error)``."""

Opened = tuple["pa.Schema", Iterator["pa.RecordBatch"]]
_Endpoint = TypeVar("_Endpoint")


def _no_finish(stats: StreamStats, outcome: str, error: str | None) -> None:
    return None


class AuditRecorder:
    """Records refusals, and the begin and end of every query, in an ``AuditLog`` (and
    counts them in ``metrics``: the one place query metrics are fed from)."""

    def __init__(self, log: AuditLog, metrics: GatewayMetrics | None = None) -> None:
        self._log = log
        self._metrics = metrics
        self._encoded = _EncodedParts()

    def refusal(self, principal: Principal, text: str, exc: MeshgateError) -> None:
        """Record that ``text`` was refused (denied, refused or failed) before running."""
        decision = _decision(exc)
        self._log.record(
            "query_refused",
            query_id=self._log.new_query_id(),
            user=principal.user,
            roles=list(principal.roles),
            auth=principal.auth,
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
        _, sequence, finish = self._begun(planned, node, engine)
        return sequence, finish

    def placed(
        self,
        planned: PlannedQuery,
        place: Callable[[PlannedQuery, str, Finish], list[_Endpoint]],
        node: str,
        engine: str,
    ) -> list[_Endpoint]:
        """``place(planned, query_id, finish)``: the endpoints of ``planned`` that the
        client fetches from ``node`` (whose reports call ``finish``), handed out once the
        begin record is on disk; when they cannot be (the node is down), the end record
        says why."""
        query_id, sequence, finish = self._begun(planned, node, engine)
        self.wait_durable(sequence)
        try:
            return place(planned, query_id, finish)
        except MeshgateError as exc:
            finish(StreamStats(), "error", exc.client_message)
            raise

    def _begun(
        self, planned: PlannedQuery, node: str | None, engine: str
    ) -> tuple[str, int, Finish]:
        """``begin_deferred``, and the query's audit id."""
        audit = self._log
        query_id = audit.new_query_id()
        principal = planned.principal
        who = self._encoded.principal(principal)
        sequence = audit.append_encoded(
            "query_begin",
            f'"query_id":"{query_id}",{who},{self._encoded.statement(planned)},'
            + encode_members(
                {"parameters": len(planned.parameters), "node": node, "engine": engine}
            ),
        )
        ended_by = f'"query_id":"{query_id}","user":{encode_json(principal.user)},'
        metrics = self._metrics
        products = planned.products  # what ``finish`` holds: not the planned query (its SQL)

        def finish(stats: StreamStats, outcome: str, error: str | None) -> None:
            duration_ms = monotonic_ms(stats.started)
            audit.append_encoded(  # nobody waits for it: the rows have left already
                "query_end",
                ended_by
                + encode_members(
                    {
                        "outcome": outcome,
                        "rows": stats.rows,
                        "bytes": stats.bytes,
                        "duration_ms": duration_ms,
                        "error": error,
                        "engine_operation": stats.operation,
                        "cache": stats.cache,
                        "bytes_moved": stats.moved_bytes,
                    }
                ),
                lazily=True,
            )
            if metrics is not None:
                if stats.cache is not None:
                    metrics.result_cache(stats.cache)
                if stats.moved_bytes is not None:
                    metrics.moved(stats.moved_bytes)
                metrics.ended(
                    principal,
                    products,
                    outcome,
                    stats.rows,
                    stats.bytes,
                    duration_ms / 1000,
                )

        return query_id, sequence, finish

    def streamed(
        self, planned: PlannedQuery, open_: Callable[[Finish], Opened], engine: str = "embedded"
    ) -> Opened:
        """``open_(finish)`` (an executor's ``open``, whose stream calls ``finish`` when it
        ends) with the audit records of ``planned``: the begin record is written when
        streaming begins and is on disk before the first batch leaves (the query computes
        while it is flushed); the end record always follows. An executor that refuses the
        query when opened (Spark cannot run it exactly) leaves a refusal; one that fails to
        open (its node is down), a begin and an end with the error."""
        end = _LateFinish()
        try:
            schema, batches = open_(end)
        except MeshgateError as exc:
            if _decision(exc) == "failed":
                sequence, finish = self.begin_deferred(planned, engine=engine)
                finish(StreamStats(), "error", exc.client_message)
                self.wait_durable(sequence)
            else:
                self.refusal(planned.principal, planned.query.text, exc)
            raise
        return schema, self._audited(planned, end, batches, engine)

    def _audited(
        self,
        planned: PlannedQuery,
        end: _LateFinish,
        batches: Iterator[pa.RecordBatch],
        engine: str,
    ) -> Iterator[pa.RecordBatch]:
        stats = StreamStats()
        sequence, finish = self.begin_deferred(planned, engine=engine)
        end.bind(finish)
        outcome: str = "error"
        error: str | None = "the query failed"  # unless it ends otherwise below
        try:
            first = next(batches, None)
            self.wait_durable(sequence)
            if first is not None:
                yield first
                yield from batches
            outcome, error = "ok", None
        except GeneratorExit:
            catalog_engine = planned.catalog.engine
            limit = planned.time_limit(catalog_engine.settings.query_timeout_seconds)
            outcome, error = closed_outcome(catalog_engine.watchdog, limit)
            raise
        except MeshgateError as exc:
            error = exc.client_message
            raise
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            if not end.called:  # the executor failed before its stream could record the end
                end(stats, outcome, error)


class _LateFinish:
    """An executor's end callback whose target (the audit's end record) is bound when
    streaming begins, after the executor was opened."""

    def __init__(self) -> None:
        self._finish: Finish | None = None
        self.called = False

    def bind(self, finish: Finish) -> None:
        self._finish = finish

    def __call__(self, stats: StreamStats, outcome: str, error: str | None) -> None:
        self.called = True
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

    def _begun(
        self, planned: PlannedQuery, node: str | None, engine: str
    ) -> tuple[str, int, Finish]:
        return uuid.uuid4().hex, 0, _no_finish


def _decision(exc: MeshgateError) -> str:
    """How a statement stopped before running is recorded: denied, refused or failed."""
    if isinstance(exc, AccessDenied):
        return "denied"
    if isinstance(exc, (QueryRefused, UnknownObject)):
        return "refused"
    return "failed"


class _EncodedParts:
    """The JSON of a begin record's fields that repeat: who (per principal) and what (per
    planned statement: SQL, products, columns, masks and rules), encoded once and kept
    (bounded) while statements repeat, so a repeated statement encodes only its id, time
    and parameters count. A statement's entry is taken only for the very ``accesses`` it
    was encoded from (held, compared by identity), never for equal-looking text alone."""

    _KEPT = 512

    def __init__(self) -> None:
        self._principals: dict[tuple[object, ...], str] = {}
        self._statements: dict[tuple[object, ...], tuple[object, str]] = {}

    def principal(self, principal: Principal) -> str:
        key = (principal.user, principal.roles, principal.auth, principal.client)
        encoded = self._principals.get(key)
        if encoded is None:
            encoded = encode_members(
                {
                    "user": principal.user,
                    "roles": list(principal.roles),
                    "auth": principal.auth,
                    "client": principal.client,
                }
            )
            _bounded(self._principals, self._KEPT)[key] = encoded
        return encoded

    #: a statement whose text and governed SQL hold more than this is encoded each
    #: time (kept, its key and encoding would hold several copies of it)
    _KEPT_TEXT_BYTES = 16 * 1024

    def statement(self, planned: PlannedQuery) -> str:
        query = planned.query
        if held_bytes(query.text) + held_bytes(query.display_sql) > self._KEPT_TEXT_BYTES:
            return encode_members(_statement_fields(planned))
        key = (query.text, query.display_sql, query.explain, planned.products, id(query.accesses))
        kept = self._statements.get(key)
        if kept is not None and kept[0] is query.accesses:
            return kept[1]
        encoded = encode_members(_statement_fields(planned))
        _bounded(self._statements, self._KEPT)[key] = (query.accesses, encoded)
        return encoded


def _bounded(kept: dict, size: int) -> dict:
    """``kept``, emptied when it holds ``size`` entries (statements rarely repeat that
    many different ways; starting over is cheaper than tracking use)."""
    if len(kept) >= size:
        kept.clear()
    return kept


def _statement_fields(planned: PlannedQuery) -> dict[str, object]:
    """The fields of a begin record that follow from the planned statement alone."""
    query = planned.query
    return dict(
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
    )
