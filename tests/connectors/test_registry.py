"""The connector registry and the two built-in connectors.

``connector_for`` picks a connector by ``servers[].type``; ``register_connector`` adds a
source kind without touching the core; local Parquet paths may be a file, a glob or a
(hive-partitioned) directory, always inside the domain folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from open_data_contract_standard.model import Server
from sqlglot import exp

from connectors import registry
from connectors.base import AttachDatabase, Connector, SourceSpec
from connectors.duckdb_file import DuckDBFileConnector
from connectors.errors import ConnectorError
from connectors.local_files import LocalFilesConnector
from connectors.registry import connector_for, known_server_types, register_connector
from gateway.catalog.catalog import Catalog, load_catalog
from gateway.catalog.contracts import read_contract
from gateway.config import EngineSettings

ROW_COUNTS = {"sales.orders": 200_000, "crm.customers": 20_000, "logistics.shipments": 150_000}


def demo_spec(mesh: Path, contract: str) -> SourceSpec:
    (product,) = read_contract(mesh / contract)
    return product.source


def spec(domain_dir: Path, physical_name: str = "things", **server: object) -> SourceSpec:
    return SourceSpec(
        product=f"{domain_dir.name}.things",
        contract_path=domain_dir / "things.odcs.yaml",
        domain_dir=domain_dir,
        server=Server(server="test", **server),
        server_index=0,
        physical_name=physical_name,
    )


def loaded(mesh: Path) -> Iterator[Catalog]:
    catalog = load_catalog(mesh, EngineSettings())
    try:
        yield catalog
    finally:
        catalog.engine.close()


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test disappear after it."""
    monkeypatch.setattr(registry, "_CONNECTORS", dict(registry._CONNECTORS))


# --------------------------------------------------------------------------- picking a connector


@pytest.mark.parametrize(
    ("contract", "kind"),
    [
        ("sales/orders.odcs.yaml", DuckDBFileConnector),
        ("crm/customers.odcs.yaml", LocalFilesConnector),
        ("logistics/shipments.odcs.yaml", LocalFilesConnector),
    ],
)
def test_connector_for_picks_by_server_type(
    contract: str, kind: type[Connector], demo_mesh: Path
) -> None:
    connector = connector_for(demo_spec(demo_mesh, contract))
    assert type(connector) is kind
    assert connector.spec.contract_path == demo_mesh / contract


@pytest.mark.parametrize(
    ("server_type", "kind"), [("DuckDB", DuckDBFileConnector), ("LOCAL", LocalFilesConnector)]
)
def test_server_type_is_case_insensitive(
    server_type: str, kind: type[Connector], demo_mesh: Path
) -> None:
    path = "data/orders.duckdb" if kind is DuckDBFileConnector else "data/customers.parquet"
    domain = demo_mesh / ("sales" if kind is DuckDBFileConnector else "crm")
    connector = connector_for(spec(domain, type=server_type, format="parquet", path=path))
    assert type(connector) is kind


def test_known_server_types() -> None:
    assert {"duckdb", "local"} <= set(known_server_types())
    assert list(known_server_types()) == sorted(known_server_types())


@pytest.mark.parametrize("server_type", ["ftp", "s3", "", None])
def test_unknown_server_type_lists_the_known_ones(server_type: str | None, demo_mesh: Path) -> None:
    source = spec(demo_mesh / "sales", type=server_type, path="data/orders.duckdb")
    with pytest.raises(ConnectorError) as caught:
        connector_for(source)
    message = str(caught.value)
    assert str(source.contract_path) in message
    assert "`servers[0].type`" in message
    assert "use one of" in message
    for known in known_server_types():
        assert known in message


# --------------------------------------------------------------------------- a new kind


class ConstantRows(Connector):
    """A test source kind: three fixed rows, no files."""

    server_type = "constant_rows"

    @property
    def data_paths(self) -> tuple[Path, ...]:
        return ()

    def scan(self, attach: AttachDatabase) -> exp.Expression:
        return exp.values(
            [(1, "one"), (2, "two"), (3, "three")], alias="rows", columns=["id", "label"]
        )


TARGETS_CONTRACT = """\
apiVersion: v3.1.0
kind: DataContract
id: urn:meshgate-test:sales:targets
version: 1.0.0
status: active
domain: sales
servers:
  - server: fixed
    type: constant_rows
schema:
  - name: targets
    description: Three fixed rows from a test connector.
    properties:
      - name: id
        physicalType: INTEGER
      - name: label
        logicalType: string
"""


def test_register_connector_adds_a_kind_without_touching_the_core(
    isolated_registry: None, mesh_copy: Path
) -> None:
    assert register_connector(ConstantRows) is ConstantRows  # usable as a decorator
    assert "constant_rows" in known_server_types()
    (mesh_copy / "sales/targets.odcs.yaml").write_text(TARGETS_CONTRACT, encoding="utf-8")

    for catalog in loaded(mesh_copy):
        assert catalog.problems == ()
        product = catalog.product("sales", "targets")
        assert product is not None
        assert product.schema.names == ["id", "label"]
        assert catalog.engine.row_count("sales", "targets") == 3
        with catalog.engine.cursor() as cursor:
            rows = cursor.execute("SELECT label FROM memory.sales.targets ORDER BY id").fetchall()
        assert rows == [("one",), ("two",), ("three",)]
        # the built-in products are unaffected
        for key, count in ROW_COUNTS.items():
            assert catalog.engine.row_count(*key.split(".")) == count


def test_a_registered_kind_is_listed_in_unknown_type_errors(
    isolated_registry: None, demo_mesh: Path
) -> None:
    register_connector(ConstantRows)
    with pytest.raises(ConnectorError, match="constant_rows"):
        connector_for(spec(demo_mesh / "sales", type="nope"))


def test_without_registration_the_new_kind_is_a_contract_problem(mesh_copy: Path) -> None:
    (mesh_copy / "sales/targets.odcs.yaml").write_text(TARGETS_CONTRACT, encoding="utf-8")
    for catalog in loaded(mesh_copy):
        assert catalog.product("sales", "targets") is None
        assert {p.key for p in catalog} == set(ROW_COUNTS)
        (problem,) = catalog.problems
        assert "`servers[0].type`" in problem.message
        assert "'constant_rows'" in problem.message


def test_registry_is_restored_after_isolated_registration() -> None:
    assert "constant_rows" not in known_server_types()


# --------------------------------------------------------------------------- DuckDB files


def test_duckdb_connector_resolves_the_database_and_table(demo_mesh: Path) -> None:
    connector = connector_for(demo_spec(demo_mesh, "sales/orders.odcs.yaml"))
    assert isinstance(connector, DuckDBFileConnector)
    assert connector.database_path == (demo_mesh / "sales/data/orders.duckdb").resolve()
    assert connector.data_paths == (connector.database_path,)
    assert connector.schema_name == "main"
    attached: list[Path] = []
    table = connector.scan(lambda path: attached.append(path) or "src_test")
    assert attached == [connector.database_path]
    assert table.sql("duckdb") == '"src_test"."main"."orders"'


def test_duckdb_connector_takes_database_when_path_is_missing(demo_mesh: Path) -> None:
    connector = connector_for(
        spec(demo_mesh / "sales", "orders", type="duckdb", database="data/orders.duckdb")
    )
    assert connector.database_path == (demo_mesh / "sales/data/orders.duckdb").resolve()


# --------------------------------------------------------------------------- local Parquet paths


def test_single_parquet_file(demo_mesh: Path) -> None:
    connector = connector_for(demo_spec(demo_mesh, "crm/customers.odcs.yaml"))
    assert isinstance(connector, LocalFilesConnector)
    data = (demo_mesh / "crm/data/customers.parquet").resolve()
    assert connector.root == data
    assert connector.pattern == str(data)
    assert connector.hive_partitioned is False
    assert connector.data_paths == (data,)


def test_hive_partitioned_directory(demo_mesh: Path) -> None:
    connector = connector_for(demo_spec(demo_mesh, "logistics/shipments.odcs.yaml"))
    assert isinstance(connector, LocalFilesConnector)
    root = (demo_mesh / "logistics/data/shipments").resolve()
    assert connector.root == root
    assert connector.pattern == str(root / "**" / "*.parquet")
    assert connector.hive_partitioned is True
    scan = connector.scan(lambda path: pytest.fail("a Parquet source attaches nothing"))
    assert "hive_partitioning = TRUE" in scan.sql("duckdb")


def test_hive_partition_column_is_served(demo_mesh: Path) -> None:
    for catalog in loaded(demo_mesh):
        with catalog.engine.cursor() as cursor:
            rows = cursor.execute(
                "SELECT region, count(*) FROM memory.logistics.shipments GROUP BY 1 ORDER BY 1"
            ).fetchall()
        assert [region for region, _ in rows] == ["APAC", "EU", "US"]
        assert sum(count for _, count in rows) == ROW_COUNTS["logistics.shipments"]


@pytest.fixture
def split_customers(mesh_copy: Path) -> Path:
    """crm customers split into two files under crm/data/parts/."""
    data = mesh_copy / "crm/data/customers.parquet"
    parts = mesh_copy / "crm/data/parts"
    parts.mkdir()
    for index, predicate in enumerate(("customer_id % 2 = 0", "customer_id % 2 = 1"), start=1):
        duckdb.sql(
            f"COPY (SELECT * FROM read_parquet('{data}') WHERE {predicate}) "
            f"TO '{parts / f'part-{index}.parquet'}' (FORMAT parquet)"
        )
    data.unlink()
    return mesh_copy


def _point_customers_at(mesh: Path, path: str) -> None:
    import yaml

    contract = mesh / "crm/customers.odcs.yaml"
    document = yaml.safe_load(contract.read_text(encoding="utf-8"))
    document["servers"][0]["path"] = path
    contract.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def test_glob_path(split_customers: Path) -> None:
    _point_customers_at(split_customers, "data/parts/part-*.parquet")
    connector = connector_for(demo_spec(split_customers, "crm/customers.odcs.yaml"))
    root = (split_customers / "crm/data/parts").resolve()
    assert connector.root == root
    assert connector.pattern == str(root / "part-*.parquet")
    assert connector.hive_partitioned is False
    for catalog in loaded(split_customers):
        assert catalog.problems == ()
        assert catalog.engine.row_count("crm", "customers") == ROW_COUNTS["crm.customers"]


def test_glob_matching_only_some_files(split_customers: Path) -> None:
    _point_customers_at(split_customers, "data/parts/part-1*.parquet")
    for catalog in loaded(split_customers):
        assert catalog.engine.row_count("crm", "customers") == ROW_COUNTS["crm.customers"] // 2


def test_plain_directory_is_read_recursively(split_customers: Path) -> None:
    _point_customers_at(split_customers, "data")
    connector = connector_for(demo_spec(split_customers, "crm/customers.odcs.yaml"))
    root = (split_customers / "crm/data").resolve()
    assert connector.pattern == str(root / "**" / "*.parquet")
    assert connector.hive_partitioned is False
    for catalog in loaded(split_customers):
        assert catalog.problems == ()
        assert catalog.engine.row_count("crm", "customers") == ROW_COUNTS["crm.customers"]


def test_glob_over_hive_partitions(mesh_copy: Path) -> None:
    import yaml

    contract = mesh_copy / "logistics/shipments.odcs.yaml"
    document = yaml.safe_load(contract.read_text(encoding="utf-8"))
    document["servers"][0]["path"] = "data/shipments/*/*.parquet"
    contract.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    connector = connector_for(demo_spec(mesh_copy, "logistics/shipments.odcs.yaml"))
    assert connector.hive_partitioned is True
    for catalog in loaded(mesh_copy):
        assert catalog.problems == ()
        assert (
            catalog.engine.row_count("logistics", "shipments") == ROW_COUNTS["logistics.shipments"]
        )


def test_directory_without_parquet_files(mesh_copy: Path) -> None:
    empty = mesh_copy / "crm/data/empty"
    empty.mkdir()
    connector = connector_for(
        spec(mesh_copy / "crm", type="local", format="parquet", path="data/empty")
    )
    with pytest.raises(ConnectorError, match=r"no \.parquet files under"):
        connector.scan(lambda path: "unused")


def test_location_is_accepted_instead_of_path(demo_mesh: Path) -> None:
    connector = connector_for(
        spec(demo_mesh / "crm", type="local", format="parquet", location="data/customers.parquet")
    )
    assert connector.root == (demo_mesh / "crm/data/customers.parquet").resolve()


def test_absolute_path_inside_the_domain_is_accepted(demo_mesh: Path) -> None:
    data = demo_mesh / "crm/data/customers.parquet"
    connector = connector_for(
        spec(demo_mesh / "crm", type="local", format="parquet", path=str(data))
    )
    assert connector.root == data.resolve()


@pytest.mark.parametrize(
    "server", [{"type": "local", "format": "parquet"}, {"type": "duckdb"}], ids=["local", "duckdb"]
)
def test_missing_path(server: dict, demo_mesh: Path) -> None:
    with pytest.raises(ConnectorError) as caught:
        connector_for(spec(demo_mesh / "crm", **server))
    assert "`servers[0].path`" in str(caught.value)
    assert "missing" in str(caught.value)


@pytest.mark.parametrize("fmt", [None, "csv", "json", "delta"])
def test_unsupported_local_format(fmt: str | None, demo_mesh: Path) -> None:
    with pytest.raises(ConnectorError) as caught:
        connector_for(
            spec(demo_mesh / "crm", type="local", format=fmt, path="data/customers.parquet")
        )
    assert "`servers[0].format`" in str(caught.value)
    assert "use one of: parquet" in str(caught.value)


@pytest.mark.parametrize(
    "path",
    [
        "../sales/data/orders.duckdb",
        "../*/data/*.parquet",
        "data/../../sales/data/*.parquet",
        "/etc/*",
        "data/*/../../../sales/data/orders.duckdb",
        "data/*/../../../logistics/data/shipments/*/*.parquet",
    ],
)
def test_paths_outside_the_domain_folder_are_refused(path: str, mesh_copy: Path) -> None:
    (mesh_copy / "crm/data/sub").mkdir()
    with pytest.raises(ConnectorError) as caught:
        connector = connector_for(
            spec(mesh_copy / "crm", type="local", format="parquet", path=path)
        )
        connector.scan(lambda p: "unused")  # a refusal at scan time is fine too
        # still here: the files it would read must be inside the domain folder
        pytest.fail(f"path {path!r} accepted with pattern {connector.pattern!r}")
    assert "`servers[0].path`" in str(caught.value)
