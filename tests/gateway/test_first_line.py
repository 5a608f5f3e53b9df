"""``first_line``: one way to take the first line of an error message, safe on empty ones;
and the node action names, named once."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from sqlglot.errors import TokenError

from benchmarks.launch import REPO
from gateway.errors import InvalidQuery, QueryFailed, first_line
from gateway.mesh import actions as node_actions
from gateway.mesh.federation import FragmentStream
from gateway.planning import parse


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ValueError("first\nsecond"), "first"),
        (ValueError("\n  \n  third line  \nfourth"), "third line"),
        (ValueError(""), "ValueError"),
        (OSError(), "OSError"),
        ("", ""),
        ("plain text", "plain text"),
    ],
)
def test_first_line(value: object, expected: str) -> None:
    assert first_line(value) == expected


def test_first_line_default_for_an_empty_message() -> None:
    assert first_line(RuntimeError(""), default="no detail") == "no detail"


def test_an_empty_tokenizer_error_is_a_syntax_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was an IndexError (``str(exc).splitlines()[0]`` of an empty message)."""

    def fail(text: str) -> list:
        raise TokenError("")

    monkeypatch.setattr(parse._DIALECT, "tokenize", fail)
    with pytest.raises(InvalidQuery, match="SQL syntax error: TokenError"):
        parse._tokenize("SELECT 1")


class _FailingReader:
    schema = pa.schema([("x", pa.int64())])

    def __iter__(self):
        raise pa.ArrowInvalid("")


def test_a_node_error_without_a_message_still_names_the_domain() -> None:
    """Was an IndexError inside the error path of a failing fragment stream."""
    stream = FragmentStream(SimpleNamespace(domain="sales"), "grpc://x", _FailingReader())
    with pytest.raises(QueryFailed, match="domain sales's node could not run its part"):
        list(stream.batches())


def test_no_module_takes_the_first_line_by_hand() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((Path(REPO) / "gateway").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"splitlines\(\)\[0\]", line) and not line.lstrip().startswith("#")
    ]
    assert offenders == [], f"use gateway.errors.first_line: {offenders}"


def test_node_action_names_are_defined_once() -> None:
    """The gateway's side names node actions by the node's own constants, never retyped."""
    from gateway.mesh import node

    assert (node.ACTION_HEALTH, node.ACTION_STATS, node.ACTION_SCHEMA) == (
        node_actions.ACTION_HEALTH,
        node_actions.ACTION_STATS,
        node_actions.ACTION_SCHEMA,
    )
    for module in ("gateway/mesh/federation.py", "benchmarks/launch.py"):
        text = (Path(REPO) / module).read_text(encoding="utf-8")
        retyped = re.findall(r"""["'](health|stats|schema)["']""", text)
        assert retyped == [], f"{module} retypes node action names: {retyped}"
