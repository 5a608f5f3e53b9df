"""A domain node: serves one domain's products from that domain's data, only to sealed
tickets issued by the gateway (``meshgate node DIR --domain D``).

A node never accepts SQL from a client. It ignores bearer tokens (the ADBC driver
forwards the client's token to every location) and trusts only the ticket, which the
gateway sealed after authorizing and rewriting the query. Tampered, foreign-domain,
expired and replayed tickets are refused with UNAUTHENTICATED and audited. The ``health``
and ``stats`` actions answer only a control ticket sealed by the gateway (product names,
validation problems and traffic counters are nobody else's business).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from gateway.audit import AuditLog
from gateway.auth import HandshakeAuthHandler
from gateway.catalog import CatalogHolder
from gateway.config import MeshConfig
from gateway.errors import ConfigError, MeshgateError
from gateway.node_actions import ACTION_HEALTH, ACTION_SCHEMA, ACTION_STATS
from gateway.execution import result_schema, stream_sql
from gateway.tickets import NodeTicket, ReplayGuard, TicketError, TicketSealer

log = structlog.get_logger("meshgate.node")



@dataclass
class NodeCounters:
    """What a node has served and refused since it started."""

    tickets: int = 0
    rows: int = 0
    bytes: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {"tickets": self.tickets, "rows": self.rows, "bytes": self.bytes, "refused": self.refused}


class DomainNode(flight.FlightServerBase):
    """Arrow Flight server of one domain node."""

    def __init__(self, location: str, mesh_dir: Path, config: MeshConfig, domain: str, **kwargs) -> None:
        if not config.nodes.ticket_key:
            raise ConfigError(f"{mesh_dir / 'mesh.toml'}: field `nodes.ticket_key`: missing; a node needs the gateway's ticket key")
        super().__init__(location, auth_handler=HandshakeAuthHandler(), **kwargs)
        self.domain = domain
        self.catalogs = CatalogHolder(
            mesh_dir, config.engine, frozenset({domain}), partitions=config.nodes.split_endpoints
        )
        if not len(self.catalogs.current):
            raise ConfigError(f"{mesh_dir / domain}: domain {domain!r} has no servable product")
        self._sealer = TicketSealer(config.nodes.ticket_key, config.nodes.ticket_ttl_seconds)
        self._replays = ReplayGuard()
        self._audit = AuditLog(config.audit.path(mesh_dir) / f"node-{domain}", config.audit.max_file_bytes)
        self.counters = NodeCounters()

    def _open(self, context: flight.ServerCallContext, raw: bytes, purpose: str) -> NodeTicket:
        try:
            ticket = self._sealer.open(raw)
            if ticket.domain != self.domain:
                raise TicketError(f"ticket is for domain {ticket.domain!r}, this node serves {self.domain!r}")
            if ticket.purpose != purpose:
                raise TicketError(f"ticket is for {ticket.purpose!r}, not {purpose!r}")
            self._replays.admit(ticket)
        except TicketError as exc:
            with self.counters.lock:
                self.counters.refused += 1
            self._audit.record("ticket_refused", domain=self.domain, client=context.peer(), error=str(exc))
            log.warning("ticket_refused", domain=self.domain, client=context.peer(), error=str(exc))
            raise flight.FlightUnauthenticatedError(f"ticket refused: {exc}") from None
        return ticket

    def do_get(self, context, ticket):
        node_ticket = self._open(context, ticket.ticket, "rows")
        catalog = self.catalogs.current
        begun = self._audit.append(  # on disk before the first batch leaves (see _count)
            "ticket_begin", domain=self.domain, user=node_ticket.user, products=list(node_ticket.products),
            client=context.peer(),
        )
        try:
            schema = result_schema(catalog, node_ticket.sql, node_ticket.parameters, node_ticket.products)
        except MeshgateError as exc:
            raise pa.ArrowInvalid(exc.client_message) from None
        return flight.GeneratorStream(schema, self._count(stream_sql(
            catalog.engine, node_ticket.sql, node_ticket.parameters, schema, context.is_cancelled,
            user=node_ticket.user, products=list(node_ticket.products), node=self.domain,
        ), begun))

    def _count(self, batches, begun: int):
        with self.counters.lock:
            self.counters.tickets += 1
        try:
            for index, batch in enumerate(batches):
                if index == 0:
                    self._audit.wait_durable(begun)
                with self.counters.lock:
                    self.counters.rows += batch.num_rows
                    self.counters.bytes += batch.nbytes
                yield batch
        except MeshgateError as exc:
            raise pa.ArrowInvalid(exc.client_message) from None

    def do_action(self, context, action):
        body = action.body.to_pybytes() if action.body is not None else b""
        if action.type in (ACTION_HEALTH, ACTION_STATS):
            self._open(context, body, action.type)  # only the gateway may ask
        if action.type == ACTION_HEALTH:
            catalog = self.catalogs.current
            answer = {"domain": self.domain, "status": "ok", "products": [p.key for p in catalog],
                      "problems": [p.message for p in catalog.problems]}
            return [flight.Result(json.dumps(answer).encode())]
        if action.type == ACTION_STATS:
            return [flight.Result(json.dumps(self.counters.as_dict()).encode())]
        if action.type == ACTION_SCHEMA:
            ticket = self._open(context, body, "schema")
            try:
                schema = result_schema(self.catalogs.current, ticket.sql, ticket.parameters, ticket.products)
            except MeshgateError as exc:
                raise pa.ArrowInvalid(exc.client_message) from None
            return [flight.Result(schema.serialize())]
        raise NotImplementedError(f"action {action.type!r} is not offered by a domain node")

    def list_actions(self, context):
        return [
            flight.ActionType(ACTION_HEALTH, "Domain, products, status (body: a control ticket)"),
            flight.ActionType(ACTION_STATS, "Traffic and refusals (body: a control ticket)"),
            flight.ActionType(ACTION_SCHEMA, "Result schema of a sealed schema ticket"),
        ]
