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
    """Values behind random handles, bounded in count, bytes and age, visible only to their
    owner.

    A handle used by another user is reported exactly like an unknown one. An owner at
    ``per_owner`` live handles, or whose values would weigh more than ``per_owner_bytes``
    (by ``weigh``), either loses their oldest (tickets: a client that never redeems them)
    or, with ``full_message``, is refused with ResourceExhausted carrying
    ``full_message(owner, per_owner)`` or ``full_message(owner, per_owner_bytes)``
    (prepared statements: losing one would break a client that still holds it).
    """

    def __init__(
        self,
        kind: str,
        ttl_seconds: float,
        capacity: int,
        per_owner: int = 256,
        full_message: Callable[[str, int], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        weigh: Callable[[T], int] = lambda value: 0,
        per_owner_bytes: int | None = None,
        bytes_message: Callable[[str, int], str] | None = None,
    ) -> None:
        """``clock``: monotonic seconds, for the handles' age (injectable in tests);
        ``weigh``: the bytes a value keeps; ``bytes_message``: the refusal past
        ``per_owner_bytes`` (with ``full_message``)."""
        self._kind = kind
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._per_owner = per_owner
        self._full_message = full_message
        self._clock = clock
        self._weigh = weigh
        self._per_owner_bytes = per_owner_bytes
        self._bytes_message = bytes_message
        self._entries: OrderedDict[bytes, tuple[str, float, T, int]] = OrderedDict()
        #: each owner's handles, oldest first: an owner's checks never walk the others'
        self._owned: dict[str, dict[bytes, None]] = {}
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    def check_room(self, owner: str) -> None:
        """Raise ResourceExhausted now if ``put`` for ``owner`` would be refused."""
        with self._lock:
            self._live_handles(owner, self._clock())

    def _live_handles(self, owner: str, now: float, adding: int = 0) -> list[bytes]:
        """``owner``'s unexpired handles, oldest first (expired ones are dropped); refuses
        when the owner is full (or would pass its bytes with ``adding`` more) and the store
        refuses rather than evicts. Under the lock."""
        mine = self._drop_expired(owner, now)
        if self._full_message is not None:
            if len(mine) >= self._per_owner:
                raise ResourceExhausted(self._full_message(owner, self._per_owner))
            self._check_bytes(owner, adding)
        return mine

    def _drop_expired(self, owner: str, now: float) -> list[bytes]:
        """Drop ``owner``'s expired handles; the live ones, oldest first. Under the lock."""
        mine = []
        for handle in list(self._owned.get(owner, ())):
            if self._entries[handle][1] <= now:
                self._remove(handle)
            else:
                mine.append(handle)
        return mine

    def _drop_expired_first(self, now: float) -> None:
        """Drop the expired handles at the front, whoever owns them: with one age for all,
        the oldest come first (an owner who never returns would keep theirs, and what
        their values hold, until the count bound). Under the lock."""
        while self._entries:
            handle, (_, expires, _, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            self._remove(handle)

    def update(self, owner: str, handle: bytes, change: Callable[[T], T]) -> bool:
        """Put ``change(value)`` behind ``owner``'s live ``handle``, decided under the lock
        (``revise`` cannot interleave); False, nothing changed, when the handle is gone,
        ``change`` kept the value, or the new one would pass the owner's bytes."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None or entry[1] <= self._clock() or entry[0] != owner:
                return False
            stored_owner, expires, value, old_weight = entry
            changed = change(value)
            if changed is value:
                return False
            weight = self._weigh(changed)
            limit = self._per_owner_bytes
            if limit is not None and self._bytes.get(owner, 0) + weight - old_weight > limit:
                return False
            self._entries[handle] = (stored_owner, expires, changed, weight)
            self._count_bytes(stored_owner, weight - old_weight)
            return True

    def revise(self, change: Callable[[T], T]) -> None:
        """Put ``change(value)`` in place of every live value (reweighed, never refused):
        e.g. drop what a reload made stale."""
        with self._lock:
            for handle, (owner, expires, value, weight) in list(self._entries.items()):
                changed = change(value)
                if changed is not value:
                    new_weight = self._weigh(changed)
                    self._entries[handle] = (owner, expires, changed, new_weight)
                    self._count_bytes(owner, new_weight - weight)

    def _check_bytes(self, owner: str, adding: int) -> None:
        limit = self._per_owner_bytes
        if limit is not None and self._bytes.get(owner, 0) + adding > limit:
            message = self._bytes_message or self._full_message
            assert message is not None  # only a refusing store checks
            raise ResourceExhausted(message(owner, limit))

    def _remove(self, handle: bytes) -> tuple[str, float, T, int] | None:
        """Forget ``handle`` and its bytes. Under the lock."""
        entry = self._entries.pop(handle, None)
        if entry is not None:
            self._count_bytes(entry[0], -entry[3])
            owned = self._owned[entry[0]]
            del owned[handle]
            if not owned:
                del self._owned[entry[0]]
        return entry

    def _count_bytes(self, owner: str, change: int) -> None:
        total = self._bytes.get(owner, 0) + change
        if total > 0:
            self._bytes[owner] = total
        else:
            self._bytes.pop(owner, None)

    def _add(self, handle: bytes, entry: tuple[str, float, T, int]) -> None:
        self._entries[handle] = entry
        self._owned.setdefault(entry[0], {})[handle] = None
        self._count_bytes(entry[0], entry[3])

    def put(self, owner: str, value: T) -> bytes:
        handle = secrets.token_bytes(16)
        now = self._clock()
        weight = self._weigh(value)
        with self._lock:
            self._drop_expired_first(now)
            mine = self._live_handles(owner, now, weight)
            for old in mine[: max(0, len(mine) - self._per_owner + 1)]:
                self._remove(old)  # an owner's oldest go first: no one evicts others
            limit = self._per_owner_bytes
            if limit is not None:
                kept = [h for h in mine if h in self._entries]
                while kept and self._bytes.get(owner, 0) + weight > limit:
                    self._remove(kept.pop(0))
            self._add(handle, (owner, now + self._ttl, value, weight))
            while len(self._entries) > self._capacity:
                self._remove(next(iter(self._entries)))
        return handle

    def take(self, owner: str, handle: bytes) -> T:
        """``get`` and forget, under one lock: a single-use handle is never taken twice."""
        with self._lock:
            value = self._owned_value(owner, handle)
            self._remove(handle)
        return value

    def get(self, owner: str, handle: bytes) -> T:
        with self._lock:
            return self._owned_value(owner, handle)

    def _owned_value(self, owner: str, handle: bytes) -> T:
        """``handle``'s value if it is ``owner``'s and live (an expired one is dropped);
        HandleNotFound otherwise, the same for another owner's. Under the lock."""
        entry = self._entries.get(handle)
        if entry is not None and entry[1] <= self._clock():
            self._remove(handle)
            entry = None
        # bytes: compare_digest refuses str with non-ASCII characters (a user "zoë")
        if entry is None or not secrets.compare_digest(_utf8(entry[0]), _utf8(owner)):
            raise HandleNotFound(f"unknown or expired {self._kind}; run the statement again")
        return entry[2]

    def replace(self, owner: str, handle: bytes, value: T) -> None:
        """Put ``value`` behind ``handle`` (refused, as ``put`` is, past the owner's
        bytes)."""
        self.get(owner, handle)
        weight = self._weigh(value)
        with self._lock:
            if self._full_message is not None and handle in self._entries:
                self._drop_expired(owner, self._clock())  # the dead weigh nothing
            entry = self._entries.get(handle)
            if entry is not None:
                stored_owner, expires, _, old_weight = entry
                if self._full_message is not None:
                    self._check_bytes(stored_owner, weight - old_weight)
                self._entries[handle] = (stored_owner, expires, value, weight)  # in place
                self._count_bytes(stored_owner, weight - old_weight)

    def discard(self, owner: str, handle: bytes) -> None:
        self.get(owner, handle)
        with self._lock:
            self._remove(handle)

    def bytes_of(self, owner: str) -> int:
        """What ``owner``'s live values weigh (expired ones until next dropped)."""
        with self._lock:
            return self._bytes.get(owner, 0)


def _utf8(name: str) -> bytes:
    """``name``'s bytes, whatever it holds (a token's subject may carry a lone surrogate)."""
    return name.encode("utf-8", "surrogatepass")
