"""Opaque handles (tickets, prepared statements) bound to the user who created them."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

from gateway.errors import HandleNotFound

T = TypeVar("T")


class HandleStore(Generic[T]):
    """Values behind random handles, bounded in count and age, visible only to their owner.

    A handle used by another user is reported exactly like an unknown one.
    """

    def __init__(self, kind: str, ttl_seconds: float, capacity: int, per_owner: int = 256) -> None:
        self._kind = kind
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._per_owner = per_owner
        self._entries: OrderedDict[bytes, tuple[str, float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, owner: str, value: T) -> bytes:
        handle = secrets.token_bytes(16)
        now = time.monotonic()
        with self._lock:
            mine = [h for h, entry in self._entries.items() if entry[0] == owner]
            for old in mine[: max(0, len(mine) - self._per_owner + 1)]:
                del self._entries[old]  # an owner's oldest go first: no one evicts others
            self._entries[handle] = (owner, now + self._ttl, value)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return handle

    def take(self, owner: str, handle: bytes) -> T:
        """``get`` and forget: a single-use handle."""
        value = self.get(owner, handle)
        with self._lock:
            self._entries.pop(handle, None)
        return value

    def get(self, owner: str, handle: bytes) -> T:
        with self._lock:
            entry = self._entries.get(handle)
            if entry is not None and entry[1] <= time.monotonic():
                del self._entries[handle]
                entry = None
        if entry is None or not secrets.compare_digest(entry[0], owner):
            raise HandleNotFound(f"unknown or expired {self._kind}; run the statement again")
        return entry[2]

    def replace(self, owner: str, handle: bytes, value: T) -> None:
        self.get(owner, handle)
        with self._lock:
            if handle in self._entries:
                stored_owner, expires, _ = self._entries[handle]
                self._entries[handle] = (stored_owner, expires, value)

    def discard(self, owner: str, handle: bytes) -> None:
        self.get(owner, handle)
        with self._lock:
            self._entries.pop(handle, None)
