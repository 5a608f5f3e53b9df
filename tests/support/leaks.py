"""The leak detector of the adversarial suite: is anything a user must not see in what a
client received (rows, column and struct-field names, error messages)?

What must not be seen comes from the oracle (``support.oracle``): the raw secrets read
straight from the demo mesh's files, never through the gateway.
"""

from __future__ import annotations

import re

from support.clients import Outcome
from support.oracle import Oracle

#: A raw SSN anywhere in a string (demo SSNs are NNN-NN-NNNN).
RAW_SSN = re.compile(r"(?<![0-9])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9])")
#: A raw demo email (first.last<id>@example.com); masked ones look like t***@example.com.
RAW_EMAIL = re.compile(r"[a-z]+\.[a-z]+[0-9]+@example\.com")
#: The engine's internal alias of an attached DuckDB product file.
INTERNAL_ALIAS = re.compile(r"src_[0-9a-f]{12}")
LOGISTICS_COLUMNS = frozenset({"shipment_id", "carrier", "shipped_at"})


# --------------------------------------------------------------------------- leaks


def leaks(outcome: Outcome, oracle: Oracle, user: str, *, orders_only: bool = False) -> list[str]:
    """Everything in ``outcome`` that ``user`` must not see (empty when nothing leaks).

    Always: the hash key, raw SSNs, raw emails, the server's mesh path, internal aliases.
    carol and dave: no ssn column and no ssn hash at all.
    alice, carol, dave: nothing from logistics.shipments (its columns or carrier values).
    ``orders_only`` (alice, a query reading only sales.orders): no US/APAC region value and
    no order_id outside the EU.
    """
    problems: list[str] = []
    seen: set[str] = set()

    def report(kind: str, text: str) -> None:
        if kind not in seen:
            seen.add(kind)
            at = text.find(oracle.hash_key)
            start = max(0, at - 120) if at >= 0 else 0
            shown = text[start : start + 260].replace(oracle.hash_key, "<HASH KEY>")
            problems.append(f"{kind}: {shown!r}")

    echo = outcome.sql + repr(outcome.params)  # what the user sent may come back

    def found(pattern: re.Pattern, text: str) -> bool:
        return any(m.group() not in echo for m in pattern.finditer(text))

    for text in outcome.texts():
        if oracle.hash_key in text:
            report("hash key", text)
        if found(RAW_SSN, text):
            report("raw ssn", text)
        if found(RAW_EMAIL, text):
            report("raw email", text)
        if oracle.mesh_dir in text and oracle.mesh_dir not in echo:
            report("server path of the mesh", text)
        if found(INTERNAL_ALIAS, text):
            report("internal engine alias", text)
        if user in ("carol", "dave") and text in oracle.ssn_hashes:
            report("ssn (hashed) for a user denied ssn", text)
        if user != "erin" and text in oracle.carriers:
            report("logistics carrier value", text)
        if orders_only and text in ("US", "APAC"):
            report("region outside the user's row filter", text)
    if user in ("carol", "dave") and "ssn" in {c.lower() for c in outcome.columns}:
        report("ssn column for a user denied ssn", str(outcome.columns))
    if user != "erin" and LOGISTICS_COLUMNS & {c.lower() for c in outcome.columns}:
        report("logistics columns", str(outcome.columns))
    if orders_only:
        outside = [
            v
            for v in outcome.values("order_id")
            if isinstance(v, int) and v not in oracle.eu_order_ids
        ]
        if outside:
            report("order_id outside the user's row filter", str(outside[:5]))
    return problems


def assert_no_leak(
    outcome: Outcome, oracle: Oracle, user: str, *, orders_only: bool = False
) -> None:
    found = leaks(outcome, oracle, user, orders_only=orders_only)
    assert not found, (
        f"LEAK for {user}: {found}\n  statement: {outcome.sql[:400]!r}\n  got: "
        + outcome.describe().replace(oracle.hash_key, "<HASH KEY>")
    )
