"""Node tickets carry a dynamic filter's keys as Arrow IPC after the JSON header: the
parameters come back as sealed, and a key costs its 8 bytes, not 16 hex digits."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.mesh.tickets import MAGIC, TicketError, TicketSealer

KEYS = list(range(0, 300_000, 3))


def test_parameters_round_trip_raw() -> None:
    sealer = TicketSealer(os.urandom(32).hex(), 60)
    parameters = (KEYS, "x\ny", None, dt.date(2024, 3, 1))
    sql = "SELECT 1 -- a line\nFROM t"
    raw = sealer.seal("orders", sql, parameters, "bob", ("orders.orders",))
    ticket = sealer.open(raw)
    assert (ticket.sql, ticket.parameters, ticket.user) == (sql, parameters, "bob")
    assert len(raw) < 9 * len(KEYS)
    with pytest.raises(TicketError):
        TicketSealer(os.urandom(32).hex(), 60).open(raw)


def test_a_ticket_of_the_old_format_relabelled_does_not_open() -> None:
    """A ticket sealed in the first format (hex parameters in the JSON, its own AAD) under
    today's magic fails the authentication check: a TicketError, never a decoding crash."""
    key = os.urandom(32)
    nonce = os.urandom(12)
    header = b'{"domain": "orders", "sql": "SELECT 1", "parameters": "", "user": "bob"}'
    old = AESGCM(key).encrypt(nonce, header, b"meshgate-node-ticket-v1")
    with pytest.raises(TicketError, match="signature check failed"):
        TicketSealer(key.hex(), 60).open(MAGIC + nonce + old)
