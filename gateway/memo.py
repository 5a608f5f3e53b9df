"""``IdentityMemo``: what was computed from an object, kept while that very object returns;
``held_bytes``: what a kept string weighs; ``memoize_short``: an LRU memo of a function of
one string that keeps only short ones; ``WeightedLRU``: values bounded in count and bytes;
``WeakSlot``: the snapshot a cache serves, held weakly."""

from __future__ import annotations

import functools
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

_Object = TypeVar("_Object")
_Value = TypeVar("_Value")


class IdentityMemo(Generic[_Object, _Value]):
    """Values keyed by an object's identity (and optional extra keys), for hot paths that
    see the same object again and again (a repeated statement's schema, a login's
    principal). The object is held with its value, so its id cannot be reused by another
    while kept; all are forgotten once ``capacity`` is reached. Safe across threads: a
    race computes a value twice, never hands out another object's."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._kept: dict[tuple[Hashable, ...], tuple[_Object, _Value]] = {}

    def get(self, obj: _Object, compute: Callable[[], _Value], *also: Hashable) -> _Value:
        """The value kept for ``obj`` (and ``also``), else ``compute()``, then kept."""
        key = (id(obj), *also)
        kept = self._kept.get(key)
        if kept is not None and kept[0] is obj:
            return kept[1]
        value = compute()
        if len(self._kept) >= self.capacity:
            self._kept.clear()
        self._kept[key] = (obj, value)
        return value


def held_bytes(text: str | None) -> int:
    """The memory ``text`` holds (Python keeps 1, 2 or 4 bytes a character, by its widest):
    what a cache keeping it weighs it at, and bounds it by."""
    return sys.getsizeof(text) if text is not None else 0


_Text = TypeVar("_Text", str, str | None)
_Result = TypeVar("_Result")


def memoize_short(
    maxsize: int, max_bytes: int
) -> Callable[[Callable[[_Text], _Result]], Callable[[_Text], _Result]]:
    """``functools.lru_cache(maxsize)`` for a function of one string (or None) that a
    client chooses, keeping only strings that hold at most ``max_bytes``: a longer one is
    computed each time, never kept. ``cache_info`` and ``cache_clear`` are the memo's."""

    def decorate(function: Callable[[_Text], _Result]) -> Callable[[_Text], _Result]:
        kept = functools.lru_cache(maxsize=maxsize)(function)

        @functools.wraps(function)
        def memoized(text: _Text) -> _Result:
            return kept(text) if held_bytes(text) <= max_bytes else function(text)

        memoized.cache_info = kept.cache_info  # type: ignore[attr-defined]
        memoized.cache_clear = kept.cache_clear  # type: ignore[attr-defined]
        return memoized

    return decorate


_Key = TypeVar("_Key", bound=Hashable)


class WeightedLRU(Generic[_Key, _Value]):
    """Values by key, each with its weight (the bytes it keeps), the least recently used
    dropped first past ``capacity`` entries (None: no count bound) or ``max_weight`` in
    all. Not locked: its owner's lock guards it."""

    def __init__(self, max_weight: int, capacity: int | None = None) -> None:
        self.max_weight = max_weight
        self.capacity = capacity
        self.weight = 0
        self._entries: OrderedDict[_Key, tuple[_Value, int]] = OrderedDict()

    def get(self, key: _Key) -> _Value | None:
        """``key``'s value, now the most recently used; None if not kept."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: _Key, value: _Value, weight: int) -> int:
        """Keep ``value`` (in place of ``key``'s), then drop the least recently used while
        past a bound; how many were dropped."""
        self.pop(key)
        self._entries[key] = (value, weight)
        self.weight += weight
        dropped = 0
        while self._entries and (
            self.weight > self.max_weight
            or (self.capacity is not None and len(self._entries) > self.capacity)
        ):
            _, (_, evicted) = self._entries.popitem(last=False)
            self.weight -= evicted
            dropped += 1
        return dropped

    def pop(self, key: _Key) -> _Value | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.weight -= entry[1]
        return entry[0]

    def clear(self) -> None:
        self._entries.clear()
        self.weight = 0

    def __len__(self) -> int:
        return len(self._entries)


class WeakSlot:
    """The one object (a catalog snapshot) a cache's entries were made for, held weakly:
    the cache never keeps a retired snapshot alive (its engine, its in-memory copies), and
    a new object never passes for a collected one whose ``id`` it reuses."""

    def __init__(self) -> None:
        self._ref: weakref.ref[object] | None = None

    def holds(self, obj: object) -> bool:
        """Whether the slot holds ``obj`` itself."""
        return self._ref is not None and self._ref() is obj

    def set(self, obj: object) -> None:
        """Hold ``obj`` (weakly) in place of what the slot held."""
        self._ref = weakref.ref(obj)
