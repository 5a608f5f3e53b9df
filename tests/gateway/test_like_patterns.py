"""Flight SQL metadata filter patterns (SQL LIKE) as regexes: what they match, and that
only short ones are kept compiled (a client chooses their length)."""

from __future__ import annotations

from gateway.flightsql import metadata


def test_like_wildcards_and_escapes() -> None:
    assert metadata._like("ord%").fullmatch("orders")
    assert metadata._like("o_ders").fullmatch("orders")
    assert not metadata._like("o_ders").fullmatch("oders")
    assert metadata._like(r"a\_b").fullmatch("a_b") and not metadata._like(r"a\_b").fullmatch("axb")
    assert metadata._like(None).fullmatch("anything")
    assert metadata._like("a.b").fullmatch("a.b") and not metadata._like("a.b").fullmatch("axb")


def test_a_long_pattern_is_compiled_each_time_not_kept() -> None:
    before = metadata._like.cache_info().currsize
    long_pattern = "%" + "x" * 2_000 + "%"
    assert metadata._like(long_pattern).fullmatch("a" + "x" * 2_000 + "b")
    assert metadata._like.cache_info().currsize == before
