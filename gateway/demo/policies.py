"""The demo mesh's policies: the platform's global floor and each domain's own rules."""

from __future__ import annotations

from pathlib import Path

GLOBAL_POLICY = """\
# Mesh-wide rules, owned by the platform team: the floor every domain builds on.
#   p, <subject>, <object>, <action>, <allow|deny>[, <argument>]   (see policies/model.conf)
#   g, <user or role>, <role>

# Roles: an admin also holds pii_reader.
g, admin, pii_reader

# Admins read every product of every domain.
p, admin, *, read, allow

# Every column tagged pii in a product contract is hashed (keyed, deterministic) ...
p, *, tag:pii, mask, allow, hash
# ... unless the user holds pii_reader. Domains may choose another mask, never none.
p, pii_reader, tag:pii, mask, deny
"""

DOMAIN_POLICIES = {
    "sales": """\
# Rules of the sales domain, owned by the sales data team.
p, analyst_eu, sales.orders, read, allow
p, analyst_eu, sales.orders, filter, allow, region = {user.region}
p, ops, sales.orders, read, allow
p, ops, sales.orders.amount, mask, allow, round:100
""",
    "crm": """\
# Rules of the crm domain, owned by the crm data team.
p, analyst_eu, crm.customers, read, allow
p, analyst_eu, crm.customers.email, mask, allow, partial_email
p, marketing, crm.customers, read, allow
p, marketing, crm.customers.ssn, read, deny
""",
    "logistics": """\
# Rules of the logistics domain, owned by the logistics data team.
p, ops, logistics.shipments, read, allow
""",
}

POLICY_TESTS = {
    "sales": """\
# Policy tests of the sales domain: `meshgate policy test` runs them.
- name: an EU analyst sees only EU orders
  user: alice
  query: SELECT DISTINCT region FROM sales.orders
  expect:
    rows: [["EU"]]
- name: ops sees amounts rounded to hundreds
  user: erin
  query: SELECT count(*) AS odd FROM sales.orders WHERE amount % 100 <> 0
  expect:
    rows: [[0]]
- name: marketing may not read orders
  user: carol
  query: SELECT count(*) FROM sales.orders
  expect:
    denied: true
- name: a user without roles reads nothing
  user: dave
  query: SELECT 1 FROM sales.orders LIMIT 1
  expect:
    denied: true
""",
    "crm": """\
# Policy tests of the crm domain.
- name: marketing does not see ssn at all
  user: carol
  query: SELECT * FROM crm.customers LIMIT 1
  expect:
    columns: [customer_id, name, email, region]
- name: marketing sees hashed emails
  user: carol
  query: SELECT email FROM crm.customers LIMIT 5
  expect:
    matches:
      email: "^[0-9a-f]{64}$"
- name: an EU analyst sees partial emails and hashed ssn
  user: alice
  query: SELECT email, ssn FROM crm.customers LIMIT 5
  expect:
    matches:
      email: "^[a-z]\\\\*\\\\*\\\\*@example\\\\.com$"
      ssn: "^[0-9a-f]{64}$"
- name: admins see real ssn
  user: bob
  query: SELECT ssn FROM crm.customers LIMIT 5
  expect:
    matches:
      ssn: "^9[0-9]{2}-[0-9]{2}-[0-9]{4}$"
""",
}


def write_demo_policies(target: Path) -> None:
    """Write the global policy, each domain's policy and policy tests under ``target``."""
    (target / "policies").mkdir(parents=True, exist_ok=True)
    (target / "policies" / "global.csv").write_text(GLOBAL_POLICY, encoding="utf-8")
    for domain, text in DOMAIN_POLICIES.items():
        (target / domain / "policy.csv").write_text(text, encoding="utf-8")
    for domain, text in POLICY_TESTS.items():
        (target / domain / "policy_tests.yaml").write_text(text, encoding="utf-8")
