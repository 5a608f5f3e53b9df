"""The demo mesh: complete, well-typed, consistent across products and deterministic."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
import yaml
from open_data_contract_standard.model import OpenDataContractStandard

from gateway.catalog.contracts import find_contracts, read_contract
from gateway.catalog.source_check import check_columns
from gateway.config import load_config
from gateway.demo.mesh import write_demo_mesh
from gateway.security.passwords import verify_password

EXPECTED_TYPES = {
    "sales.orders": [
        ("order_id", "BIGINT"),
        ("customer_id", "BIGINT"),
        ("region", "VARCHAR"),
        ("amount", "DECIMAL(12,2)"),
        ("order_date", "DATE"),
    ],
    "crm.customers": [
        ("customer_id", "BIGINT"),
        ("name", "VARCHAR"),
        ("email", "VARCHAR"),
        ("ssn", "VARCHAR"),
        ("region", "VARCHAR"),
    ],
    "logistics.shipments": [
        ("shipment_id", "BIGINT"),
        ("order_id", "BIGINT"),
        ("carrier", "VARCHAR"),
        ("shipped_at", "TIMESTAMP"),
        ("region", "VARCHAR"),
    ],
}
ROW_COUNTS = {"sales.orders": 200_000, "crm.customers": 20_000, "logistics.shipments": 150_000}
CONTRACT_FILES = {
    "sales.orders": "sales/orders.odcs.yaml",
    "crm.customers": "crm/customers.odcs.yaml",
    "logistics.shipments": "logistics/shipments.odcs.yaml",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("demo") / "mesh"
    started = time.perf_counter()
    assert write_demo_mesh(target) == target
    print(f"demo mesh written in {time.perf_counter() - started:.2f}s")
    return target


def _connect(mesh_dir: Path) -> duckdb.DuckDBPyConnection:
    """Views named like the products, reading the data the way the connectors do."""
    con = duckdb.connect()
    con.execute("ATTACH ? AS sales (READ_ONLY)", [str(mesh_dir / "sales/data/orders.duckdb")])
    con.execute("CREATE SCHEMA crm")
    con.execute("CREATE SCHEMA logistics")
    customers = mesh_dir / "crm/data/customers.parquet"
    shipments = mesh_dir / "logistics/data/shipments/**/*.parquet"
    con.execute(f"CREATE VIEW crm.customers AS FROM read_parquet('{customers}')")
    con.execute(
        "CREATE VIEW logistics.shipments AS "
        f"FROM read_parquet('{shipments}', hive_partitioning = true)"
    )
    return con


def _table(product: str) -> str:
    return "sales.main.orders" if product == "sales.orders" else product


def _describe(con: duckdb.DuckDBPyConnection, product: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in con.execute(f"DESCRIBE {_table(product)}").fetchall()]


def test_layout(mesh: Path) -> None:
    for relative in [
        "mesh.toml",
        "README.md",
        "sales/data/orders.duckdb",
        "crm/data/customers.parquet",
        *CONTRACT_FILES.values(),
    ]:
        assert (mesh / relative).is_file(), relative
    partitions = sorted(p.name for p in (mesh / "logistics/data/shipments").iterdir())
    assert partitions == ["region=APAC", "region=EU", "region=US"]
    for partition in partitions:
        assert list((mesh / "logistics/data/shipments" / partition).glob("*.parquet"))


def test_schemas_and_row_counts(mesh: Path) -> None:
    con = _connect(mesh)
    for product, expected in EXPECTED_TYPES.items():
        assert _describe(con, product) == expected, product
        table = _table(product)
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == ROW_COUNTS[product]
        nulls = " + ".join(f"count(*) - count({name})" for name, _ in expected)
        assert con.execute(f"SELECT {nulls} FROM {table}").fetchone()[0] == 0, product


def test_value_ranges(mesh: Path) -> None:
    con = _connect(mesh)
    orders = con.execute(
        """SELECT min(order_id), max(order_id), count(DISTINCT order_id),
                  min(customer_id) >= 1 AND max(customer_id) <= 20000,
                  min(amount), max(amount), min(order_date)::VARCHAR, max(order_date)::VARCHAR,
                  list(DISTINCT region ORDER BY region)
           FROM sales.main.orders"""
    ).fetchone()
    assert orders[:4] == (1, 200_000, 200_000, True)
    assert orders[4] >= 1 and orders[5] <= 5000
    assert orders[6] >= "2023-01-01" and orders[7] <= "2025-12-31"
    assert orders[8] == ["APAC", "EU", "US"]

    customers = con.execute(
        r"""SELECT min(customer_id), max(customer_id), count(DISTINCT customer_id),
                  bool_and(regexp_full_match(ssn, '\d{3}-\d{2}-\d{4}')),
                  bool_and(regexp_full_match(email, '[a-z]+\.[a-z]+\d+@example\.com')),
                  bool_and(ends_with(split_part(email, '@', 1), customer_id::VARCHAR)),
                  list(DISTINCT region ORDER BY region)
           FROM crm.customers"""
    ).fetchone()
    assert customers == (1, 20_000, 20_000, True, True, True, ["APAC", "EU", "US"])

    shipments = con.execute(
        """SELECT min(shipment_id), max(shipment_id), count(DISTINCT shipment_id),
                  min(order_id) >= 1 AND max(order_id) <= 200000, count(DISTINCT carrier) > 1
           FROM logistics.shipments"""
    ).fetchone()
    assert shipments == (1, 150_000, 150_000, True, True)


def test_products_agree(mesh: Path) -> None:
    con = _connect(mesh)
    mismatched_customers = con.execute(
        """SELECT count(*) FROM sales.main.orders o
           LEFT JOIN crm.customers c USING (customer_id)
           WHERE c.region IS DISTINCT FROM o.region"""
    ).fetchone()[0]
    assert mismatched_customers == 0
    mismatched_shipments = con.execute(
        """SELECT count(*) FROM logistics.shipments s
           LEFT JOIN sales.main.orders o USING (order_id)
           WHERE o.region IS DISTINCT FROM s.region
              OR NOT (s.shipped_at > o.order_date AND s.shipped_at < o.order_date + 8)"""
    ).fetchone()[0]
    assert mismatched_shipments == 0


def test_deterministic(mesh: Path, tmp_path: Path) -> None:
    again = write_demo_mesh(tmp_path / "again")

    def fingerprints(mesh_dir: Path) -> dict[str, tuple[int, int]]:
        con = _connect(mesh_dir)
        return {
            product: con.execute(
                f"SELECT count(*), sum(hash(*COLUMNS(*))) FROM {_table(product)}"
            ).fetchone()
            for product in EXPECTED_TYPES
        }

    assert fingerprints(mesh) == fingerprints(again)
    for relative in CONTRACT_FILES.values():
        assert (mesh / relative).read_text() == (again / relative).read_text()


def test_contracts_validate_and_match_data(mesh: Path) -> None:
    con = _connect(mesh)
    assert [p.relative_to(mesh).as_posix() for p in find_contracts(mesh)] == sorted(
        CONTRACT_FILES.values()
    )
    for product, relative in CONTRACT_FILES.items():
        text = (mesh / relative).read_text(encoding="utf-8")
        model = OpenDataContractStandard.from_string(text)
        domain, name = product.split(".")
        assert (model.domain, model.schema_[0].name) == (domain, name)
        properties = model.schema_[0].properties
        declared = [(prop.name, prop.physicalType) for prop in properties]
        assert declared == EXPECTED_TYPES[product]
        for prop in properties:
            assert prop.description, (product, prop.name)
            assert prop.logicalType, (product, prop.name)
            assert prop.classification in {"public", "internal", "restricted"}
        (contract,) = read_contract(mesh / relative)
        assert contract.key == product
        check_columns(contract, _describe(con, product))
        assert yaml.safe_load(text)["apiVersion"].startswith("v3.")


def test_pii_and_partitioning_in_contracts(mesh: Path) -> None:
    customers = OpenDataContractStandard.from_string(
        (mesh / CONTRACT_FILES["crm.customers"]).read_text(encoding="utf-8")
    )
    pii = {
        prop.name: prop.classification
        for prop in customers.schema_[0].properties
        if "pii" in (prop.tags or [])
    }
    assert pii == {"email": "restricted", "ssn": "restricted"}

    shipments = OpenDataContractStandard.from_string(
        (mesh / CONTRACT_FILES["logistics.shipments"]).read_text(encoding="utf-8")
    )
    partitioned = [
        (prop.name, prop.partitionKeyPosition)
        for prop in shipments.schema_[0].properties
        if prop.partitioned
    ]
    assert partitioned == [("region", 1)]
    assert shipments.servers[0].path == "data/shipments"


def test_config_loads_and_passwords_are_user_names(mesh: Path) -> None:
    config = load_config(mesh)
    assert config.gateway.name == "demo-mesh"
    assert {name: user.roles for name, user in config.users.items()} == {
        "alice": ("analyst_eu",),
        "bob": ("admin",),
        "carol": ("marketing",),
        "dave": (),
        "erin": ("ops",),
    }
    assert config.users["alice"].attributes == {"region": "EU"}
    for name, user in config.users.items():
        assert verify_password(name, user.password_hash), name
        assert not verify_password(name + "x", user.password_hash), name
    text = (mesh / "mesh.toml").read_text(encoding="utf-8")
    assert text.startswith("#") and "password" in text.splitlines()[2].lower()


@pytest.mark.slow
def test_refuses_to_overwrite_without_flag(tmp_path: Path) -> None:
    target = tmp_path / "mesh"
    target.mkdir()
    (target / "mesh.toml").write_text("[gateway]\nname = 'mine'\n")
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_demo_mesh(target)
    assert (target / "mesh.toml").read_text() == "[gateway]\nname = 'mine'\n"

    write_demo_mesh(target, overwrite=True)
    assert load_config(target).gateway.name == "demo-mesh"
    assert (target / "notes.txt").read_text() == "keep me"
    write_demo_mesh(target, overwrite=True)  # replacing an existing demo works too
    con = _connect(target)
    assert con.execute("SELECT count(*) FROM logistics.shipments").fetchone()[0] == 150_000
