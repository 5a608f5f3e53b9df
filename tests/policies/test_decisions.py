"""Policy decisions on small hand-written policies (no server, no data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.engine import Governor, Subject
from policies.errors import PolicyError
from policies.loader import GLOBAL_SCOPE, read_policy_file
from policies.rules import ColumnShape, ProductShape

KEY = "k" * 32
PRODUCTS = {
    "sales.orders": ProductShape(
        "sales",
        "orders",
        (
            ColumnShape("order_id", "BIGINT", frozenset()),
            ColumnShape("region", "VARCHAR", frozenset()),
            ColumnShape("amount", "DECIMAL(12,2)", frozenset()),
            ColumnShape("buyer_email", "VARCHAR", frozenset({"pii"})),
        ),
    ),
    "crm.customers": ProductShape(
        "crm",
        "customers",
        (
            ColumnShape("customer_id", "BIGINT", frozenset()),
            ColumnShape("email", "VARCHAR", frozenset({"pii"})),
            ColumnShape("ssn", "VARCHAR", frozenset({"pii"})),
        ),
    ),
}
GLOBAL = """\
g, admin, pii_reader
p, admin, *, read, allow
p, *, tag:pii, mask, allow, hash
p, pii_reader, tag:pii, mask, deny
"""


def governor(
    tmp_path: Path,
    domain_files: dict[str, str],
    global_text: str = GLOBAL,
) -> Governor:
    files = []
    (tmp_path / "global.csv").write_text(global_text)
    files.append(read_policy_file(tmp_path / "global.csv", GLOBAL_SCOPE, PRODUCTS, KEY))
    for domain, text in domain_files.items():
        path = tmp_path / f"{domain}.csv"
        path.write_text(text)
        files.append(read_policy_file(path, domain, PRODUCTS, KEY))
    return Governor(files, PRODUCTS, KEY)


def subject(user: str, roles: tuple[str, ...] = (), **attributes: object) -> Subject:
    return Subject(user, roles, attributes)


def test_default_deny_and_admin_reads_everything_unmasked(tmp_path):
    gov = governor(tmp_path, {})
    assert not gov.access(subject("dave"), "sales.orders").allowed
    access = gov.access(subject("bob", ("admin",)), "crm.customers")
    assert access.allowed and access.row_filter is None
    assert all(c.visible and c.mask is None for c in access.columns)


def test_global_pii_floor_masks_every_tagged_column(tmp_path):
    gov = governor(tmp_path, {"sales": "p, analyst, sales.orders, read, allow\n"})
    columns = {c.name: c for c in gov.access(subject("ann", ("analyst",)), "sales.orders").columns}
    assert columns["buyer_email"].mask.spec == "hash"
    assert (
        "global" in columns["buyer_email"].reasons[0]
        or "global.csv" in columns["buyer_email"].reasons[0]
    )
    assert columns["amount"].mask is None


def test_domain_can_choose_another_mask_but_never_unmask(tmp_path):
    crm = (
        "p, analyst, crm.customers, read, allow\n"
        "p, analyst, crm.customers.email, mask, allow, partial_email\n"
        "p, analyst, crm.customers.ssn, mask, deny\n"  # an attempt to unmask: the floor holds
    )
    gov = governor(tmp_path, {"crm": crm})
    columns = {c.name: c for c in gov.access(subject("ann", ("analyst",)), "crm.customers").columns}
    assert columns["email"].mask.spec == "partial_email"
    assert columns["ssn"].mask.spec == "hash"


def test_explicit_deny_overrides_allow(tmp_path):
    crm = "p, analyst, crm.customers, read, allow\np, ann, crm.customers, read, deny\n"
    gov = governor(tmp_path, {"crm": crm})
    assert not gov.access(subject("ann", ("analyst",)), "crm.customers").allowed
    assert gov.access(subject("bea", ("analyst",)), "crm.customers").allowed


def test_column_deny_makes_column_invisible(tmp_path):
    crm = "p, mkt, crm.customers, read, allow\np, mkt, crm.customers.ssn, read, deny\n"
    gov = governor(tmp_path, {"crm": crm})
    access = gov.access(subject("cat", ("mkt",)), "crm.customers")
    assert [c.name for c in access.visible_columns] == ["customer_id", "email"]


def test_domain_wildcard_grant(tmp_path):
    gov = governor(tmp_path, {"sales": "p, ops, sales.*, read, allow\n"})
    assert gov.access(subject("eve", ("ops",)), "sales.orders").allowed
    assert not gov.access(subject("eve", ("ops",)), "crm.customers").allowed


def test_row_filter_binds_user_attribute_as_a_literal(tmp_path):
    sales = "p, analyst, sales.orders, read, allow\np, analyst, sales.orders, filter, allow, region = {user.region}\n"
    gov = governor(tmp_path, {"sales": sales})
    access = gov.access(subject("ann", ("analyst",), region="EU' OR '1'='1"), "sales.orders")
    sql = access.row_filter.sql("duckdb")
    assert sql == "region = 'EU'' OR ''1''=''1'"  # one quoted literal: nothing spliced


def test_missing_attribute_means_no_rows(tmp_path):
    sales = "p, analyst, sales.orders, read, allow\np, analyst, sales.orders, filter, allow, region = {user.region}\n"
    gov = governor(tmp_path, {"sales": sales})
    assert (
        gov.access(subject("ann", ("analyst",)), "sales.orders").row_filter.sql("duckdb") == "FALSE"
    )


def test_several_roles_see_the_union_of_rows_and_the_least_mask(tmp_path):
    sales = (
        "p, eu, sales.orders, read, allow\n"
        "p, eu, sales.orders, filter, allow, region = 'EU'\n"
        "p, eu, sales.orders.amount, mask, allow, null\n"
        "p, us, sales.orders, read, allow\n"
        "p, us, sales.orders, filter, allow, region = 'US'\n"
        "p, us, sales.orders.amount, mask, allow, round:100\n"
    )
    gov = governor(tmp_path, {"sales": sales})
    access = gov.access(subject("mia", ("eu", "us")), "sales.orders")
    assert access.row_filter.sql("duckdb") == "region = 'EU' OR region = 'US'"
    amount = next(c for c in access.columns if c.name == "amount")
    assert amount.mask.spec == "round:100"


def test_a_role_without_filter_sees_every_row(tmp_path):
    sales = (
        "p, eu, sales.orders, read, allow\n"
        "p, eu, sales.orders, filter, allow, region = 'EU'\n"
        "p, auditor, sales.orders, read, allow\n"
    )
    gov = governor(tmp_path, {"sales": sales})
    assert gov.access(subject("mia", ("eu", "auditor")), "sales.orders").row_filter is None


def test_role_hierarchy_inherits_grants(tmp_path):
    global_text = GLOBAL + "g, senior, analyst\n"
    sales = "p, analyst, sales.orders, read, allow\n"
    gov = governor(tmp_path, {"sales": sales}, global_text)
    assert gov.access(subject("sam", ("senior",)), "sales.orders").allowed


@pytest.mark.parametrize(
    ("scope", "text", "fragment"),
    [
        ("crm", "p, mkt, sales.orders, read, allow\n", "belongs to domain 'sales'"),
        ("crm", "p, mkt, crm.nope, read, allow\n", "unknown product crm.nope"),
        ("crm", "p, mkt, crm.customers.nope, read, allow\n", "has no column 'nope'"),
        ("crm", "p, mkt, crm.customers.email, mask, allow, scramble\n", "unknown mask"),
        ("crm", "p, mkt, crm.customers.ssn, mask, allow, round:100\n", "does not apply"),
        ("crm", "p, mkt, crm.customers, filter, allow, nope = 1\n", "unknown column"),
        ("crm", "p, mkt, crm.customers, filter, allow, (SELECT 1) = 1\n", "not allowed"),
        ("crm", "p, mkt, crm.customers, filter, allow, getenv('HOME') = 'x'\n", "not allowed"),
        ("crm", "p, mkt, crm.customers.email, mask, allow, sql:random()\n", "not deterministic"),
        ("crm", "p, mkt, crm.customers, read, maybe\n", "unknown effect"),
        ("crm", "p, mkt, crm.customers, write, allow\n", "unknown action"),
        ("crm", "g, ann, mkt\n", "global policy file"),
        ("crm", "p, mkt, tag:pii, mask, allow, hash\n", "beyond this domain"),
        ("crm", "q, mkt, crm.customers, read, allow\n", "unknown line type"),
    ],
)
def test_invalid_lines_name_file_and_line(tmp_path, scope, text, fragment):
    path = tmp_path / f"{scope}.csv"
    path.write_text("# a comment\n\n" + text)
    with pytest.raises(PolicyError) as error:
        read_policy_file(path, scope, PRODUCTS, KEY)
    message = str(error.value)
    assert message.startswith(f"{path}:3:"), message
    assert fragment in message


def test_the_same_user_with_other_roles_or_attributes_is_decided_anew(tmp_path):
    """A token may bring the same user back with other roles or attributes: the cached
    decision of the first must never answer for the second."""
    sales = "p, eu, sales.orders, read, allow\np, eu, sales.orders, filter, allow, region = {user.region}\n"
    gov = governor(tmp_path, {"sales": sales})
    eu = gov.access(subject("ann", ("eu",), region="EU"), "sales.orders")
    us = gov.access(subject("ann", ("eu",), region="US"), "sales.orders")
    assert eu.row_filter.sql("duckdb") == "region = 'EU'"
    assert us.row_filter.sql("duckdb") == "region = 'US'"
    assert not gov.access(subject("ann", (), region="EU"), "sales.orders").allowed
    assert gov.access(subject("ann", ("eu",), region="EU"), "sales.orders") is eu  # cached
    typed = gov.access(subject("ann", ("eu",), region=True), "sales.orders")
    assert typed.row_filter.sql("duckdb") == "region = TRUE"
    assert (
        gov.access(subject("ann", ("eu",), region=1), "sales.orders").row_filter.sql("duckdb")
        == "region = 1"
    )


def test_roles_a_principal_holds_reach_what_policy_links_give_them(tmp_path):
    """A principal's own roles (mesh.toml's, or its token's) inherit through the policy's
    ``g`` links like a linked role, and deny still overrides."""
    global_text = GLOBAL + "g, senior, eu\np, contractor, sales.orders, read, deny\n"
    sales = "p, eu, sales.orders, read, allow\n"
    gov = governor(tmp_path, {"sales": sales}, global_text)
    assert gov.access(subject("sam", ("senior",)), "sales.orders").allowed
    assert not gov.access(subject("sam", ("senior", "contractor")), "sales.orders").allowed
    assert not gov.access(subject("sam", ()), "sales.orders").allowed
