"""Node tickets carry a dynamic filter's keys as Arrow IPC after the JSON header: the
parameters come back as sealed, and a key costs its 8 bytes, not 16 hex digits."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.mesh.tickets import KEY_SET_PREFIX, MAGIC, TicketError, TicketSealer

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


@pytest.mark.parametrize("version", [1, 2])
def test_a_ticket_of_an_old_format_relabelled_does_not_open(version: int) -> None:
    """A ticket sealed in an earlier format (1: hex parameters in the JSON; 2: key lists as
    list parameters), each with its own AAD, under today's magic fails the authentication
    check: a TicketError, never a decoding crash nor key sets read as parameters."""
    key = os.urandom(32)
    nonce = os.urandom(12)
    header = b'{"domain": "orders", "sql": "SELECT 1", "parameters": "", "user": "bob"}'
    old = AESGCM(key).encrypt(nonce, header, f"meshgate-node-ticket-v{version}".encode())
    with pytest.raises(TicketError, match="signature check failed"):
        TicketSealer(key.hex(), 60).open(MAGIC + nonce + old)


def test_key_sets_round_trip_as_arrow_beside_the_parameters() -> None:
    sealer = TicketSealer(os.urandom(32).hex(), 60)
    sets = {
        f"{KEY_SET_PREFIX}0": pa.array(KEYS, pa.int64()),
        f"{KEY_SET_PREFIX}1": pa.array(["EU", "US"]),
        f"{KEY_SET_PREFIX}2": pa.array([dt.date(2024, 3, 1)]),
    }
    raw = sealer.seal("orders", "SELECT 1", (5, 9), "bob", ("orders.orders",), key_sets=sets)
    ticket = sealer.open(raw)
    assert ticket.parameters == (5, 9)
    assert ticket.key_sets.keys() == sets.keys()
    assert all(ticket.key_sets[name].equals(keys) for name, keys in sets.items())
    assert len(raw) < 9 * len(KEYS)


def test_a_key_set_must_be_named_as_one() -> None:
    """The node registers each key set as a table: only under the key-set prefix."""
    sealer = TicketSealer(os.urandom(32).hex(), 60)
    with pytest.raises(ValueError, match="not a key set name"):
        sealer.seal("orders", "SELECT 1", (), "bob", (), key_sets={"orders": pa.array([1])})
