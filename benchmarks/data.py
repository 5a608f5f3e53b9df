"""TPC-H data (tpchgen-cli), the benchmark mesh, and the DuckDB baselines over the same files.

Mesh layout written under ``<out>/mesh``::

    mesh.toml                         users bench (admin), analyst, heavy and light (analysts);
                                      hash key; engine
    policies/global.csv               the platform floor (pii hashed unless pii_reader)
    orders/{orders,lineitem}.odcs.yaml + data/tpch.duckdb   (one DuckDB file)
    orders/policy.csv                 analyst reads orders.*, lineitem row filter
    customers/{customer,nation,region}.odcs.yaml + data/<table>.parquet
    customers/policy.csv              analyst reads customers.*, c_address redacted
    parts/{part,partsupp,supplier}.odcs.yaml + data/<table>.parquet
    parts/policy.csv                  analyst reads parts.*

The raw Parquet files stay in ``<out>/data/sf<scale>`` (reused by later runs of the same
scale, and served as-is to ROAPI); the mesh's Parquet files are hard links to them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb
import yaml
from sqlglot import exp

from benchmarks.settings import (
    ADMIN_USER,
    ANALYST_USER,
    HEAVY_USER,
    LIGHT_USER,
    LINEITEM_FILTER,
    BenchConfig,
)
from benchmarks.tpch import DOMAINS, DUCKDB_DOMAIN, TABLE_DOMAIN

DUCKDB_FILE = "tpch.duckdb"
TABLES: tuple[str, ...] = tuple(TABLE_DOMAIN)
_COMPLETE = ".complete"

#: Column tags and masks of the policy set (hand-written equivalents in ``governed_views``).
PII_COLUMNS = {("customer", "c_phone")}
REDACTED_COLUMNS = {("customer", "c_address")}
PRIMARY_KEYS = {
    "orders": ("o_orderkey",),
    "lineitem": ("l_orderkey", "l_linenumber"),
    "customer": ("c_custkey",),
    "nation": ("n_nationkey",),
    "region": ("r_regionkey",),
    "part": ("p_partkey",),
    "partsupp": ("ps_partkey", "ps_suppkey"),
    "supplier": ("s_suppkey",),
}


class BenchSetupError(RuntimeError):
    """The benchmark could not prepare its data or tools."""


def find_executable(name: str) -> str | None:
    """``name`` next to the running Python (its venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


# --------------------------------------------------------------------------- data


def generate_tpch(config: BenchConfig, log: Callable[[str], None] = print) -> Path:
    """TPC-H Parquet at ``config.scale`` in ``config.data_dir`` (reused when complete)."""
    target = config.data_dir
    marker = target / _COMPLETE
    if marker.is_file() and all((target / f"{t}.parquet").is_file() for t in TABLES):
        log(f"reusing TPC-H SF{config.scale:g} Parquet in {target}")
        return target
    tool = find_executable("tpchgen-cli")
    if tool is None:
        raise BenchSetupError(
            "tpchgen-cli not found next to python or on PATH: pip install tpchgen-cli"
        )
    target.mkdir(parents=True, exist_ok=True)
    log(f"generating TPC-H SF{config.scale:g} Parquet with {tool}")
    command = [
        tool,
        "parquet",
        "-s",
        f"{config.scale:g}",
        "-o",
        str(target),
        "--overwrite",
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchSetupError(f"{' '.join(command)} failed:\n{result.stderr}")
    missing = [t for t in TABLES if not (target / f"{t}.parquet").is_file()]
    if missing:
        raise BenchSetupError(f"tpchgen-cli did not write {', '.join(missing)} in {target}")
    marker.write_text(json.dumps({"scale": config.scale}), encoding="utf-8")
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _sql_string(value: str) -> str:
    return exp.Literal.string(value).sql("duckdb")


def _build_duckdb_file(data_dir: Path, log: Callable[[str], None]) -> Path:
    """``orders`` and ``lineitem`` loaded into one DuckDB file (cached next to the Parquet)."""
    path = data_dir / DUCKDB_FILE
    marker = data_dir / (DUCKDB_FILE + _COMPLETE)
    if path.is_file() and marker.is_file():
        return path
    log(f"loading {', '.join(DOMAINS[DUCKDB_DOMAIN])} into {path}")
    for stale in (path, path.with_name(path.name + ".wal")):
        if stale.exists():
            stale.unlink()
    con = duckdb.connect(str(path))
    try:
        con.execute("SET enable_progress_bar = false")
        for table in DOMAINS[DUCKDB_DOMAIN]:
            source = _sql_string(str(data_dir / f"{table}.parquet"))
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet({source})")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    marker.write_text("ok", encoding="utf-8")
    return path


def describe(con: duckdb.DuckDBPyConnection, relation_sql: str) -> list[tuple[str, str]]:
    """(column, exact DuckDB type) of a relation, by DESCRIBE."""
    return [(row[0], row[1]) for row in con.sql(f"DESCRIBE {relation_sql}").fetchall()]


@dataclass(frozen=True)
class Mesh:
    """The written benchmark mesh."""

    mesh_dir: Path
    data_dir: Path
    hash_key: str
    #: table -> [(column, DuckDB type)]
    columns: dict[str, list[tuple[str, str]]]

    def table_path(self, table: str) -> Path:
        """Where the mesh stores ``table``'s data (the DuckDB file for the orders domain)."""
        domain = TABLE_DOMAIN[table]
        if domain == DUCKDB_DOMAIN:
            return self.mesh_dir / domain / "data" / DUCKDB_FILE
        return self.mesh_dir / domain / "data" / f"{table}.parquet"

    def parquet_path(self, table: str) -> Path:
        """A Parquet copy of ``table`` (tpchgen's output), e.g. for ROAPI."""
        return self.data_dir / f"{table}.parquet"


def write_mesh(config: BenchConfig, log: Callable[[str], None] = print) -> Mesh:
    """Generate (or reuse) the data and write the whole mesh; returns its description."""
    from gateway.security.passwords import hash_password

    data_dir = generate_tpch(config, log)
    duck_file = _build_duckdb_file(data_dir, log)
    mesh_dir = config.mesh_dir
    if mesh_dir.exists():
        shutil.rmtree(mesh_dir)
    mesh_dir.mkdir(parents=True)

    con = duckdb.connect(":memory:")
    columns: dict[str, list[tuple[str, str]]] = {}
    try:
        for domain, tables in DOMAINS.items():
            for table in tables:
                if domain == DUCKDB_DOMAIN:
                    target = mesh_dir / domain / "data" / DUCKDB_FILE
                    if not target.exists():
                        _link_or_copy(duck_file, target)
                    alias = "src_" + domain
                    if alias not in {
                        r[0]
                        for r in con.sql("SELECT database_name FROM duckdb_databases()").fetchall()
                    }:
                        con.execute(f"ATTACH {_sql_string(str(target))} AS {alias} (READ_ONLY)")
                    columns[table] = describe(con, f"{alias}.main.{table}")
                else:
                    target = mesh_dir / domain / "data" / f"{table}.parquet"
                    _link_or_copy(data_dir / f"{table}.parquet", target)
                    columns[table] = describe(
                        con, f"SELECT * FROM read_parquet({_sql_string(str(target))})"
                    )
                contract = _contract(domain, table, columns[table])
                (mesh_dir / domain / f"{table}.odcs.yaml").write_text(contract, encoding="utf-8")
    finally:
        con.close()

    hash_key = secrets.token_hex(32)
    (mesh_dir / "mesh.toml").write_text(
        _mesh_toml(config, hash_key, hash_password), encoding="utf-8"
    )
    _write_policies(mesh_dir)
    return Mesh(mesh_dir, data_dir, hash_key, columns)


def copy_with_settings(
    mesh_dir: Path, target: Path, settings: Mapping[str, Mapping[str, object]]
) -> Path:
    """A copy of ``mesh_dir`` at ``target`` (data hard-linked, not copied) whose own
    ``mesh.toml`` has ``settings``: section name (``engine``, ``workload.groups.heavy``)
    -> keys set in it (added under an existing header, else in a new section)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        mesh_dir, target, copy_function=os.link, ignore=shutil.ignore_patterns(".meshgate")
    )
    config = target / "mesh.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    config.unlink()  # a link to the original: write a file of its own
    for section, values in settings.items():
        header = f"[{section}]"
        if header not in lines:
            lines += ["", header]
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        kept = [line for line in lines[start:end] if line.split("=", 1)[0].strip() not in values]
        added = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        lines[start:end] = [*added, *kept]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def load_mesh(mesh_dir: Path, data_dir: Path | None = None) -> Mesh:
    """The description of a mesh written by :func:`write_mesh` (columns by DESCRIBE)."""
    import tomllib

    config = tomllib.loads((mesh_dir / "mesh.toml").read_text(encoding="utf-8"))
    mesh = Mesh(mesh_dir, data_dir or mesh_dir, config["governance"]["hash_key"], {})
    con = duckdb.connect(":memory:")
    try:
        for table in TABLES:
            path = _sql_string(str(mesh.table_path(table)))
            if TABLE_DOMAIN[table] == DUCKDB_DOMAIN:
                con.execute(f"ATTACH IF NOT EXISTS {path} AS src (READ_ONLY)")
                mesh.columns[table] = describe(con, f"src.main.{table}")
            else:
                mesh.columns[table] = describe(con, f"SELECT * FROM read_parquet({path})")
    finally:
        con.close()
    return mesh


# --------------------------------------------------------------------------- contracts


def _contract(domain: str, table: str, columns: list[tuple[str, str]]) -> str:
    """An ODCS v3 contract in the shape of gateway/demo/mesh.py's, physicalType by DESCRIBE."""
    if domain == DUCKDB_DOMAIN:
        server = {"server": "local", "type": "duckdb", "path": f"data/{DUCKDB_FILE}"}
    else:
        server = {
            "server": "local",
            "type": "local",
            "format": "parquet",
            "path": f"data/{table}.parquet",
        }
    properties = []
    keys = PRIMARY_KEYS.get(table, ())
    for name, duck_type in columns:
        prop: dict[str, object] = {
            "name": name,
            "physicalType": duck_type,
            "description": f"TPC-H {table}.{name}.",
            "required": True,
            "classification": "internal",
        }
        if name in keys:
            prop["primaryKey"] = True
            prop["primaryKeyPosition"] = keys.index(name) + 1
        if (table, name) in PII_COLUMNS:
            prop["tags"] = ["pii"]
            prop["classification"] = "restricted"
        properties.append(prop)
    schema_object: dict[str, object] = {"name": table}
    if domain == DUCKDB_DOMAIN:
        schema_object["physicalName"] = table  # the table inside the DuckDB file
    schema_object.update(
        {"physicalType": "table", "description": f"TPC-H {table} table.", "properties": properties}
    )
    contract = {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": f"urn:meshgate-bench:{domain}:{table}",
        "version": "1.0.0",
        "status": "active",
        "name": table,
        "domain": domain,
        "dataProduct": table,
        "description": {
            "purpose": f"TPC-H {table}, published by the {domain} domain for the benchmark.",
            "usage": "Benchmarks only (synthetic TPC-H data).",
        },
        "team": {
            "name": f"{domain}-data",
            "members": [{"username": f"{domain}-owner@example.com", "role": "owner"}],
        },
        "servers": [server],
        "schema": [schema_object],
    }
    header = f"# Data contract (ODCS v3) for the benchmark product {domain}.{table}.\n"
    return header + yaml.safe_dump(contract, sort_keys=False)


# --------------------------------------------------------------------------- config and policies


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _mesh_toml(config: BenchConfig, hash_key: str, hash_password: Callable[[str], str]) -> str:
    lines = [
        "# Meshgate benchmark mesh, written by benchmarks/data.py. Passwords equal user names.",
        "",
        "[gateway]",
        'name = "bench-mesh"',
        'host = "127.0.0.1"',
        "# The benchmark measures throughput, not admission control: the per-user limits",
        "# are raised above what the concurrency section asks for (16 clients of one user).",
        "max_concurrent_queries_per_user = 64",
        "max_queries_per_minute_per_user = 100000000",
        "",
        "[engine]",
        f"memory_limit = {_toml_string(config.engine_memory_limit)}",
        f"threads = {int(config.engine_threads)}",
        "",
        "[governance]",
        f"hash_key = {_toml_string(hash_key)}",
    ]
    roles = {
        ADMIN_USER: "admin",
        ANALYST_USER: "analyst",
        HEAVY_USER: "analyst",
        LIGHT_USER: "analyst",
    }
    for user, role in roles.items():
        lines += [
            "",
            f"[users.{user}]",
            f"password_hash = {_toml_string(hash_password(user))}",
            f"roles = [{_toml_string(role)}]",
        ]
    return "\n".join(lines) + "\n"


#: The same platform floor as the demo mesh.
GLOBAL_POLICY = (
    resources.files("gateway.demo")
    .joinpath("files/policies/global.csv")
    .read_text(encoding="utf-8")
)

DOMAIN_POLICIES = {
    "orders": f"""\
p, analyst, orders.*, read, allow
p, analyst, orders.lineitem, filter, allow, {LINEITEM_FILTER}
""",
    "customers": """\
p, analyst, customers.*, read, allow
p, analyst, customers.customer.c_address, mask, allow, redact
""",
    "parts": """\
p, analyst, parts.*, read, allow
""",
}


def _write_policies(mesh_dir: Path) -> None:
    (mesh_dir / "policies").mkdir(parents=True, exist_ok=True)
    (mesh_dir / "policies" / "global.csv").write_text(GLOBAL_POLICY, encoding="utf-8")
    for domain, text in DOMAIN_POLICIES.items():
        (mesh_dir / domain / "policy.csv").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- DuckDB baselines


def _mask_sql(table: str, column: str, hash_key: str) -> str | None:
    """The hand-written SQL of the policy set's mask on ``table.column`` (None: unmasked)."""
    quoted = exp.to_identifier(column, quoted=True).sql("duckdb")
    if (table, column) in PII_COLUMNS:
        return (
            f"CASE WHEN {quoted} IS NULL THEN NULL "
            f"ELSE sha256(concat({_sql_string(hash_key)}, CAST({quoted} AS VARCHAR))) END"
        )
    if (table, column) in REDACTED_COLUMNS:
        return f"CASE WHEN {quoted} IS NULL THEN NULL ELSE '[REDACTED]' END"
    return None


def open_baseline(
    mesh: Mesh,
    threads: int,
    memory_limit: str,
    governed: bool = False,
) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB with the gateway's layout: ``<domain>.<table>`` views over the
    same files (DuckDB file attached read-only, Parquet by read_parquet), same threads and
    memory limit. ``governed``: the policy set's filter and masks hand-written in the views."""
    con = duckdb.connect(":memory:", config={"threads": threads, "memory_limit": memory_limit})
    attached = False
    for domain, tables in DOMAINS.items():
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {domain}")
        for table in tables:
            path = mesh.table_path(table)
            if domain == DUCKDB_DOMAIN:
                if not attached:
                    con.execute(f"ATTACH {_sql_string(str(path))} AS src (READ_ONLY)")
                    attached = True
                source = f"src.main.{table}"
            else:
                source = f"read_parquet({_sql_string(str(path))}, hive_partitioning = false)"
            projections = []
            for column, _ in mesh.columns[table]:
                quoted = exp.to_identifier(column, quoted=True).sql("duckdb")
                masked = _mask_sql(table, column, mesh.hash_key) if governed else None
                projections.append(f"{masked} AS {quoted}" if masked else quoted)
            where = f" WHERE {LINEITEM_FILTER}" if governed and table == "lineitem" else ""
            con.execute(
                f"CREATE VIEW {domain}.{table} AS SELECT {', '.join(projections)} FROM {source}{where}"
            )
    return con
