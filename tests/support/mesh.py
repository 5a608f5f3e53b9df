"""Mesh mode for tests: domain node processes and a gateway on 127.0.0.1 (``running_mesh``),
the comparison of a mesh-mode answer with the embedded one (``outcome``) and the gateway's
record of a federated query (``federated``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from benchmarks.launch import (
    free_port,
    node_action,
    node_is_healthy,
    spawn_server,
    stop_process,
    wait_until_ready,
)
from support.logs import json_lines_since
from support.polling import wait_until
from support.servers import (
    RunningGateway,
    configure_groups,
    copy_mesh,
    start_gateway,
    stop_gateway,
)


@dataclass
class RunningNode:
    """One domain node process (``meshgate node``) on 127.0.0.1."""

    mesh_dir: Path
    domain: str
    port: int
    log_path: Path
    key: str
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.process = spawn_server(
            "node", self.mesh_dir, self.port, self.log_path, "--domain", self.domain
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until_ready(
            self.process,
            lambda: node_is_healthy(self.uri, self.key, self.domain),
            self.log_path,
            f"node {self.domain}",
            timeout,
        )

    def action(self, name: str) -> dict:
        """This node's answer to ``health`` or ``stats``, asked with a gateway control ticket."""
        return node_action(self.uri, name, self.key, self.domain)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash, not a shutdown) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5)


@dataclass
class Mesh:
    """The mesh-mode deployment of this module."""

    mesh_dir: Path
    key: str
    nodes: dict[str, list[RunningNode]]
    gateway: RunningGateway | None = None
    extra: list = field(default_factory=list)

    def node(self, domain: str, replica: int = 0) -> RunningNode:
        return self.nodes[domain][replica]

    def ensure_running(self, *domains: str) -> None:
        """Restart (same port) any replica of ``domains`` that a previous test killed."""
        restarted = [n for d in domains for n in self.nodes[d] if not n.alive]
        for node in restarted:
            node.spawn()
        for node in restarted:
            node.wait_ready()

    def stats(self, domain: str) -> dict[str, int]:
        """Counters summed over the live replicas of ``domain``."""
        total = {"tickets": 0, "rows": 0, "bytes": 0, "refused": 0}
        for node in self.nodes[domain]:
            if node.alive:
                for key, value in node.action("stats").items():
                    total[key] = total.get(key, 0) + value
        return total

    def node_audit_path(self, domain: str) -> Path:
        return self.mesh_dir / ".meshgate" / "audit" / f"node-{domain}" / "audit.jsonl"


@contextmanager
def running_mesh(
    source_mesh: Path,
    root: Path,
    layout: Mapping[str, int],
    ticket_ttl_seconds: int = 60,
    nodes_settings: Mapping[str, object] | None = None,
    gateway_prepare: Callable[[Path], None] | None = None,
    workload: Mapping[str, object] | None = None,
) -> Iterator[Mesh]:
    """A copy of ``source_mesh`` with a ``[nodes]`` section, ``layout[domain]`` node replicas per
    domain and one gateway; every process is stopped on exit, even on failure.
    ``nodes_settings`` adds keys to ``[nodes]`` (e.g. ``{"split_endpoints": 4}``).
    ``gateway_prepare``: the gateway runs on a copy of its own (the same ``mesh.toml``),
    changed by it first, e.g. other rows in a node-served product: rows an answer shares
    with the nodes' copy then came from a node, not from the gateway's files.
    ``workload``: settings of every resource group (``support.servers.configure_groups``)."""
    mesh_dir = copy_mesh(source_mesh, root / "mesh")
    if workload:
        configure_groups(mesh_dir, **workload)
    key = os.urandom(32).hex()
    logs = root / "logs"
    logs.mkdir()
    nodes = {
        domain: [
            RunningNode(mesh_dir, domain, free_port(), logs / f"node-{domain}-{i}.log", key)
            for i in range(count)
        ]
        for domain, count in layout.items()
    }
    with (mesh_dir / "mesh.toml").open("a", encoding="utf-8") as config:
        config.write(
            f'\n[nodes]\nticket_key = "{key}"\nticket_ttl_seconds = {ticket_ttl_seconds}\n'
        )
        for name, value in (nodes_settings or {}).items():
            config.write(f"{name} = {json.dumps(value)}\n")
        config.write("\n[nodes.domains]\n")
        for domain, replicas in nodes.items():
            config.write(f"{domain} = {json.dumps([n.uri for n in replicas])}\n")
    running = Mesh(mesh_dir, key, nodes)
    try:
        for replicas in nodes.values():
            for node in replicas:
                node.spawn()
        gateway_dir = mesh_dir
        if gateway_prepare is not None:
            gateway_dir = copy_mesh(mesh_dir, root / "gateway-mesh")
            gateway_prepare(gateway_dir)
        running.gateway = start_gateway(gateway_dir, logs / "gateway.log")
        for replicas in nodes.values():
            for node in replicas:
                node.wait_ready()
        yield running
    finally:
        for replicas in nodes.values():
            for node in replicas:
                node.stop()
        if running.gateway is not None:
            stop_gateway(running.gateway)


# --------------------------------------------------------------------------- mesh = embedded


def outcome(conn, sql: str, parameters=None):
    """("ok", schema, sorted rows) or ("error", exception type, message head)."""
    cur = conn.cursor()
    try:
        cur.execute(sql, parameters=parameters)
        table = cur.fetch_arrow_table()
    except Exception as exc:  # noqa: BLE001 - compared between the two modes
        return ("error", type(exc).__name__, str(exc).split(". Detail")[0].splitlines()[0])
    finally:
        cur.close()
    rows = sorted(tuple(repr(v) for v in row.values()) for row in table.to_pylist())
    return ("ok", table.schema, rows)


def sorted_rows(table: pa.Table) -> list[tuple]:
    """The rows of ``table`` as sorted tuples of reprs (order-free, type-exact comparison)."""
    return sorted(tuple(repr(v) for v in row.values()) for row in table.to_pylist())


def federated(log_path: Path, offset: int) -> dict:
    """The one ``federated_query`` record the gateway logged after ``offset``."""
    found: list[dict] = []

    def record() -> bool:
        found[:] = [
            r for r in json_lines_since(log_path, offset) if r.get("event") == "federated_query"
        ]
        return bool(found)

    wait_until(record, timeout=10, what="a federated_query log line")
    assert len(found) == 1
    return found[0]
