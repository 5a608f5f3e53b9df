"""IdentityMemo hands a value back only for the very object it was computed from."""

from __future__ import annotations

from gateway.memo import IdentityMemo, WeightedLRU, memoize_short


class _Key:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key)  # every _Key equals every other: identity must decide

    def __hash__(self) -> int:
        return 0


def test_the_same_object_is_computed_once_an_equal_one_again() -> None:
    memo: IdentityMemo[_Key, int] = IdentityMemo(8)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    first, other = _Key(), _Key()
    assert memo.get(first, compute) == 1
    assert memo.get(first, compute) == 1
    assert memo.get(other, compute) == 2
    assert memo.get(first, compute, "wider") == 3  # extra keys are part of the key
    assert len(calls) == 3


def test_everything_is_forgotten_at_capacity() -> None:
    memo: IdentityMemo[_Key, int] = IdentityMemo(2)
    keys = [_Key(), _Key()]
    for number, key in enumerate(keys):
        memo.get(key, lambda number=number: number)
    memo.get(_Key(), lambda: 99)  # the third: the first two are dropped
    assert memo.get(keys[0], lambda: -1) == -1


def test_a_weighted_lru_drops_the_least_recently_used_past_its_bounds() -> None:
    lru: WeightedLRU[str, int] = WeightedLRU(max_weight=100, capacity=3)
    assert [lru.put(key, n, 30) for n, key in enumerate("abc")] == [0, 0, 0]
    assert lru.get("a") == 0  # now the most recently used
    assert lru.put("d", 3, 30) == 1 and lru.get("b") is None  # past the count: b went
    assert lru.put("e", 4, 60) == 2 and len(lru) == 2 and lru.weight == 90  # past the weight
    assert lru.put("e", 5, 10) == 0 and lru.weight == 40  # replaced, weighed once
    assert lru.pop("e") == 5 and lru.weight == 30 and lru.pop("e") is None


def test_memoize_short_keeps_only_short_inputs() -> None:
    calls: list[str] = []

    @memoize_short(maxsize=8, max_bytes=100)
    def length(text: str) -> int:
        calls.append(text)
        return len(text)

    long_text = "x" * 200
    assert [length("ab"), length("ab"), length(long_text), length(long_text)] == [2, 2, 200, 200]
    assert calls == ["ab", long_text, long_text]
    assert length.cache_info().currsize == 1
