"""IdentityMemo hands a value back only for the very object it was computed from."""

from __future__ import annotations

from gateway.memo import IdentityMemo


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
