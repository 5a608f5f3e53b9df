"""A domain node: serves one domain's products from that domain's data, only to sealed
tickets issued by the gateway (``meshgate node DIR --domain D``).

A node never accepts SQL from a client. It ignores bearer tokens (the ADBC driver
forwards the client's token to every location) and trusts only the ticket, which the
gateway sealed after authorizing and rewriting the query. Tampered, foreign-domain,
expired and replayed tickets are refused with UNAUTHENTICATED and audited. The ``health``,
``stats`` and ``ends`` actions answer only a control ticket sealed by the gateway (product
names, validation problems, traffic counters and end reports are nobody else's business).
Each ticket's begin and end are in the node's own audit log; the end of a ticket the
gateway placed for a client to fetch here is also reported to that gateway (``ends``:
``gateway.mesh.ends``), which writes the query's end record.

A node loads its domain's contracts and the policy files that govern them (the global file
and its domain's) and reloads them every second, as the gateway does. Before honouring a
ticket it decides again, for the ticket's user and products, with the policy in force, and
refuses the ticket if a decision differs from the one it was sealed under (deciding for
the principal the ticket carries: user, roles and attributes as the gateway resolved them
from mesh.toml or an identity token; a node reads no user list of its own) (a revoked grant,
another row filter or mask): a revocation ends old tickets within about a second of the
change reaching the node's files, not when they expire.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from gateway.audit.log import AuditLog, monotonic_ms
from gateway.catalog.state import RELOAD_INTERVAL_SECONDS, MeshSnapshot, MeshState
from gateway.config import MeshConfig
from gateway.engine.streaming import IPC_OPTIONS, StreamStats, opened_sql, result_schema
from gateway.errors import ConfigError, MeshgateError
from gateway.mesh.actions import ACTION_ENDS, ACTION_HEALTH, ACTION_SCHEMA, ACTION_STATS
from gateway.mesh.ends import EndOutbox, Tracker
from gateway.mesh.tickets import (
    CONTROL_PURPOSES,
    POLICY_CHANGED,
    NodeTicket,
    ReplayGuard,
    TicketError,
    TicketSealer,
    stale_products,
)
from gateway.security.auth import HandshakeAuthHandler
from gateway.signals import (
    ABANDON_CALLS_AFTER_SECONDS,
    STOPPED_QUERIES_SECONDS,
    stopped_within,
    wait_while,
)

log = structlog.get_logger("meshgate.node")


#: while stopping, after the last stream ended: how long the gateway gets to collect their
#: end reports (it polls every ``gateway.mesh.ends.POLL_SECONDS``)
_COLLECT_SECONDS = 2.0


@dataclass
class NodeCounters:
    """What a node has served and refused since it started."""

    tickets: int = 0
    rows: int = 0
    bytes: int = 0
    refused: int = 0
    collected: int = 0  # times a gateway collected the end reports
    streaming: int = 0  # tickets being opened or streamed now
    # reentrant: a stream's finalizer (``_stream_done``) may run inside a locked block
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {
                "tickets": self.tickets,
                "rows": self.rows,
                "bytes": self.bytes,
                "refused": self.refused,
                "collected": self.collected,
            }


class DomainNode(flight.FlightServerBase):
    """Arrow Flight server of one domain node."""

    def __init__(
        self, location: str, mesh_dir: Path, config: MeshConfig, domain: str, **kwargs
    ) -> None:
        if not config.nodes.ticket_key:
            raise ConfigError(
                f"{mesh_dir / 'mesh.toml'}: field `nodes.ticket_key`: missing; a node needs the gateway's ticket key"
            )
        super().__init__(location, auth_handler=HandshakeAuthHandler(), **kwargs)
        self.domain = domain
        self.state = MeshState(mesh_dir, config, frozenset({domain}))
        if not len(self.state.current.catalog):
            raise ConfigError(f"{mesh_dir / domain}: domain {domain!r} has no servable product")
        self._sealer = TicketSealer(config.nodes.ticket_key, config.nodes.ticket_ttl_seconds)
        self._replays = ReplayGuard()
        self._audit = AuditLog.from_settings(  # durable as the gateway's
            config.audit, config.audit.path(mesh_dir) / f"node-{domain}"
        )
        self.counters = NodeCounters()
        self._ends = EndOutbox()
        self._stop = threading.Event()
        #: stopping (``stop_gracefully``): new tickets refused, actions still answered
        self.draining = False
        threading.Thread(target=self._reload, name="meshgate-node-reload", daemon=True).start()

    def _reload(self) -> None:
        """Pick up changed contracts and policy files, every second (as the gateway does)."""
        while not self._stop.wait(RELOAD_INTERVAL_SECONDS):
            try:
                self.state.refresh()
            except Exception:  # a reload must never take the node down
                log.exception("reload_failed", domain=self.domain)

    def shutdown(self) -> bool:
        """Stop serving and close the audit log; False when a call could not be stopped
        (as ``Gateway.shutdown``)."""
        self._stop.set()
        stopped = stopped_within(super().shutdown, ABANDON_CALLS_AFTER_SECONDS)
        if not stopped:
            log.warning("shutdown_abandons_calls", domain=self.domain)
        self._audit.close()  # its last records fsynced, as the gateway's
        return stopped

    def stop_gracefully(self, grace_seconds: float) -> bool:
        """Refuse new tickets, let streaming ones finish for ``grace_seconds`` (then stop
        their queries), give the gateway a moment to collect their end reports, and shut
        down. Until then ``health`` answers "draining" (the gateway sends nothing new, and
        does not take the node for gone) and ``ends`` is answered. Returns ``shutdown``'s
        answer."""
        self.draining = True
        log.info("draining", domain=self.domain, streaming=self._streaming())
        wait_while(self._streaming, grace_seconds)
        if self._streaming():
            log.warning("shutdown_cancels_queries", domain=self.domain)
            self.state.watchdog.stop_all()
            wait_while(self._streaming, STOPPED_QUERIES_SECONDS)
            self.state.watchdog.close_streams()  # left: clients that stopped reading
        wait_while(lambda: self._streaming() or self._ends.uncollected(), _COLLECT_SECONDS)
        return self.shutdown()

    def _streaming(self) -> int:
        with self.counters.lock:
            return self.counters.streaming

    def _open(
        self, context: flight.ServerCallContext, raw: bytes, purpose: str
    ) -> tuple[NodeTicket, MeshSnapshot]:
        """The ticket and the snapshot (catalog, policy) it was checked against; a ticket
        that must not be honoured is refused with UNAUTHENTICATED, counted and audited."""
        snapshot = self.state.current
        ticket = None
        try:
            ticket = self._sealer.open(raw)
            if ticket.domain != self.domain:
                raise TicketError(
                    f"ticket is for domain {ticket.domain!r}, this node serves {self.domain!r}"
                )
            if ticket.purpose != purpose:
                raise TicketError(f"ticket is for {ticket.purpose!r}, not {purpose!r}")
            if purpose not in CONTROL_PURPOSES:
                subject = ticket.subject  # as the gateway resolved it (mesh.toml or a token)
                if stale_products(ticket, lambda key: snapshot.governor.access(subject, key)):
                    if ticket.audit is not None:  # the query it belongs to failed: say why
                        self._ends.failed(ticket.audit, "refused", POLICY_CHANGED)
                    raise TicketError(POLICY_CHANGED)
            self._replays.admit(ticket)
        except TicketError as exc:
            with self.counters.lock:
                self.counters.refused += 1
            fields = {"domain": self.domain, "client": context.peer(), "error": str(exc)}
            if ticket is not None and ticket.user:
                fields.update(user=ticket.user, products=list(ticket.products))
            self._audit.record("ticket_refused", **fields)
            log.warning("ticket_refused", **fields)
            raise flight.FlightUnauthenticatedError(f"ticket refused: {exc}") from None
        return ticket, snapshot

    def do_get(self, context, ticket):
        with self.counters.lock:  # counted from here: a stop waits for it (stop_gracefully)
            if self.draining:
                raise flight.FlightUnavailableError(f"the node of domain {self.domain} is stopping")
            self.counters.streaming += 1
        try:
            schema, batches = self._ticket_rows(context, ticket)
        except BaseException:
            self._stream_done()
            raise
        weakref.finalize(batches, self._stream_done)  # ended, or dropped unstarted
        return flight.GeneratorStream(schema, batches, IPC_OPTIONS)

    def _stream_done(self) -> None:
        with self.counters.lock:
            self.counters.streaming -= 1

    def _ticket_rows(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The schema and (counted) batches of the rows a sealed ticket names."""
        node_ticket, snapshot = self._open(context, ticket.ticket, "rows")
        catalog = snapshot.catalog
        begun = self._audit.append(  # on disk before the first batch leaves (see _count)
            "ticket_begin",
            domain=self.domain,
            user=node_ticket.user,
            products=list(node_ticket.products),
            client=context.peer(),
            sql=node_ticket.sql,
            parameters=len(node_ticket.parameters),
            key_sets=len(node_ticket.key_sets),
        )
        audit = node_ticket.audit
        tracker = self._ends.tracker(audit) if audit is not None else None

        def finish(stats: StreamStats, outcome: str, error: str | None) -> None:
            self._audit.append_lazily(
                "ticket_end",
                domain=self.domain,
                user=node_ticket.user,
                outcome=outcome,
                rows=stats.rows,
                bytes=stats.bytes,
                duration_ms=monotonic_ms(stats.started),
                error=error,
            )
            if tracker is not None:
                tracker.ended(outcome, error)

        try:
            schema, batches = opened_sql(  # bound once, for its schema and its run
                catalog.engine,
                node_ticket.sql,
                node_ticket.parameters,
                context.is_cancelled,
                finish,
                {name: pa.table({"key": keys}) for name, keys in node_ticket.key_sets.items()},
                user=node_ticket.user,
                products=list(node_ticket.products),
                node=self.domain,
            )
        except MeshgateError as exc:  # ``finish`` has recorded it
            raise pa.ArrowInvalid(exc.client_message) from None
        # watched: a client that stops reading frees the query past its time limit, and a
        # stop closes it (``stop_gracefully``); its ticket_end says which
        limit = catalog.engine.settings.query_timeout_seconds
        return schema, self._count(self.state.watchdog.expiring(batches, limit), begun, tracker)

    def _count(self, batches, begun: int, tracker: Tracker | None):
        """The batches, counted (the node's counters; ``tracker``: an audited ticket's
        progress, for the gateway's collector)."""
        with self.counters.lock:
            self.counters.tickets += 1
        if tracker is not None:
            tracker.started()
        try:
            for index, batch in enumerate(batches):
                if index == 0:
                    self._audit.wait_durable(begun)
                with self.counters.lock:
                    self.counters.rows += batch.num_rows
                    self.counters.bytes += batch.nbytes
                if tracker is not None:
                    tracker.count(batch.num_rows, batch.nbytes)
                yield batch
        except MeshgateError as exc:
            raise pa.ArrowInvalid(exc.client_message) from None

    def do_action(self, context, action):
        body = action.body.to_pybytes() if action.body is not None else b""
        if action.type in (ACTION_HEALTH, ACTION_STATS):
            self._open(context, body, action.type)  # only the gateway may ask
        if action.type == ACTION_ENDS:
            control, _ = self._open(context, body, action.type)
            answer = self._ends.drain(control.gateway)
            with self.counters.lock:
                self.counters.collected += 1
            return [flight.Result(json.dumps(answer).encode())]
        if action.type == ACTION_HEALTH:
            snapshot = self.state.current
            catalog = snapshot.catalog
            answer = {
                "domain": self.domain,
                "status": "draining" if self.draining else "ok",
                "products": [p.key for p in catalog],
                "problems": [p.message for p in catalog.problems],
                "policy_version": snapshot.governor.version,
                "policy_errors": [str(e) for e in self.state.policies.errors],
            }
            return [flight.Result(json.dumps(answer).encode())]
        if action.type == ACTION_STATS:
            return [flight.Result(json.dumps(self.counters.as_dict()).encode())]
        if action.type == ACTION_SCHEMA:
            ticket, snapshot = self._open(context, body, "schema")
            try:
                schema = result_schema(
                    snapshot.catalog, ticket.sql, ticket.parameters, ticket.products
                )
            except MeshgateError as exc:
                raise pa.ArrowInvalid(exc.client_message) from None
            return [flight.Result(schema.serialize())]
        raise NotImplementedError(f"action {action.type!r} is not offered by a domain node")

    def list_actions(self, context):
        return [
            flight.ActionType(ACTION_HEALTH, "Domain, products, status (body: a control ticket)"),
            flight.ActionType(ACTION_STATS, "Traffic and refusals (body: a control ticket)"),
            flight.ActionType(ACTION_SCHEMA, "Result schema of a sealed schema ticket"),
            flight.ActionType(
                ACTION_ENDS, "End reports of audited tickets (body: a control ticket)"
            ),
        ]
