"""Operator actions over Flight: list and cancel the gateway's running and queued queries
(``meshgate top`` and ``meshgate cancel``), for admins only.

An admin is a user with one of ``[gateway] admin_roles``. Anyone else gets
PERMISSION_DENIED and nothing of anybody's queries; the refusal is audited, and so is
every cancel (who cancelled whose query).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from gateway.audit.log import AuditLog
from gateway.errors import HandleNotFound, InvalidQuery, QueryRefused
from gateway.metrics.registry import GatewayMetrics
from gateway.security.principal import Principal
from gateway.workload.scheduler import Activity, Workload

ACTION_LIST_QUERIES = "meshgate.list_queries"
ACTION_CANCEL_QUERY = "meshgate.cancel_query"
DESCRIPTIONS = {
    ACTION_LIST_QUERIES: "Running and queued queries of every user (admins only)",
    ACTION_CANCEL_QUERY: 'Cancel a query: {"query_id": "..."} (admins only)',
}


class AdminOnly(QueryRefused):
    """An operator action asked by a user who is not an admin."""


class OperatorActions:
    """Answers the operator actions of one gateway."""

    def __init__(
        self,
        workload: Workload,
        admin_roles: Iterable[str],
        audit: AuditLog | None = None,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._workload = workload
        self._admin_roles = frozenset(admin_roles)
        self._audit = audit
        self._metrics = metrics
        self._clock = clock

    def answer(self, principal: Principal, action: str, body: bytes) -> bytes:
        """The JSON answer to ``action`` (one of ``DESCRIPTIONS``)."""
        self._require_admin(principal, action)
        if action == ACTION_LIST_QUERIES:
            return _json(self.list_queries())
        return _json(self.cancel(principal, _query_id(body)))

    def list_queries(self) -> dict[str, object]:
        """Every running and queued query, oldest first, and each group's counts."""
        now = self._clock()
        return {
            "queries": [_shown(activity, now) for activity in self._workload.activity()],
            "groups": {
                group: {"running": running, "queued": queued}
                for group, (running, queued) in self._workload.counts().items()
            },
        }

    def cancel(self, principal: Principal, query_id: str) -> dict[str, object]:
        """Cancel ``query_id`` and audit who cancelled whose query; HandleNotFound when
        no such query runs or waits (it may have just ended)."""
        target = next((a for a in self._workload.activity() if a.query_id == query_id), None)
        if target is None or not self._workload.cancel(query_id):
            raise HandleNotFound(f"no running or queued query {query_id!r}; it may have ended")
        if self._audit is not None:
            self._audit.record(
                "query_cancelled_by_admin",
                user=principal.user,
                roles=list(principal.roles),
                client=principal.client,
                query_id=query_id,
                query_user=target.user,
                group=target.group,
                state=target.state,
                sql=target.statement,
            )
        if self._metrics is not None:
            self._metrics.admin_cancels.inc()
        return {"query_id": query_id, "cancelled": True, "user": target.user, "group": target.group}

    def _require_admin(self, principal: Principal, action: str) -> None:
        if not self._admin_roles.isdisjoint(principal.roles):
            return
        if self._audit is not None:
            self._audit.record(
                "admin_action_refused",
                user=principal.user,
                roles=list(principal.roles),
                client=principal.client,
                action=action,
            )
        raise AdminOnly(
            f"{action} is for admins (a role among {', '.join(sorted(self._admin_roles))}, "
            "[gateway] admin_roles)"
        )


def _shown(activity: Activity, now: datetime) -> dict[str, object]:
    return {
        "query_id": activity.query_id,
        "user": activity.user,
        "group": activity.group,
        "state": activity.state,
        "engine": activity.engine,
        "started": activity.started.isoformat(),
        "elapsed_seconds": round(max(0.0, (now - activity.started).total_seconds()), 3),
        "statement": activity.statement,
    }


def _query_id(body: bytes) -> str:
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = None
    query_id = request.get("query_id") if isinstance(request, dict) else None
    if not isinstance(query_id, str) or not query_id:
        raise InvalidQuery(f'{ACTION_CANCEL_QUERY} takes {{"query_id": "<id>"}} as its body')
    return query_id


def _json(answer: dict[str, object]) -> bytes:
    return json.dumps(answer).encode("utf-8")
