"""Policy files are reloaded while the gateway serves; a broken file never opens access.

Every test starts its own gateway on a private copy of the demo mesh, edits policy files
and contracts on disk, and polls (at most 10 s) until the change is in force. The watcher
checks the files every second.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.flight as flight
import pytest
from support.clients import adbc_connect, flight_client
from support.logs import log_records
from support.oracle import DENIED_TEMPLATE, hash_key, sql_string
from support.polling import wait_through_errors, wait_until
from support.servers import RunningGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.slow

RELOAD_TIMEOUT = 10.0
MARKETING_SSN_DENY = "p, marketing, crm.customers.ssn, read, deny"
MARKETING_READ = "p, marketing, crm.customers, read, allow"
PII_HASH = "p, *, tag:pii, mask, allow, hash"


@pytest.fixture
def served(mesh_copy: Path, tmp_path: Path) -> Iterator[RunningGateway]:
    running = start_gateway(mesh_copy, tmp_path / "gateway.log")
    yield running
    stop_gateway(running)


def query(gateway: RunningGateway, user: str, sql: str, params=None):
    """Run ``sql`` as ``user`` on a fresh connection; the result as a list of dicts."""
    connection = adbc_connect(gateway.uri, user)
    try:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        table = cursor.fetch_arrow_table()
        with contextlib.suppress(Exception):
            cursor.close()
        return table
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def columns_of(gateway: RunningGateway, user: str, product: str) -> list[str]:
    return query(gateway, user, f"SELECT * FROM {product} LIMIT 1").column_names


def denied(gateway: RunningGateway, user: str, product: str) -> bool:
    try:
        query(gateway, user, f"SELECT count(*) FROM {product}")
    except Exception as exc:  # noqa: BLE001
        assert DENIED_TEMPLATE.format(key=product) in str(exc), exc
        return True
    return False


def is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")


def rewrite(path: Path, text: str) -> None:
    """Replace a file's content so that the watcher sees a new size or mtime."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns == before:  # coarse clock: make the change visible
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def without_line(path: Path, line: str) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [entry for entry in lines if entry.strip() != line]
    assert len(kept) == len(lines) - 1, f"{line!r} not found once in {path}"
    return "\n".join(kept) + "\n"


def rejections(gateway: RunningGateway) -> list[dict]:
    return log_records(gateway.log(), "policy_rejected")


def wait_for_rejection(gateway: RunningGateway, path: Path, line: int, after: int = 0) -> dict:
    """The first policy_rejected log record for ``path``:``line`` among those after the
    first ``after`` rejections."""

    def found():
        return next(
            (
                r
                for r in rejections(gateway)[after:]
                if Path(str(r.get("file"))).resolve() == path.resolve() and r.get("line") == line
            ),
            None,
        )

    return wait_through_errors(
        found, RELOAD_TIMEOUT, what=f"a policy_rejected log line for {path}:{line}"
    )


# --------------------------------------------------------------------------- changes take effect


def test_domain_grant_and_revocation_take_effect_within_seconds(served: RunningGateway):
    mesh = served.mesh_dir
    crm_policy = mesh / "crm" / "policy.csv"
    assert columns_of(served, "carol", "crm.customers") == [
        "customer_id",
        "name",
        "email",
        "region",
    ]

    # Grant: drop the ssn deny; carol now sees ssn, hashed by the global pii floor.
    rewrite(crm_policy, without_line(crm_policy, MARKETING_SSN_DENY))
    wait_through_errors(
        lambda: "ssn" in columns_of(served, "carol", "crm.customers"),
        RELOAD_TIMEOUT,
        what="carol sees ssn",
    )
    rows = query(
        served, "carol", "SELECT customer_id, ssn FROM crm.customers ORDER BY 1 LIMIT 3"
    ).to_pylist()
    key = hash_key(mesh)
    con = duckdb.connect()
    try:
        for row in rows:
            raw = con.execute(
                f"SELECT ssn FROM read_parquet({sql_string(str(mesh / 'crm/data/customers.parquet'))}) "
                f"WHERE customer_id = {row['customer_id']}"
            ).fetchone()[0]
            expected = con.execute(
                f"SELECT sha256({sql_string(key)} || {sql_string(raw)})"
            ).fetchone()[0]
            assert row["ssn"] == expected
    finally:
        con.close()
    objects = adbc_connect(served.uri, "carol")
    try:
        schema = objects.adbc_get_table_schema("customers", db_schema_filter="crm")
        assert "ssn" in schema.names
    finally:
        objects.close()

    # Revoke: carol's role no longer reads crm.customers at all.
    rewrite(crm_policy, without_line(crm_policy, MARKETING_READ))
    wait_through_errors(
        lambda: denied(served, "carol", "crm.customers"), RELOAD_TIMEOUT, what="carol denied"
    )
    # Nobody else lost anything.
    assert "ssn" in columns_of(served, "alice", "crm.customers")


def test_a_revocation_written_with_the_old_size_and_mtime_takes_effect(served: RunningGateway):
    """A policy file rewritten in place to the same size with its old mtime put back (as
    ``cp -p`` or ``rsync -t`` of a staged copy leaves it): only its change time tells,
    and the revocation must still take effect."""
    crm_policy = served.mesh_dir / "crm" / "policy.csv"
    assert not denied(served, "carol", "crm.customers")
    text = crm_policy.read_text(encoding="utf-8")
    revoked = text.replace(MARKETING_READ, "#" + MARKETING_READ[1:])  # same size
    assert revoked != text and len(revoked) == len(text)
    before = crm_policy.stat()
    wait_until(  # the change time moves on (its clock ticks in jiffies on some kernels)
        lambda: time.time_ns() > before.st_ctime_ns + 10_000_000, what="the clock to move"
    )
    with crm_policy.open("r+", encoding="utf-8") as handle:
        handle.write(revoked)
    os.utime(crm_policy, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = crm_policy.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert wait_through_errors(
        lambda: denied(served, "carol", "crm.customers"),
        RELOAD_TIMEOUT,
        what="carol's read of crm.customers revoked",
    )


def test_prepared_statement_is_reauthorized_after_a_revocation(served: RunningGateway):
    crm_policy = served.mesh_dir / "crm" / "policy.csv"
    sql = "SELECT count(*) AS n FROM crm.customers WHERE region = ?"
    connection = adbc_connect(served.uri, "carol")
    try:
        cursor = connection.cursor()
        cursor.adbc_prepare(sql)
        cursor.execute(sql, ("EU",))
        assert cursor.fetch_arrow_table().column("n")[0].as_py() > 0
        rewrite(crm_policy, without_line(crm_policy, MARKETING_READ))
        wait_through_errors(
            lambda: denied(served, "carol", "crm.customers"), RELOAD_TIMEOUT, what="carol denied"
        )
        # The statement prepared before the revocation executes again: it must be refused.
        with pytest.raises(Exception) as refused:
            cursor.execute(sql, ("US",))
            cursor.fetch_arrow_table()
        assert DENIED_TEMPLATE.format(key="crm.customers") in str(refused.value)
        with contextlib.suppress(Exception):
            cursor.close()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def test_ticket_issued_before_a_revocation_is_not_redeemed_after_it(served: RunningGateway):
    """GetFlightInfo hands out a ticket valid for minutes; DoGet runs the query. A ticket
    obtained before a revocation must not read data once the revocation is in force."""
    crm_policy = served.mesh_dir / "crm" / "policy.csv"
    client, options = flight_client(served.uri, "carol")
    try:
        sql = b"SELECT customer_id, email FROM crm.customers"
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)
        rewrite(crm_policy, without_line(crm_policy, MARKETING_READ))
        wait_through_errors(
            lambda: denied(served, "carol", "crm.customers"), RELOAD_TIMEOUT, what="carol denied"
        )
        try:
            table = client.do_get(info.endpoints[0].ticket, options).read_all()
        except (flight.FlightError, Exception) as exc:  # noqa: BLE001
            assert "customers" in str(exc) or "ticket" in str(exc).lower(), exc
        else:
            pytest.fail(
                f"a revoked user redeemed an old ticket and read {table.num_rows} rows of crm.customers"
            )
    finally:
        client.close()


# --------------------------------------------------------------------------- broken files


def test_broken_domain_line_keeps_the_last_good_policy_and_logs_file_and_line(
    served: RunningGateway,
):
    crm_policy = served.mesh_dir / "crm" / "policy.csv"
    demo_text = crm_policy.read_text(encoding="utf-8")
    # A good change first, so that "last good" differs from the demo policy.
    rewrite(crm_policy, without_line(crm_policy, MARKETING_SSN_DENY))
    wait_through_errors(
        lambda: "ssn" in columns_of(served, "carol", "crm.customers"),
        RELOAD_TIMEOUT,
        what="carol sees ssn",
    )
    seen = columns_of(served, "carol", "crm.customers")

    # Broken: the demo text again (which would hide ssn) plus a line naming another
    # domain's product (which would grant sales.orders).
    broken = demo_text + "p, marketing, sales.orders, read, allow\n"
    bad_line = len(broken.splitlines())
    rewrite(crm_policy, broken)
    record = wait_for_rejection(served, crm_policy, bad_line)
    assert "sales" in record["error"] and f":{bad_line}" in record["error"]
    assert record.get("level") == "error"
    assert columns_of(served, "carol", "crm.customers") == seen  # last good version
    assert denied(served, "carol", "sales.orders")
    assert is_hash(
        query(served, "carol", "SELECT ssn FROM crm.customers LIMIT 1").column(0)[0].as_py()
    )

    # Another broken line: an unknown mask name.
    broken = demo_text + "p, marketing, crm.customers.email, mask, allow, no_such_mask\n"
    bad_line = len(broken.splitlines())
    earlier = len(rejections(served))
    rewrite(crm_policy, broken)
    record = wait_for_rejection(served, crm_policy, bad_line, after=earlier)
    assert "no_such_mask" in record["error"]
    assert columns_of(served, "carol", "crm.customers") == seen

    # Fixed: the demo policy is in force again.
    rewrite(crm_policy, demo_text)
    wait_through_errors(
        lambda: "ssn" not in columns_of(served, "carol", "crm.customers"),
        RELOAD_TIMEOUT,
        what="the fixed file in force",
    )


def test_broken_global_file_keeps_the_pii_floor(served: RunningGateway):
    global_policy = served.mesh_dir / "policies" / "global.csv"
    # Would unmask every pii column for everyone, if the broken file were applied.
    broken = without_line(global_policy, PII_HASH) + "p, *, tag:pii, mask, allow, no_such_mask\n"
    bad_line = len(broken.splitlines())
    rewrite(global_policy, broken)
    record = wait_for_rejection(served, global_policy, bad_line)
    assert "global.csv" in record["error"] and "no_such_mask" in record["error"]
    row = query(
        served, "carol", "SELECT email FROM crm.customers ORDER BY customer_id LIMIT 1"
    ).to_pylist()[0]
    assert is_hash(row["email"])
    row = query(
        served, "alice", "SELECT ssn FROM crm.customers ORDER BY customer_id LIMIT 1"
    ).to_pylist()[0]
    assert is_hash(row["ssn"])
    assert denied(served, "dave", "crm.customers")


def test_global_file_broken_from_the_start_closes_every_domain(mesh_copy: Path, tmp_path: Path):
    global_policy = mesh_copy / "policies" / "global.csv"
    global_policy.write_text(
        global_policy.read_text(encoding="utf-8") + "p, admin, *, read\n", encoding="utf-8"
    )
    running = start_gateway(mesh_copy, tmp_path / "gateway.log")
    try:
        for user, product in (
            ("bob", "sales.orders"),
            ("bob", "crm.customers"),
            ("carol", "crm.customers"),
            ("alice", "sales.orders"),
            ("erin", "logistics.shipments"),
        ):
            assert denied(running, user, product), (user, product)
        connection = adbc_connect(running.uri, "bob")
        try:
            objects = connection.adbc_get_objects(depth="tables").read_all().to_pylist()
            assert all(not catalog["catalog_db_schemas"] for catalog in objects)
        finally:
            connection.close()
        assert any(
            r.get("line") == len(global_policy.read_text().splitlines())
            for r in log_records(running.log(), "policy_rejected")
        )
    finally:
        stop_gateway(running)


def test_domain_file_broken_from_the_start_closes_only_that_domain(mesh_copy: Path, tmp_path: Path):
    crm_policy = mesh_copy / "crm" / "policy.csv"
    crm_policy.write_text(
        crm_policy.read_text(encoding="utf-8") + "p, marketing, crm.customers, peek, allow\n",
        encoding="utf-8",
    )
    running = start_gateway(mesh_copy, tmp_path / "gateway.log")
    try:
        assert denied(running, "carol", "crm.customers")
        assert denied(running, "alice", "crm.customers")
        assert query(running, "alice", "SELECT DISTINCT region FROM sales.orders").to_pylist() == [
            {"region": "EU"}
        ]
        assert (
            query(running, "erin", "SELECT count(*) AS n FROM logistics.shipments")
            .column(0)[0]
            .as_py()
            > 0
        )
    finally:
        stop_gateway(running)


# --------------------------------------------------------------------------- new products


def test_new_product_with_a_pii_column_is_masked_by_the_tag_rule(served: RunningGateway):
    """crm publishes crm.contacts (email and ssn tagged pii, one email NULL) and grants
    marketing crm.*; with no mask line of its own, the global tag:pii floor hashes them."""
    mesh = served.mesh_dir
    key = hash_key(mesh)
    data = mesh / "crm" / "data" / "contacts.parquet"
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT customer_id, name, CASE WHEN customer_id = 2 THEN NULL ELSE email END AS email, "
            f"ssn, region FROM read_parquet({sql_string(str(mesh / 'crm/data/customers.parquet'))}) "
            f"WHERE customer_id <= 5 ORDER BY customer_id) TO {sql_string(str(data))} (FORMAT parquet)"
        )
        expected = (
            con.sql(
                f"SELECT customer_id, CASE WHEN email IS NULL THEN NULL ELSE sha256({sql_string(key)} || email) END AS email, "
                f"sha256({sql_string(key)} || ssn) AS ssn FROM read_parquet({sql_string(str(data))}) ORDER BY 1"
            )
            .to_arrow_table()
            .to_pylist()
        )
    finally:
        con.close()
    contract = (mesh / "crm" / "customers.odcs.yaml").read_text(encoding="utf-8")
    contract = (
        contract.replace("urn:meshgate:crm:customers", "urn:meshgate:crm:contacts")
        .replace("name: customers", "name: contacts")
        .replace("dataProduct: customers", "dataProduct: contacts")
        .replace("data/customers.parquet", "data/contacts.parquet")
        .replace("required: true", "required: false")
    )
    (mesh / "crm" / "contacts.odcs.yaml").write_text(contract, encoding="utf-8")
    crm_policy = mesh / "crm" / "policy.csv"
    rewrite(
        crm_policy, crm_policy.read_text(encoding="utf-8") + "p, marketing, crm.*, read, allow\n"
    )

    def carol_reads_contacts():
        return query(
            served, "carol", "SELECT customer_id, email, ssn FROM crm.contacts ORDER BY 1"
        ).to_pylist()

    rows = wait_through_errors(
        carol_reads_contacts, RELOAD_TIMEOUT, what="carol reads crm.contacts"
    )
    assert rows == expected
    assert rows[1]["email"] is None  # NULL stays NULL under the hash mask
    # crm.customers keeps its own rule: ssn is still invisible there.
    assert "ssn" not in columns_of(served, "carol", "crm.customers")
    # bob (pii_reader) reads the new product unmasked; alice has no grant on it.
    bob = (
        query(served, "bob", "SELECT email FROM crm.contacts WHERE customer_id = 1")
        .column(0)[0]
        .as_py()
    )
    assert bob.endswith("@example.com")
    assert denied(served, "alice", "crm.contacts")
    assert denied(served, "dave", "crm.contacts")


def policy_versions(gateway: RunningGateway) -> list[int]:
    return [r["version"] for r in log_records(gateway.log(), "policy_loaded")]


def test_deleted_global_file_does_not_drop_the_pii_floor(served: RunningGateway):
    """A global file that disappears (a deploy that unlinks before it writes, a bad
    checkout) must not lift the mesh-wide pii floor: fail closed, like a broken file."""
    global_policy = served.mesh_dir / "policies" / "global.csv"
    loaded = len(policy_versions(served))
    rejected = len(rejections(served))
    global_policy.unlink()
    wait_through_errors(
        lambda: len(policy_versions(served)) > loaded or len(rejections(served)) > rejected,
        RELOAD_TIMEOUT,
        what="the watcher to notice the missing global file",
    )
    try:
        row = query(
            served, "alice", "SELECT ssn, email FROM crm.customers ORDER BY customer_id LIMIT 1"
        ).to_pylist()
    except Exception as exc:  # noqa: BLE001 - closing the mesh is failing closed too
        assert DENIED_TEMPLATE.format(key="crm.customers") in str(exc), exc
        return
    assert row and is_hash(row[0]["ssn"]), (
        f"alice reads raw pii once the global file is gone: {row}"
    )


def test_role_hierarchy_change_in_the_global_file_takes_effect(served: RunningGateway):
    """`g` lines reload too: making marketing a pii_reader lifts the hash on carol's
    email (the global floor's exemption); taking it back restores the hash."""
    global_policy = served.mesh_dir / "policies" / "global.csv"
    demo_text = global_policy.read_text(encoding="utf-8")
    sql = "SELECT email FROM crm.customers ORDER BY customer_id LIMIT 1"
    assert is_hash(query(served, "carol", sql).column(0)[0].as_py())
    rewrite(global_policy, demo_text + "g, marketing, pii_reader\n")
    wait_through_errors(
        lambda: query(served, "carol", sql).column(0)[0].as_py().endswith("@example.com"),
        RELOAD_TIMEOUT,
        what="carol's email unmasked",
    )
    assert "ssn" not in columns_of(
        served, "carol", "crm.customers"
    )  # the domain's deny still holds
    rewrite(global_policy, demo_text)
    wait_through_errors(
        lambda: is_hash(query(served, "carol", sql).column(0)[0].as_py()),
        RELOAD_TIMEOUT,
        what="carol's email hashed again",
    )
