"""Node tickets: what the gateway hands out so a domain node streams governed rows.

A ticket is sealed with AES-256-GCM under the key shared by the gateway and its nodes:
GCM authenticates (a tampered or foreign ticket fails to open) and encrypts (a ticket
carries governed SQL, whose masks embed the hash key, and it travels through the client).
The payload names the domain, the SQL, its parameters (Arrow IPC), the user and products
(for the node's audit), an expiry and a nonce; ``ReplayGuard`` refuses a nonce seen twice.
A *control* ticket (purpose ``health`` or ``stats``, no SQL, no user, a few seconds of life)
is how the gateway proves itself when it asks a node for its health or counters.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"MGT1"
_NONCE_BYTES = 12
_AAD = b"meshgate-node-ticket-v1"
#: Lifetime of a control ticket: sealed for one call, opened at once.
CONTROL_TTL_SECONDS = 10.0
CONTROL_PURPOSES = ("health", "stats")


class TicketError(Exception):
    """A ticket that must not be honoured: tampered, foreign, expired or replayed."""


@dataclass(frozen=True)
class NodeTicket:
    """The sealed content of a ticket."""

    domain: str
    sql: str
    parameters: tuple[object, ...]
    user: str
    products: tuple[str, ...]
    expires_at: float
    purpose: str = "rows"  # "rows", "schema", or a control purpose ("health", "stats")
    nonce: bytes = b""
    policy_version: int = 0


class TicketSealer:
    """Seals and opens tickets with one shared key."""

    def __init__(self, key_hex: str, ttl_seconds: float) -> None:
        self._aead = AESGCM(bytes.fromhex(key_hex))
        self.ttl_seconds = ttl_seconds

    def seal(
        self, domain: str, sql: str, parameters: tuple[object, ...], user: str,
        products: tuple[str, ...], purpose: str = "rows", policy_version: int = 0,
        ttl_seconds: float | None = None,
    ) -> bytes:
        payload = {
            "domain": domain,
            "sql": sql,
            "parameters": _parameters_to_ipc(parameters).hex(),
            "user": user,
            "products": list(products),
            "expires_at": time.time() + (self.ttl_seconds if ttl_seconds is None else ttl_seconds),
            "purpose": purpose,
            "policy_version": policy_version,
        }
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, json.dumps(payload).encode(), _AAD)
        return MAGIC + nonce + sealed

    def seal_control(self, domain: str, purpose: str) -> bytes:
        """A ticket for one ``health`` or ``stats`` call to ``domain``'s node."""
        if purpose not in CONTROL_PURPOSES:
            raise ValueError(f"not a control purpose: {purpose!r}")
        return self.seal(domain, "", (), "", (), purpose=purpose, ttl_seconds=CONTROL_TTL_SECONDS)

    def open(self, raw: bytes) -> NodeTicket:
        """The ticket's content; TicketError when it is not ours, altered or expired."""
        if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _NONCE_BYTES + 16:
            raise TicketError("not a Meshgate node ticket")
        nonce = raw[len(MAGIC) : len(MAGIC) + _NONCE_BYTES]
        try:
            payload = json.loads(self._aead.decrypt(nonce, raw[len(MAGIC) + _NONCE_BYTES :], _AAD))
        except (InvalidTag, ValueError) as exc:
            raise TicketError("ticket signature check failed (tampered, or sealed with another key)") from exc
        if payload["expires_at"] < time.time():
            raise TicketError("ticket expired; ask the gateway again")
        return NodeTicket(
            domain=payload["domain"],
            sql=payload["sql"],
            parameters=_parameters_from_ipc(bytes.fromhex(payload["parameters"])),
            user=payload["user"],
            products=tuple(payload["products"]),
            expires_at=payload["expires_at"],
            purpose=payload["purpose"],
            nonce=nonce,
            policy_version=payload.get("policy_version", 0),
        )


class ReplayGuard:
    """Remembers the nonces of honoured tickets until they expire."""

    def __init__(self) -> None:
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def admit(self, ticket: NodeTicket) -> None:
        now = time.time()
        with self._lock:
            if ticket.nonce in self._seen:
                raise TicketError("ticket already used (replay refused)")
            if len(self._seen) > 10_000:
                self._seen = {n: t for n, t in self._seen.items() if t > now}
            self._seen[ticket.nonce] = ticket.expires_at


def _parameters_to_ipc(parameters: tuple[object, ...]) -> bytes:
    batch = pa.RecordBatch.from_pylist(
        [{f"p{i}": value for i, value in enumerate(parameters)}] if parameters else [{}]
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _parameters_from_ipc(raw: bytes) -> tuple[object, ...]:
    table = pa.ipc.open_stream(raw).read_all()
    if table.num_columns == 0:
        return ()
    return tuple(column[0].as_py() for column in table.columns)
