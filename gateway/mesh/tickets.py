"""Node tickets: what the gateway hands out so a domain node streams governed rows.

A ticket is sealed with AES-256-GCM under the key shared by the gateway and its nodes:
GCM authenticates (a tampered or foreign ticket fails to open) and encrypts (a ticket
carries governed SQL, whose masks embed the hash key, and it travels through the client).
The payload names the domain, the SQL, the principal as the gateway resolved it (user,
roles, attributes: the node decides for them again, whether they came from mesh.toml or
from an identity token) and the products, an expiry and a nonce, in JSON, followed by the
SQL's parameters and its dynamic filters' key sets (Arrow IPC, as they are); ``ReplayGuard`` refuses a nonce seen twice.
A *control* ticket (purpose ``health``, ``stats`` or ``ends``, no SQL, no user, a few seconds
of life) is how the gateway proves itself when it asks a node for its health, counters or
end reports. A ticket of a query the client fetches from the node carries an ``AuditTag``:
the node reports that endpoint's end to the gateway process that placed it
(``gateway.mesh.ends``).

A ticket also carries, per product, the fingerprint of the policy decision its governed SQL
was built on (``ProductAccess.fingerprint``: read, row filter, columns, masks). Whoever
honours it (the node, the gateway's relay) decides again with the policy in force and
refuses the ticket when a decision differs (``stale_products``): a revocation ends old
tickets as soon as the honouring process has reloaded its policy, not when they expire.
Fingerprints are derived from the decisions themselves, so processes that reload at
different moments, or hold different version counters, still agree.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import AuthenticationError
from gateway.security.principal import Principal
from policies.engine import Subject

if TYPE_CHECKING:
    from policies.engine import ProductAccess

MAGIC = b"MGT3"
_NONCE_BYTES = 12
_AAD = b"meshgate-node-ticket-v3"  # with MAGIC: a ticket of another format never opens
_SEPARATOR = b"\n"  # after the JSON header (which escapes every newline in it)
#: The name of a dynamic filter's key set, the table the node registers it as: this and a
#: number (``gateway.mesh.dynamic.key_predicate``)
KEY_SET_PREFIX = "__meshgate_keys_"
_KEY_SET_COLUMN = "keys:"  # the IPC column of a key set: this and its name
#: Lifetime of a control ticket: sealed for one call, opened at once.
CONTROL_TTL_SECONDS = 10.0
CONTROL_PURPOSES = ("health", "stats", "ends")
#: Why a ticket sealed before a policy change is refused (names no product: a refusal never
#: tells more than the ticket's holder knows).
POLICY_CHANGED = (
    "access changed since this ticket was sealed (policy reloaded); run the query again"
)


class TicketError(AuthenticationError):
    """A ticket that must not be honoured: tampered, foreign, expired or replayed."""


@dataclass(frozen=True)
class AuditTag:
    """Which audited query a ticket serves, so that its node reports the end to the gateway
    process that placed it (``gateway.mesh.ends``)."""

    gateway: str  # the gateway process that placed the query (the one that collects)
    query_id: str
    part: int  # this endpoint's index
    parts: int  # the query's number of endpoints

    def as_dict(self) -> dict[str, object]:
        return {
            "gateway": self.gateway,
            "query": self.query_id,
            "part": self.part,
            "parts": self.parts,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AuditTag:
        return cls(str(raw["gateway"]), str(raw["query"]), int(raw["part"]), int(raw["parts"]))


@dataclass(frozen=True)
class NodeTicket:
    """The sealed content of a ticket."""

    domain: str
    sql: str
    parameters: tuple[object, ...]
    user: str
    products: tuple[str, ...]
    expires_at: float
    #: key sets of dynamic filters, by table name (``KEY_SET_PREFIX``), as Arrow arrays
    key_sets: Mapping[str, pa.Array] = field(default_factory=dict)
    purpose: str = "rows"  # "rows", "schema", or a control purpose ("health", "stats")
    nonce: bytes = b""
    #: product -> fingerprint of the user's policy decision the SQL was governed under
    decisions: Mapping[str, str] = field(default_factory=dict)
    #: the audited query whose endpoint this is (rows tickets of placed queries)
    audit: AuditTag | None = None
    #: the gateway process asking (an ``ends`` control ticket)
    gateway: str = ""
    #: the principal's roles and attributes as the gateway resolved them
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, str | int | float | bool] = field(default_factory=dict)

    @property
    def subject(self) -> Subject:
        """Whom the node decides for: the principal the gateway sealed in."""
        return Subject(self.user, self.roles, dict(self.attributes))


class TicketSealer:
    """Seals and opens tickets with one shared key."""

    def __init__(self, key_hex: str, ttl_seconds: float) -> None:
        self._aead = AESGCM(bytes.fromhex(key_hex))
        self.ttl_seconds = ttl_seconds

    def seal(
        self,
        domain: str,
        sql: str,
        parameters: tuple[object, ...],
        user: str | Principal,
        products: tuple[str, ...],
        purpose: str = "rows",
        decisions: Mapping[str, str] | None = None,
        ttl_seconds: float | None = None,
        audit: AuditTag | None = None,
        gateway: str = "",
        key_sets: Mapping[str, pa.Array] | None = None,
    ) -> bytes:
        payload: dict[str, object] = {
            "domain": domain,
            "sql": sql,
            "user": user if isinstance(user, str) else user.user,
            "products": list(products),
            "expires_at": time.time() + (self.ttl_seconds if ttl_seconds is None else ttl_seconds),
            "purpose": purpose,
            "decisions": dict(decisions or {}),
        }
        if not isinstance(user, str):
            payload["roles"] = list(user.roles)
            payload["attributes"] = dict(user.attributes)
        if audit is not None:
            payload["audit"] = audit.as_dict()
        if gateway:
            payload["gateway"] = gateway
        nonce = os.urandom(_NONCE_BYTES)
        # the parameters (Arrow IPC) follow the JSON as they are: no hex, no JSON string
        # to scan (a dynamic filter's keys are up to 100k values)
        ipc = _parameters_to_ipc(parameters, key_sets or {})
        plain = json.dumps(payload).encode() + _SEPARATOR + ipc
        return MAGIC + nonce + self._aead.encrypt(nonce, plain, _AAD)

    def seal_control(self, domain: str, purpose: str, gateway: str = "") -> bytes:
        """A ticket for one control call (``health``, ``stats``, ``ends``) to ``domain``'s
        node; ``gateway``: the gateway process asking (``ends``: whose reports)."""
        if purpose not in CONTROL_PURPOSES:
            raise ValueError(f"not a control purpose: {purpose!r}")
        return self.seal(
            domain,
            "",
            (),
            "",
            (),
            purpose=purpose,
            ttl_seconds=CONTROL_TTL_SECONDS,
            gateway=gateway,
        )

    def open(self, raw: bytes) -> NodeTicket:
        """The ticket's content; TicketError when it is not ours, altered or expired."""
        if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _NONCE_BYTES + 16:
            raise TicketError("not a Meshgate node ticket")
        nonce = raw[len(MAGIC) : len(MAGIC) + _NONCE_BYTES]
        try:
            plain = self._aead.decrypt(nonce, raw[len(MAGIC) + _NONCE_BYTES :], _AAD)
            header, _, ipc = plain.partition(_SEPARATOR)
            payload = json.loads(header)
            parameters, key_sets = _parameters_from_ipc(ipc)
        except (InvalidTag, ValueError) as exc:
            raise TicketError(
                "ticket signature check failed (tampered, or sealed with another key)"
            ) from exc
        if payload["expires_at"] < time.time():
            raise TicketError("ticket expired; ask the gateway again")
        return NodeTicket(
            domain=payload["domain"],
            sql=payload["sql"],
            parameters=parameters,
            key_sets=key_sets,
            user=payload["user"],
            products=tuple(payload["products"]),
            expires_at=payload["expires_at"],
            purpose=payload["purpose"],
            nonce=nonce,
            decisions=payload.get("decisions", {}),
            audit=AuditTag.from_dict(payload["audit"]) if "audit" in payload else None,
            gateway=payload.get("gateway", ""),
            roles=tuple(payload.get("roles", ())),
            attributes=payload.get("attributes", {}),
        )


def decisions_of(accesses: Mapping[str, ProductAccess], products: Iterable[str]) -> dict[str, str]:
    """What a ticket for ``products`` carries: each one's decision fingerprint."""
    return {key: accesses[key].fingerprint for key in products if key in accesses}


def stale_products(ticket: NodeTicket, access_of: Callable[[str], ProductAccess]) -> list[str]:
    """The products of ``ticket`` that its user may no longer read, or may read only under
    another decision than the one the ticket was sealed with (``access_of``: the decision
    of the policy in force for the ticket's user)."""
    stale = []
    for key in ticket.products:
        access = access_of(key)
        if not access.allowed or access.fingerprint != ticket.decisions.get(key):
            stale.append(key)
    return stale


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


def _parameters_to_ipc(parameters: tuple[object, ...], key_sets: Mapping[str, pa.Array]) -> bytes:
    """One row: a column per parameter (``p0``...), then a list column per key set."""
    batch = pa.RecordBatch.from_pylist(
        [{f"p{i}": value for i, value in enumerate(parameters)}] if parameters else [{}]
    )
    if key_sets:
        columns, names = list(batch.columns), list(batch.schema.names)
        for name, keys in key_sets.items():
            if not name.startswith(KEY_SET_PREFIX):
                raise ValueError(f"not a key set name: {name!r}")
            columns.append(pa.ListArray.from_arrays(pa.array([0, len(keys)], pa.int32()), keys))
            names.append(_KEY_SET_COLUMN + name)
        batch = pa.RecordBatch.from_arrays(columns, names=names)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _parameters_from_ipc(raw: bytes) -> tuple[tuple[object, ...], dict[str, pa.Array]]:
    table = pa.ipc.open_stream(raw).read_all()
    parameters: list[object] = []
    key_sets: dict[str, pa.Array] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name.startswith(_KEY_SET_COLUMN):
            key_name = name[len(_KEY_SET_COLUMN) :]
            if not key_name.startswith(KEY_SET_PREFIX):
                raise ValueError(f"not a key set name: {key_name!r}")
            key_sets[key_name] = column[0].values
        else:
            parameters.append(column[0].as_py())
    return tuple(parameters), key_sets
