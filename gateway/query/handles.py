"""Opaque handles (tickets, prepared statements) bound to the user who created them."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from gateway.errors import HandleNotFound, ResourceExhausted

T = TypeVar("T")


class HandleStore(Generic[T]):
    """Values behind random handles, bounded in count and age, visible only to their owner.

    A handle used by another user is reported exactly like an unknown one. An owner at
    ``per_owner`` live handles either loses their oldest (tickets: a client that never
    redeems them) or, with ``full_message``, is refused with ResourceExhausted carrying
    ``full_message(owner, per_owner)`` (prepared statements: losing one would break a client
    that still holds it).
    """

    def __init__(
        self,
        kind: str,
        ttl_seconds: float,
        capacity: int,
        per_owner: int = 256,
        full_message: Callable[[str, int], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: monotonic seconds, for the handles' age (injectable in tests)."""
        self._kind = kind
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._per_owner = per_owner
        self._full_message = full_message
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[str, float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def check_room(self, owner: str) -> None:
        """Raise ResourceExhausted now if ``put`` for ``owner`` would be refused."""
        with self._lock:
            self._live_handles(owner, self._clock())

    def _live_handles(self, owner: str, now: float) -> list[bytes]:
        """``owner``'s unexpired handles, oldest first (expired ones are dropped); refuses
        when the owner is full and the store refuses rather than evicts. Under the lock."""
        mine = []
        for handle, (entry_owner, expires, _) in list(self._entries.items()):
            if entry_owner != owner:
                continue
            if expires <= now:
                del self._entries[handle]
            else:
                mine.append(handle)
        if self._full_message is not None and len(mine) >= self._per_owner:
            raise ResourceExhausted(self._full_message(owner, self._per_owner))
        return mine

    def put(self, owner: str, value: T) -> bytes:
        handle = secrets.token_bytes(16)
        now = self._clock()
        with self._lock:
            mine = self._live_handles(owner, now)
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
            if entry is not None and entry[1] <= self._clock():
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
