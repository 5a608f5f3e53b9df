"""Accelerated products through ADBC on real gateways: the in-memory copy answers exactly
what the files answer, governed the same way; a rewritten file refreshes the copy; Health
and ``meshgate products`` say what is accelerated and how fresh."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from pyarrow import flight
from support.clients import CLIENT_ERRORS, adbc_connections, error_text, flight_client
from support.metrics import metrics_url, scrape
from support.oracle import raw_sources
from support.polling import wait_through_errors, wait_until
from support.servers import configure, copy_mesh, private_gateway

ACCELERATE_ALL = {"accelerate_below_bytes": 1024**3}

#: (user, statement) pairs covering masks, denied columns, row filters and joins
CASES = [
    ("bob", "SELECT * FROM crm.customers ORDER BY customer_id"),
    ("alice", "SELECT * FROM crm.customers ORDER BY customer_id"),
    ("carol", "SELECT * FROM crm.customers ORDER BY customer_id"),
    ("alice", "SELECT * FROM sales.orders ORDER BY order_id"),
    ("erin", "SELECT * FROM sales.orders ORDER BY order_id"),
    ("erin", "SELECT region, count(*) AS n FROM logistics.shipments GROUP BY region ORDER BY 1"),
    ("alice", "SELECT * FROM crm.customers WHERE customer_id = 42"),
    (
        "alice",
        (
            "SELECT c.region, sum(o.amount) AS total FROM sales.orders o "
            "JOIN crm.customers c USING (customer_id) GROUP BY 1 ORDER BY 1"
        ),
    ),
]


def _rows(conn, sql: str) -> pa.Table:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetch_arrow_table()


def _health(uri: str, user: str) -> dict:
    client, options = flight_client(uri, user)
    try:
        results = list(client.do_action(flight.Action("Health", b""), options))
    finally:
        client.close()
    return json.loads(results[0].body.to_pybytes())


@pytest.fixture(scope="module")
def accelerated(demo_mesh: Path, tmp_path_factory: pytest.TempPathFactory):
    with private_gateway(
        demo_mesh,
        tmp_path_factory.mktemp("accelerated"),
        engine=ACCELERATE_ALL,
        prepare=lambda mesh: configure(mesh, "metrics", port=0),
    ) as running:
        yield running


def test_every_demo_product_is_accelerated_and_reported(accelerated) -> None:
    health = _health(accelerated.uri, "bob")
    copies = health["accelerated"]["products"]
    assert set(copies) == {"crm.customers", "sales.orders", "logistics.shipments"}
    for facts in copies.values():
        assert facts["stale"] is False and facts["age_seconds"] >= 0
        assert "rows" not in facts and "bytes" not in facts  # sizes are the operator's


def test_metrics_report_the_memory_of_the_copies(accelerated) -> None:
    url = metrics_url(accelerated.events("gateway_started"))
    assert 0 < scrape(url).value("meshgate_accelerated_bytes") <= 512 * 1024**2


def test_user_health_lists_only_readable_accelerated_products(accelerated) -> None:
    copies = _health(accelerated.uri, "carol")["accelerated"]["products"]
    assert set(copies) == {"crm.customers"}


@pytest.mark.parametrize(("user", "sql"), CASES)
def test_accelerated_copy_answers_like_the_files(accelerated, gateway, user, sql) -> None:
    with adbc_connections() as connect:
        fast = _rows(connect(accelerated.uri, user), sql)
        cold = _rows(connect(gateway.uri, user), sql)
    assert fast.num_rows > 0
    assert fast.equals(cold), f"{user}: {sql}"


def test_alice_sees_only_her_region_of_an_accelerated_product(accelerated) -> None:
    with adbc_connections() as connect:
        regions = _rows(
            connect(accelerated.uri, "alice"), "SELECT DISTINCT region FROM sales.orders"
        )
    assert regions.column(0).to_pylist() == ["EU"]


def test_carol_never_reads_ssn_of_an_accelerated_product(accelerated, oracle) -> None:
    with adbc_connections() as connect:
        table = _rows(connect(accelerated.uri, "carol"), "SELECT * FROM crm.customers")
    assert "ssn" not in table.column_names
    secrets = {
        row[0]
        for row in oracle.raw_rows(f"SELECT ssn FROM {raw_sources(oracle.mesh)['crm.customers']}")
    }
    seen = {v for column in table.columns for v in column.to_pylist()}
    assert not (seen & secrets)


@pytest.mark.parametrize(
    "table",
    [
        '"__meshgate_accelerated"."crm.customers"',
        'memory."__meshgate_accelerated"."sales.orders"',
    ],
)
def test_the_hidden_copy_cannot_be_named(accelerated, table) -> None:
    with adbc_connections() as connect:
        conn = connect(accelerated.uri, "alice")
        with pytest.raises(CLIENT_ERRORS) as refused:
            _rows(conn, f"SELECT * FROM {table}")
    assert "@" not in error_text(refused.value)  # no email of the copy in the error


def test_a_rewritten_file_refreshes_the_copy(demo_mesh: Path, tmp_path: Path) -> None:
    with private_gateway(demo_mesh, tmp_path, engine=ACCELERATE_ALL) as running:
        before = _health(running.uri, "bob")["accelerated"]["products"]["crm.customers"]
        with adbc_connections() as connect:
            conn = connect(running.uri, "bob")
            assert _rows(conn, "SELECT count(*) FROM crm.customers").column(0)[0].as_py() == 20000
            parquet = running.mesh / "crm" / "data" / "customers.parquet"
            staged = parquet.with_suffix(".new")
            duckdb.sql(
                f"COPY (SELECT * FROM read_parquet('{parquet}') WHERE customer_id <= 500) "
                f"TO '{staged}' (FORMAT PARQUET)"
            )
            os.replace(staged, parquet)  # the publisher's atomic rewrite
            wait_until(
                lambda: (
                    _rows(conn, "SELECT count(*) FROM crm.customers").column(0)[0].as_py() == 500
                ),
                timeout=60,
                what="the accelerated copy to be refreshed",
            )
        after = wait_through_errors(
            lambda: _health(running.uri, "bob")["accelerated"]["products"]["crm.customers"],
            timeout=10,
        )
        assert after["loaded_at"] >= before["loaded_at"] and after["stale"] is False


def _epoch(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def test_queries_are_answered_from_the_old_copy_while_the_new_one_loads(
    demo_mesh: Path, tmp_path: Path
) -> None:
    """A refresh loads the new copy beside the old one: statements that start and end while
    it loads are answered (from the old copy), and every answer is wholly the old copy's or
    wholly the new one's, never a half-loaded one."""
    statement = "SELECT count(*) AS n, sum(customer_id) AS total FROM crm.customers"
    big = 2_000_000  # big enough that its load is a window many statements fit in
    with (
        private_gateway(demo_mesh, tmp_path, engine=ACCELERATE_ALL) as running,
        adbc_connections() as connect,
    ):
        conn = connect(running.uri, "bob")
        old = tuple(_rows(conn, statement).to_pylist()[0].values())
        new = (big, big * (big + 1) // 2)
        parquet = running.mesh / "crm" / "data" / "customers.parquet"
        staged = parquet.with_suffix(".new")
        duckdb.sql(
            "COPY (SELECT i::BIGINT AS customer_id, 'name ' || i AS name, "
            "'c' || i || '@example.com' AS email, printf('%03d-%02d-%04d', i % 1000, i % 100, "
            "i % 10000) AS ssn, ['EU', 'US', 'APAC'][1 + i % 3] AS region "
            f"FROM range(1, {big + 1}) t(i)) TO '{staged}' (FORMAT PARQUET)"
        )
        answers: list[tuple[float, float, tuple]] = []  # (started, ended, answer)

        def answered_new() -> bool:
            started = time.time()
            answer = tuple(_rows(conn, statement).to_pylist()[0].values())
            answers.append((started, time.time(), answer))
            return answer == new

        os.replace(staged, parquet)
        wait_until(answered_new, timeout=120, interval=0, what="the copy loaded from the new file")
        wait_until(lambda: running.events("catalog_reloaded"), timeout=10, what="the reload")
    loading = running.events("catalog_reloading")[-1]
    assert loading["refreshed"] == ["crm.customers"] and loading["contracts_changed"] is False
    begun, done = _epoch(loading), _epoch(running.events("catalog_reloaded")[-1])
    assert done > begun
    assert {answer for _, _, answer in answers} <= {old, new}
    during = [a for a in answers if begun < a[0] and a[1] < done]
    assert during, f"no statement was answered during the {done - begun:.3f} s the load took"
    assert {answer for _, _, answer in during} == {old}


def test_a_replaced_duckdb_file_refreshes_the_copy(demo_mesh: Path, tmp_path: Path) -> None:
    """A DuckDB product's publisher replaces its file whole (a gateway holds it attached,
    so nobody can write it in place): the copy is loaded again from the new file."""
    count = "SELECT count(*) FROM sales.orders"
    with (
        private_gateway(demo_mesh, tmp_path, engine=ACCELERATE_ALL) as running,
        adbc_connections() as connect,
    ):
        conn = connect(running.uri, "bob")
        total = _rows(conn, count).column(0)[0].as_py()
        database = running.mesh / "sales" / "data" / "orders.duckdb"
        staged = database.with_suffix(".new")
        with duckdb.connect(str(staged)) as con:
            con.execute("ATTACH ? AS published (READ_ONLY)", [str(database)])
            con.execute("CREATE TABLE orders AS FROM published.main.orders WHERE order_id <= 300")
            con.execute("DETACH published")
            kept = con.execute("SELECT count(*) FROM orders").fetchone()
        assert kept is not None and 0 < kept[0] < total
        os.replace(staged, database)
        wait_until(
            lambda: _rows(conn, count).column(0)[0].as_py() == kept[0],
            timeout=60,
            what="the copy of sales.orders loaded from the new file",
        )
        after = wait_through_errors(
            lambda: _health(running.uri, "bob")["accelerated"]["products"]["sales.orders"],
            timeout=10,
        )
        assert after["stale"] is False


def test_products_command_shows_acceleration(demo_mesh: Path, tmp_path: Path) -> None:
    mesh = copy_mesh(demo_mesh, tmp_path / "mesh")
    configure(mesh, "engine", **ACCELERATE_ALL)
    shown = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "products", str(mesh)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
        check=True,
    ).stdout
    lines = [line for line in shown.splitlines() if "crm.customers" in line]
    # this command's own copy: its size; how fresh a gateway's copy is, only from a gateway
    assert lines and "yes, " in lines[0] and "MB" in lines[0] and " s old" not in lines[0]
    assert "--uri" in shown


def test_products_command_shows_a_running_gateways_copies(accelerated) -> None:
    """With --uri, the accelerated column is what the running gateway holds (its Health),
    not a copy of the command's own: the age is the gateway's copy's."""
    wait_until(
        lambda: (
            _health(accelerated.uri, "bob")["accelerated"]["products"]["crm.customers"][
                "age_seconds"
            ]
            >= 2
        ),
        what="the gateway's copy two seconds old",
    )
    shown = subprocess.run(
        _products_argv(accelerated),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250", "MESHGATE_PASSWORD": "bob"},
        check=True,
    ).stdout
    for product in ("crm.customers", "sales.orders", "logistics.shipments"):
        (line,) = [line for line in shown.splitlines() if f" {product} " in line]
        age = re.search(r"yes, ([0-9.]+) s old", line)
        assert age is not None and float(age.group(1)) >= 2, line


def _products_argv(running) -> list[str]:
    return [
        *(sys.executable, "-m", "gateway.cli", "products", str(running.mesh)),
        *("--uri", running.uri, "--user", "bob"),
    ]


@pytest.mark.parametrize(
    "options",
    [
        ["--uri", "localhost:1"],  # no scheme
        ["--uri", "not a uri"],
        ["--uri", "grpc://127.0.0.1:1"],  # nobody listening
        ["--uri", "grpc+tls://127.0.0.1:1", "--tls-root-certs", "/nonexistent/ca.pem"],
    ],
)
def test_products_command_explains_an_unreachable_gateway(
    demo_mesh: Path, options: list[str]
) -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "products",
            str(demo_mesh),
            "--user",
            "bob",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MESHGATE_PASSWORD": "bob"},
    )
    assert shown.returncode == 1 and "crm.customers" not in shown.stdout
    assert "Traceback" not in shown.stderr and "error:" in shown.stderr


def test_products_command_refuses_a_wrong_password(accelerated) -> None:
    shown = subprocess.run(
        _products_argv(accelerated),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MESHGATE_PASSWORD": "not-bob"},
    )
    assert shown.returncode != 0 and "crm.customers" not in shown.stdout
    assert "Traceback" not in shown.stderr and shown.stderr.strip()


def test_a_copy_over_the_memory_budget_is_served_from_its_files(
    demo_mesh: Path, tmp_path: Path, gateway
) -> None:
    budget = {**ACCELERATE_ALL, "accelerate_memory_bytes": 1024}
    with private_gateway(demo_mesh, tmp_path, engine=budget) as running:
        assert _health(running.uri, "bob")["accelerated"]["products"] == {}
        assert "acceleration_over_budget" in running.log()
        sql = "SELECT * FROM crm.customers ORDER BY customer_id"
        with adbc_connections() as connect:
            assert _rows(connect(running.uri, "alice"), sql).equals(
                _rows(connect(gateway.uri, "alice"), sql)
            )


def test_a_contract_can_opt_a_product_in(demo_mesh: Path, tmp_path: Path) -> None:
    def opt_in(mesh: Path) -> None:
        contract = mesh / "crm" / "customers.odcs.yaml"
        contract.write_text(
            contract.read_text(encoding="utf-8")
            + "customProperties:\n  - property: accelerate\n    value: true\n",
            encoding="utf-8",
        )

    with private_gateway(demo_mesh, tmp_path, prepare=opt_in) as running:
        copies = _health(running.uri, "bob")["accelerated"]["products"]
    assert set(copies) == {"crm.customers"}


def test_a_copy_that_fails_to_load_is_loaded_once_its_files_change(
    demo_mesh: Path, tmp_path: Path
) -> None:
    pristine = demo_mesh / "crm" / "data" / "customers.parquet"

    def corrupt_pages(mesh: Path) -> None:  # the footer (the schema) stays readable
        with (mesh / "crm" / "data" / "customers.parquet").open("r+b") as handle:
            handle.seek(64)
            handle.write(b"\xff" * 4096)

    with private_gateway(
        demo_mesh, tmp_path, engine=ACCELERATE_ALL, prepare=corrupt_pages
    ) as running:
        copies = _health(running.uri, "bob")["accelerated"]["products"]
        assert "crm.customers" not in copies and "sales.orders" in copies
        assert "acceleration_failed" in running.log()
        staged = running.mesh / "crm" / "data" / "customers.new"
        shutil.copyfile(pristine, staged)
        os.replace(staged, running.mesh / "crm" / "data" / "customers.parquet")
        wait_through_errors(
            lambda: "crm.customers" in _health(running.uri, "bob")["accelerated"]["products"],
            timeout=60,
            what="the repaired product to be accelerated",
        )
        with adbc_connections() as connect:
            count = _rows(connect(running.uri, "bob"), "SELECT count(*) FROM crm.customers")
        assert count.column(0)[0].as_py() == 20000
