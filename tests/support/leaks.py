"""The adversarial suite's ground truth and leak detector.

The truth is read straight from the demo mesh's files with DuckDB (never through the
gateway), so a test can assert that a sensitive value is absent from everything a client
receives: rows, column and struct-field names, and error messages (``leaks``).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb

from support.clients import Outcome
from support.oracle import CUSTOMERS_PARQUET, ORDERS_DB, SHIPMENTS_DIR, sql_string

#: A raw SSN anywhere in a string (demo SSNs are NNN-NN-NNNN).
RAW_SSN = re.compile(r"(?<![0-9])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9])")
#: A raw demo email (first.last<id>@example.com); masked ones look like t***@example.com.
RAW_EMAIL = re.compile(r"[a-z]+\.[a-z]+[0-9]+@example\.com")
#: The engine's internal alias of an attached DuckDB product file.
INTERNAL_ALIAS = re.compile(r"src_[0-9a-f]{12}")
LOGISTICS_COLUMNS = frozenset({"shipment_id", "carrier", "shipped_at"})


@dataclass(frozen=True)
class Truth:
    """What the demo mesh really holds, including everything most users must never see."""

    mesh_dir: str
    hash_key: str = field(repr=False)  # never printed by a failing test
    raw_ssns: frozenset[str] = field(repr=False)
    raw_emails: frozenset[str] = field(repr=False)
    ssn_hashes: frozenset[str] = field(repr=False)  # sha256(key || ssn): alice's view of ssn
    email_hashes: frozenset[str] = field(repr=False)  # sha256(key || email): carol's view of email
    eu_order_ids: frozenset[int] = field(repr=False)
    non_eu_order_ids: tuple[int, ...] = ()  # a few US / APAC orders
    orders_by_region: dict[str, int] = field(default_factory=dict)
    eu_amount_sum: Decimal = Decimal(0)
    eu_max_order_id: int = 0
    eu_min_amount: Decimal = Decimal(0)
    eu_max_amount: Decimal = Decimal(0)
    carriers: frozenset[str] = frozenset()
    customers: int = 0
    shipments: int = 0
    sample_customer: dict = field(default_factory=dict, repr=False)  # customer 1 with raw values
    us_customer: dict = field(default_factory=dict, repr=False)  # a US customer with raw values

    @property
    def customers_parquet(self) -> str:
        return str(Path(self.mesh_dir) / CUSTOMERS_PARQUET)

    @property
    def shipments_glob(self) -> str:
        return str(Path(self.mesh_dir) / SHIPMENTS_DIR / "**" / "*.parquet")

    def hashed(self, value: str) -> str:
        return hashlib.sha256((self.hash_key + value).encode()).hexdigest()


def read_truth(mesh: Path) -> Truth:
    config = tomllib.loads((mesh / "mesh.toml").read_text())
    key = config["governance"]["hash_key"]
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {sql_string(str(mesh / ORDERS_DB))} AS raw_sales (READ_ONLY)")
        customers = f"read_parquet({sql_string(str(mesh / CUSTOMERS_PARQUET))})"
        shipments = f"read_parquet({sql_string(str(mesh / SHIPMENTS_DIR / '**' / '*.parquet'))}, hive_partitioning = true)"
        rows = con.sql(
            f"SELECT customer_id, name, email, ssn, region FROM {customers} ORDER BY customer_id"
        ).fetchall()
        ssns = frozenset(r[3] for r in rows)
        emails = frozenset(r[2] for r in rows)
        by_region = dict(
            con.sql("SELECT region, count(*) FROM raw_sales.main.orders GROUP BY ALL").fetchall()
        )
        eu_ids = frozenset(
            r[0]
            for r in con.sql(
                "SELECT order_id FROM raw_sales.main.orders WHERE region = 'EU'"
            ).fetchall()
        )
        non_eu = tuple(
            r[0]
            for r in con.sql(
                "SELECT order_id FROM raw_sales.main.orders WHERE region <> 'EU' ORDER BY order_id LIMIT 5"
            ).fetchall()
        )
        eu_sum, eu_max_id, eu_min_amount, eu_max_amount = con.sql(
            "SELECT sum(amount), max(order_id), min(amount), max(amount) FROM raw_sales.main.orders WHERE region = 'EU'"
        ).fetchall()[0]
        carriers = frozenset(
            r[0] for r in con.sql(f"SELECT DISTINCT carrier FROM {shipments}").fetchall()
        )
        shipment_count = con.sql(f"SELECT count(*) FROM {shipments}").fetchall()[0][0]
    finally:
        con.close()
    columns = ("customer_id", "name", "email", "ssn", "region")
    us_row = next(r for r in rows if r[4] == "US")
    return Truth(
        mesh_dir=str(mesh.resolve()),
        hash_key=key,
        raw_ssns=ssns,
        raw_emails=emails,
        ssn_hashes=frozenset(hashlib.sha256((key + s).encode()).hexdigest() for s in ssns),
        email_hashes=frozenset(hashlib.sha256((key + e).encode()).hexdigest() for e in emails),
        eu_order_ids=eu_ids,
        non_eu_order_ids=non_eu,
        orders_by_region=by_region,
        eu_amount_sum=eu_sum,
        eu_max_order_id=eu_max_id,
        eu_min_amount=eu_min_amount,
        eu_max_amount=eu_max_amount,
        carriers=carriers,
        customers=len(rows),
        shipments=shipment_count,
        sample_customer=dict(zip(columns, rows[0], strict=True)),
        us_customer=dict(zip(columns, us_row, strict=True)),
    )


# --------------------------------------------------------------------------- leaks


def leaks(outcome: Outcome, truth: Truth, user: str, *, orders_only: bool = False) -> list[str]:
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
            at = text.find(truth.hash_key)
            start = max(0, at - 120) if at >= 0 else 0
            shown = text[start : start + 260].replace(truth.hash_key, "<HASH KEY>")
            problems.append(f"{kind}: {shown!r}")

    echo = outcome.sql + repr(outcome.params)  # what the user sent may come back

    def found(pattern: re.Pattern, text: str) -> bool:
        return any(m.group() not in echo for m in pattern.finditer(text))

    for text in outcome.texts():
        if truth.hash_key in text:
            report("hash key", text)
        if found(RAW_SSN, text):
            report("raw ssn", text)
        if found(RAW_EMAIL, text):
            report("raw email", text)
        if truth.mesh_dir in text and truth.mesh_dir not in echo:
            report("server path of the mesh", text)
        if found(INTERNAL_ALIAS, text):
            report("internal engine alias", text)
        if user in ("carol", "dave") and text in truth.ssn_hashes:
            report("ssn (hashed) for a user denied ssn", text)
        if user != "erin" and text in truth.carriers:
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
            if isinstance(v, int) and v not in truth.eu_order_ids
        ]
        if outside:
            report("order_id outside the user's row filter", str(outside[:5]))
    return problems


def assert_no_leak(outcome: Outcome, truth: Truth, user: str, *, orders_only: bool = False) -> None:
    found = leaks(outcome, truth, user, orders_only=orders_only)
    assert not found, (
        f"LEAK for {user}: {found}\n  statement: {outcome.sql[:400]!r}\n  got: "
        + outcome.describe().replace(truth.hash_key, "<HASH KEY>")
    )
