"""Section 7, mesh mode (issue 4): domain nodes behind mesh-mode gateways.

Every deployment is a copy of the benchmark mesh (data files hard-linked, text files
copied, no ``.meshgate``) whose ``mesh.toml`` gains a ``[nodes]`` section; all copies share
one ticket key, so a node started for one deployment can serve another's gateway:

- ``main``: one node per domain (orders, customers, parts) and a gateway with
  ``split_endpoints = 1``, ``fragment_pushdown = true``; it lives for the whole section.
- ``split-N``: its own orders node (reading its own copy, so node and gateway agree on
  the split setting) and gateway with ``split_endpoints = N``.
- ``whole``: a gateway with ``fragment_pushdown = false`` on the main nodes.
- ``replicas-N``: a gateway listing N orders nodes (the main one first).

The embedded gateway the run already started (no ``[nodes]``) is the baseline. Measured:

1. ``scan``: ``SELECT * FROM orders.lineitem`` drained through ADBC (MB/s): embedded,
   mesh with each split setting (rows node -> client), and pyarrow.flight relayed by the
   main gateway; endpoints per FlightInfo and node tickets per scan say what happened.
2. ``tpch``: the 22 queries (one-off ADBC statements) on the embedded, main and whole
   gateways: time, bytes moved between nodes and gateway (the gateway's
   ``federated_query`` log line), the whole-products figure (logged, else computed from
   the governed products' sizes) and identical results (sorted rows, schema).
3. ``scaling``: ``mesh_clients`` ADBC clients running an orders-only mix against the
   ``replicas-N`` gateways, in interleaved windows: queries/s, p50/p99, tickets per replica.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import sqlglot
from pyarrow import flight
from sqlglot import exp

from benchmarks import suites
from benchmarks.data import _link_or_copy
from benchmarks.launch import free_port
from benchmarks.measure import (
    AdbcClient,
    FlightClient,
    geomean,
    interleaved,
    paired_ratio,
    ratio,
    same_result,
    summary,
    with_throughput,
)
from benchmarks.procs import Server
from benchmarks.settings import ADMIN_USER, BenchConfig
from benchmarks.tpch import DOMAINS, QUERY_NUMBERS, qualified

SCAN_QUERY = suites.LARGE_QUERY
#: The domain of the single-domain measurements (the DuckDB file with lineitem).
ORDERS = "orders"
#: The throughput mix's moderate scan: one week of shipments (~0.3 % of lineitem).
MODERATE_SCAN = (
    "SELECT * FROM orders.lineitem "
    "WHERE l_shipdate >= DATE '1995-03-01' AND l_shipdate < DATE '1995-03-08'"
)
#: Seconds to wait for a cross-domain query's ``federated_query`` line in the gateway log.
LOG_WAIT_SECONDS = 5.0


def steps(config: BenchConfig) -> int:
    """Progress steps of the section (setup, scan repetitions, queries, scaling repetitions)."""
    return 1 + config.repetitions + len(QUERY_NUMBERS) + config.repetitions


# --------------------------------------------------------------------------- deployments


@dataclass
class Deployment:
    """A mesh copy with a ``[nodes]`` section, its gateway and the nodes it lists."""

    name: str
    mesh_dir: Path
    settings: dict[str, object]
    gateway: Server
    #: domain -> the node replicas listed in this copy's mesh.toml, in order.
    nodes: dict[str, list[Server]]
    #: Processes started for this deployment (the gateway and its new nodes).
    own: list[Server] = field(default_factory=list)

    @property
    def new_nodes(self) -> list[Server]:
        """The nodes started for this deployment (not shared from another)."""
        return [server for server in self.own if server is not self.gateway]

    def adbc(self) -> AdbcClient:
        return AdbcClient(self.gateway.uri, ADMIN_USER, ADMIN_USER)

    def flight(self) -> FlightClient:
        return FlightClient(self.gateway.uri, ADMIN_USER, ADMIN_USER)

    def log_offset(self) -> int:
        try:
            return self.gateway.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def federated_record(self, offset: int, wait: float = LOG_WAIT_SECONDS) -> dict | None:
        """The last ``federated_query`` log record written after ``offset`` (None: none
        within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            records = [
                r
                for r in _json_lines(self.gateway.log_path, offset)
                if r.get("event") == "federated_query"
            ]
            if records or time.monotonic() > deadline:
                return records[-1] if records else None
            time.sleep(0.02)

    def describe(self) -> dict:
        return {
            "gateway": self.gateway.uri,
            "settings": self.settings,
            "nodes": {domain: [s.uri for s in servers] for domain, servers in self.nodes.items()},
        }


def _json_lines(path: Path, offset: int) -> Iterator[dict]:
    with path.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _copy_file(source: str, target: str) -> None:
    """Data files are hard-linked (they are large and only read); the rest is copied, so
    that editing the copy's mesh.toml leaves the benchmark mesh alone."""
    if Path(source).parent.name == "data":
        _link_or_copy(Path(source), Path(target))
    else:
        shutil.copy2(source, target)


def nodes_toml(key: str, settings: dict[str, object], domains: dict[str, list[str]]) -> str:
    """The ``[nodes]`` section: ticket key, ``settings`` and each domain's replicas."""
    lines = ["", "[nodes]", f"ticket_key = {json.dumps(key)}"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in settings.items()]
    lines += ["", "[nodes.domains]"]
    lines += [f"{domain} = {json.dumps(uris)}" for domain, uris in domains.items()]
    return "\n".join(lines) + "\n"


class MeshRun:
    """The section's deployments; their processes are stopped and copies removed on close."""

    def __init__(self, ctx: suites.Context) -> None:
        self.ctx = ctx
        self.key = secrets.token_hex(32)
        self.root = ctx.config.out_dir / "mesh-nodes"
        self.deployments: dict[str, Deployment] = {}
        shutil.rmtree(self.root, ignore_errors=True)

    def _copy(self, name: str, settings: dict[str, object], domains: dict[str, list[str]]) -> Path:
        target = self.root / name
        shutil.copytree(
            self.ctx.mesh.mesh_dir,
            target,
            ignore=shutil.ignore_patterns(".meshgate"),
            copy_function=_copy_file,
        )
        config = target / "mesh.toml"
        config.write_text(
            config.read_text(encoding="utf-8") + nodes_toml(self.key, settings, domains),
            encoding="utf-8",
        )
        return target

    def launch(
        self,
        name: str,
        settings: dict[str, object],
        existing: dict[str, list[Server]] | None = None,
        new: dict[str, int] | None = None,
    ) -> Deployment:
        """Write copy ``name`` listing the ``existing`` nodes and ``new[domain]`` new ones
        (started on this copy) and start its gateway, without waiting (see :meth:`ready`)."""
        procs = self.ctx.procs
        planned = [
            (domain, free_port()) for domain, count in (new or {}).items() for _ in range(count)
        ]
        nodes = {domain: list(servers) for domain, servers in (existing or {}).items()}
        uris = {domain: [s.uri for s in servers] for domain, servers in nodes.items()}
        for domain, port in planned:
            uris.setdefault(domain, []).append(f"grpc://127.0.0.1:{port}")
        mesh_dir = self._copy(name, settings, uris)
        started = []
        for index, (domain, port) in enumerate(planned):
            started.append(
                procs.spawn_node(mesh_dir, domain, port, f"mesh-{name}-node-{domain}-{index}")
            )
            nodes.setdefault(domain, []).append(started[-1])
        gateway = procs.spawn_gateway(mesh_dir, f"mesh-{name}-gateway")
        self.deployments[name] = Deployment(
            name, mesh_dir, settings, gateway, nodes, own=[gateway, *started]
        )
        return self.deployments[name]

    def ready(self, *deployments: Deployment) -> None:
        """Wait until the deployments' gateways and new nodes answer."""
        procs = self.ctx.procs
        for deployment in deployments:
            procs.wait_gateway(deployment.gateway, ADMIN_USER, ADMIN_USER)
            for node in deployment.new_nodes:
                procs.wait_node(node)

    def deploy(
        self,
        name: str,
        settings: dict[str, object],
        existing: dict[str, list[Server]] | None = None,
        new: dict[str, int] | None = None,
    ) -> Deployment:
        """:meth:`launch`, then :meth:`ready`."""
        deployment = self.launch(name, settings, existing, new)
        self.ready(deployment)
        return deployment

    def stop(self, deployment: Deployment) -> None:
        for server in deployment.own:
            self.ctx.procs.stop(server)

    def close(self) -> None:
        for deployment in self.deployments.values():
            self.stop(deployment)
        shutil.rmtree(self.root, ignore_errors=True)


def _settings(split: int = 1, pushdown: bool = True, dynamic: bool = True) -> dict[str, object]:
    """``dynamic``: dynamic filters and same-domain join groups (off: plain pushdown)."""
    return {
        "split_endpoints": split,
        "fragment_pushdown": pushdown,
        "dynamic_filters": dynamic,
        "join_groups": dynamic,
    }


@contextmanager
def _clients(*clients: AdbcClient | FlightClient) -> Iterator[None]:
    try:
        yield
    finally:
        for client in clients:
            client.close()


def _node_counter(servers: list[Server], counter: str) -> list[int]:
    return [int(s.action("stats").get(counter, 0)) for s in servers]


def _rss_mb(deployment: Deployment) -> dict[str, float]:
    return {s.name: round(s.rss_bytes() / 1e6, 1) for s in deployment.own}


# --------------------------------------------------------------------------- the section


def mesh(ctx: suites.Context) -> dict:
    """Mesh mode: full scan by split setting, cross-domain TPC-H, replica scaling."""
    ctx.sampler.phase = "mesh"
    run = MeshRun(ctx)
    out: dict = {}
    try:
        main = run.deploy("main", _settings(), new={domain: 1 for domain in DOMAINS})
        ctx.advance(1)
        parts: dict[str, Callable[[suites.Context], dict]] = {
            "scan": lambda c: full_scan(c, run, main),
            "tpch": lambda c: cross_domain(c, run, main),
            "scaling": lambda c: scaling(c, run, main),
        }
        for name, part in parts.items():
            ctx.sampler.phase = f"mesh_{name}"
            started = time.perf_counter()
            out[name] = suites.safe_section(ctx, f"mesh {name}", part)
            out[name]["part_seconds"] = time.perf_counter() - started
        out["deployments"] = {name: d.describe() for name, d in run.deployments.items()}
    finally:
        run.close()
    out["findings"] = findings(out)
    return out


def findings(out: dict) -> list[str]:
    """What the mesh-mode gateway did not do (or got wrong) in this run."""
    notes = []
    for name in ("scan", "tpch", "scaling"):
        if "error" in out.get(name, {}):
            notes.append(f"{name} failed: {out[name]['error']}")
    scan = out.get("scan", {})
    notes += [
        f"split_endpoints = {n}: not split ({count} endpoint{'s' * (count != 1)})"
        for n, count in scan.get("endpoints", {}).items()
        if count < int(n)
    ]
    notes += [
        f"full scan via {name}: {entry['rows']:,} rows instead of {scan['rows']:,}"
        for name, entry in scan.items()
        if isinstance(entry, dict) and entry.get("complete") is False
    ]
    tpch = out.get("tpch", {})
    if tpch.get("whole_pushed_down"):
        notes.append(
            "fragment_pushdown = false not honoured: the gateway still pushed fragments down "
            f"(pushed_down=true in its log for q{', q'.join(tpch['whole_pushed_down'])}); "
            "the whole-products bytes are computed from the products' sizes"
        )
    if tpch.get("not_identical"):
        notes.append(
            f"results differ from the embedded gateway: q{', q'.join(tpch['not_identical'])}"
        )
    if tpch.get("failed"):
        notes.append(f"queries failed in mesh mode: q{', q'.join(tpch['failed'])}")
    if tpch.get("missing_log"):
        notes.append(
            f"no federated_query log line (bytes unknown) for q{', q'.join(tpch['missing_log'])}"
        )
    for replicas, entry in out.get("scaling", {}).get("replicas", {}).items():
        shares = entry.get("replica_share") or []
        if int(replicas) > 1 and shares and max(shares) > 0.95:
            notes.append(
                f"{replicas} orders replicas: tickets not spread "
                f"({', '.join(f'{s:.0%}' for s in shares)} per replica)"
            )
        if entry.get("errors"):
            notes.append(f"{replicas} orders replicas: {entry['errors']} query errors")
    return notes


# --------------------------------------------------------------------------- 1. full scan


def _flight_info(client: FlightClient, sql: str) -> flight.FlightInfo:
    return client.client.get_flight_info(
        flight.FlightDescriptor.for_command(sql.encode()), client.options
    )


def endpoint_count(deployment: Deployment, sql: str) -> int:
    """How many endpoints the deployment's gateway answers ``sql`` with."""
    client = deployment.flight()
    try:
        return len(_flight_info(client, sql).endpoints)
    finally:
        client.close()


def relayed_drain(client: FlightClient, sql: str) -> tuple[int, int]:
    """pyarrow.flight ignores endpoint locations: every ticket goes back to the gateway,
    which relays the node's rows; (rows, bytes) over all endpoints."""
    rows = size = 0
    for endpoint in _flight_info(client, sql).endpoints:
        for chunk in client.client.do_get(endpoint.ticket, client.options):
            rows += chunk.data.num_rows
            size += chunk.data.nbytes
    return rows, size


def full_scan(ctx: suites.Context, run: MeshRun, main: Deployment) -> dict:
    """SELECT * FROM orders.lineitem: embedded vs mesh (split 1/2/4) vs relayed, MB/s."""
    config = ctx.config
    splits = {
        n: main if n == 1 else run.launch(f"split-{n}", _settings(split=n), new={ORDERS: 1})
        for n in sorted(set(config.mesh_splits) | {1})
    }
    run.ready(*(d for d in splits.values() if d is not main))
    adbc = {"embedded": ctx.adbc(), **{f"split_{n}": d.adbc() for n, d in splits.items()}}
    relay = main.flight()
    variants: dict[str, Callable[[], tuple[int, int]]] = {
        name: (lambda client=client: client.drain(SCAN_QUERY)) for name, client in adbc.items()
    }
    variants["relayed"] = lambda: relayed_drain(relay, SCAN_QUERY)
    nodes = {
        "embedded": [],
        **{f"split_{n}": d.nodes[ORDERS] for n, d in splits.items()},
        "relayed": main.nodes[ORDERS],
    }
    out: dict = {"sql": SCAN_QUERY}
    with _clients(*adbc.values(), relay):
        out["endpoints"] = {str(n): endpoint_count(d, SCAN_QUERY) for n, d in splits.items()}
        warm: dict[str, dict] = {}
        for name, action in variants.items():  # warm-up round: sizes and node tickets
            before = _node_counter(nodes[name], "tickets")
            rows, size = action()
            tickets = sum(_node_counter(nodes[name], "tickets")) - sum(before)
            warm[name] = {"rows": rows, "bytes": size, "node_tickets": tickets}
        timings = interleaved(
            variants, config.repetitions, warmup=0, on_repetition=lambda: ctx.advance(1)
        )
    payload = warm["embedded"]["bytes"]
    out.update({"payload_mb": payload / 1e6, "rows": warm["embedded"]["rows"]})
    for name, values in timings.items():
        entry = {**summary(values), **warm[name], "complete": warm[name]["rows"] == out["rows"]}
        out[name] = with_throughput(entry, payload)
    for name in variants:
        out[name]["vs_embedded"] = ratio(out[name]["mb_per_s"], out["embedded"]["mb_per_s"])
        out[name]["vs_split_1"] = ratio(out[name]["mb_per_s"], out["split_1"]["mb_per_s"])
    out["rss_mb"] = {name: _rss_mb(d) for name, d in run.deployments.items()}
    for deployment in splits.values():
        if deployment is not main:
            run.stop(deployment)
    return out


# --------------------------------------------------------------------------- 2. cross-domain TPC-H


def domains_of(sql: str) -> list[str]:
    """The domains a query reads (tables written ``<domain>.<table>``)."""
    return sorted({t.db for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table) if t.db})


class ProductSizes:
    """Arrow bytes of each governed product as the benchmark user reads it whole (the data
    a node ships when fragments are not pushed down), drained once through the embedded gateway."""

    def __init__(self, client: AdbcClient) -> None:
        self.client = client
        self.sizes: dict[str, int] = {}

    def __call__(self, product: str) -> int:
        if product not in self.sizes:
            self.sizes[product] = self.client.drain(f"SELECT * FROM {product}")[1]
        return self.sizes[product]


def _logged_whole_bytes(record: dict | None) -> tuple[int, str] | None:
    """The gateway's own whole-products figure in a log record (a numeric ``*whole*`` key)."""
    for key, value in (record or {}).items():
        if "whole" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value), key
    return None


def whole_products_bytes(pushdown: dict | None, whole: dict | None, sizes: ProductSizes) -> dict:
    """What moving the whole governed products costs: the whole-products gateway's logged
    figure, else the pushdown gateway's, else the drained sizes of the fragments' products
    (``computed``, always given as a cross-check)."""
    fragments = (whole or pushdown or {}).get("fragments", [])
    computed = (
        sum(sizes(p) for f in fragments for p in f.get("products", [])) if fragments else None
    )
    logged = _logged_whole_bytes(whole) or _logged_whole_bytes(pushdown)
    if logged is not None:
        return {
            "whole_products": logged[0],
            "whole_products_source": f"gateway log ({logged[1]})",
            "whole_products_computed": computed,
        }
    return {
        "whole_products": computed,
        "whole_products_source": "product sizes",
        "whole_products_computed": computed,
    }


def _compare(got: pa.Table, expected: pa.Table) -> dict:
    if not got.schema.equals(expected.schema, check_metadata=False):
        return {
            "ok": False,
            "detail": f"schema differs: {got.schema} vs {expected.schema}".replace("\n", "; "),
        }
    ok, detail = same_result(got, expected)
    return {"ok": ok, "detail": detail}


def _query_entry(
    sql: str,
    clients: dict[str, AdbcClient],
    gateways: dict[str, Deployment],
    sizes: ProductSizes,
    repetitions: int,
) -> dict:
    domains = domains_of(sql)
    entry: dict = {"domains": domains, "span": len(domains)}
    variants = {
        name: (lambda c=client: c.query_new_statement(sql)) for name, client in clients.items()
    }
    tables, records = {}, {}
    for name, action in variants.items():  # warm-up round, compared
        deployment = gateways.get(name)
        offset = deployment.log_offset() if deployment else 0
        tables[name] = action()
        if deployment is not None and len(domains) > 1:
            records[name] = deployment.federated_record(offset)
    entry["rows"] = tables["embedded"].num_rows
    entry["identical"] = {name: _compare(tables[name], tables["embedded"]) for name in gateways}
    del tables
    timings = interleaved(variants, repetitions, warmup=0, alternate=True)
    entry.update({name: summary(values) for name, values in timings.items()})
    # each repetition runs the four back to back (ABCD, then DCBA): its own times' ratios
    entry["pushdown_vs_whole"] = paired_ratio(timings["pushdown"], timings["whole"])
    entry["pushdown_vs_embedded"] = paired_ratio(timings["pushdown"], timings["embedded"])
    entry["static_vs_embedded"] = paired_ratio(timings["static"], timings["embedded"])
    entry["whole_vs_embedded"] = paired_ratio(timings["whole"], timings["embedded"])
    entry["pushdown_vs_embedded_of_medians"] = ratio(
        entry["pushdown"]["median"], entry["embedded"]["median"]
    )
    if len(domains) > 1:
        pushdown, whole = records.get("pushdown"), records.get("whole")
        entry["bytes"] = {
            "pushdown": (pushdown or {}).get("bytes_moved"),
            "static": (records.get("static") or {}).get("bytes_moved"),
            "whole": (whole or {}).get("bytes_moved"),
            **whole_products_bytes(pushdown, whole, sizes),
        }
        entry["bytes_ratio"] = ratio(entry["bytes"]["pushdown"], entry["bytes"]["whole_products"])
        entry["pushed_down"] = {
            "pushdown": (pushdown or {}).get("pushed_down"),
            "whole": (whole or {}).get("pushed_down"),
        }
        entry["fragments"] = (pushdown or {}).get("fragments")
    return entry


def cross_domain(ctx: suites.Context, run: MeshRun, main: Deployment) -> dict:
    """The 22 TPC-H queries: embedded vs fragment pushdown (with dynamic filters and join
    groups, and without: ``static``) vs whole products."""
    config = ctx.config
    whole = run.deploy("whole", _settings(pushdown=False), existing=main.nodes)
    static = run.deploy("static", _settings(dynamic=False), existing=main.nodes)
    gateways = {"pushdown": main, "static": static, "whole": whole}

    def connect() -> dict[str, AdbcClient]:
        return {"embedded": ctx.adbc(), **{name: d.adbc() for name, d in gateways.items()}}

    clients = connect()
    sizes = ProductSizes(ctx.adbc())
    per_query: dict = {}
    try:
        for number in QUERY_NUMBERS:
            ctx.working_on(f"q{number}")
            sql = qualified(number, config.scale)
            try:
                per_query[str(number)] = _query_entry(
                    sql, clients, gateways, sizes, config.repetitions
                )
            except Exception as exc:  # noqa: BLE001 - one failing query must not sink the others
                per_query[str(number)] = {
                    "domains": domains_of(sql),
                    "error": suites._error_text(exc),
                }
                ctx.log(f"mesh TPC-H q{number}: {per_query[str(number)]['error']}")
                for client in clients.values():
                    client.close()
                clients = connect()
            ctx.advance(1)
    finally:
        for client in [*clients.values(), sizes.client]:
            client.close()
        rss = _rss_mb(whole)
        run.stop(whole)
        run.stop(static)
    return {
        "queries": per_query,
        "product_bytes": sizes.sizes,
        "rss_mb": rss,
        **_tpch_summary(per_query),
    }


def _tpch_summary(per_query: dict) -> dict:
    ok = {n: e for n, e in per_query.items() if "error" not in e}
    cross = {n: e for n, e in ok.items() if e["span"] > 1}
    spans: dict[str, list[str]] = {}
    for number, e in per_query.items():
        spans.setdefault(str(len(e["domains"])), []).append(number)
    pushed = sum(e["bytes"]["pushdown"] or 0 for e in cross.values())
    whole_products = sum(e["bytes"]["whole_products"] or 0 for e in cross.values())
    return {
        "by_span": spans,
        "failed": [n for n, e in per_query.items() if "error" in e],
        "not_identical": [
            n for n, e in ok.items() if not all(c["ok"] for c in e["identical"].values())
        ],
        "all_identical": len(ok) == len(per_query)
        and all(c["ok"] for e in ok.values() for c in e["identical"].values()),
        "whole_pushed_down": [n for n, e in cross.items() if e["pushed_down"]["whole"]],
        "missing_log": [
            n for n, e in cross.items() if None in (e["bytes"]["pushdown"], e["bytes"]["whole"])
        ],
        "geomean_pushdown_vs_whole": geomean(e["pushdown_vs_whole"] for e in cross.values()),
        "geomean_pushdown_vs_embedded": geomean(e["pushdown_vs_embedded"] for e in cross.values()),
        "geomean_pushdown_vs_embedded_of_medians": geomean(
            e["pushdown_vs_embedded_of_medians"] for e in cross.values()
        ),
        "max_pushdown_vs_embedded": max(
            (e["pushdown_vs_embedded"] for e in cross.values()), default=None
        ),
        "geomean_static_vs_embedded": geomean(e["static_vs_embedded"] for e in cross.values()),
        "sum_bytes_static": sum(e["bytes"]["static"] or 0 for e in cross.values()),
        "geomean_whole_vs_embedded": geomean(e["whole_vs_embedded"] for e in cross.values()),
        "geomean_single_domain_vs_embedded": geomean(
            e["pushdown_vs_embedded"] for n, e in ok.items() if n not in cross
        ),
        "sum_bytes_pushdown": pushed,
        "sum_bytes_whole_products": whole_products,
        "bytes_ratio": ratio(pushed, whole_products),
        "whole_products_sources": sorted(
            {e["bytes"]["whole_products_source"] for e in cross.values()}
        ),
    }


# --------------------------------------------------------------------------- 3. scaling


def orders_mix(scale: float) -> list[tuple[str, str]]:
    """The concurrency section's mix with every statement that leaves the orders domain
    (q14: lineitem x part) replaced by a moderate lineitem scan."""
    return [
        (kind, sql) if domains_of(sql) == [ORDERS] else ("scan", MODERATE_SCAN)
        for kind, sql in suites._mix(scale)
    ]


def _scaling_entry(windows: list[dict], tickets: list[int], baseline_qps: float | None) -> dict:
    entry = suites.window_summary(windows)
    total = sum(tickets)
    return {
        **entry,
        "vs_1_node": ratio(entry["qps"]["median"], baseline_qps),
        "tickets_per_replica": tickets,
        "replica_share": [t / total for t in tickets] if total else [],
    }


def scaling(ctx: suites.Context, run: MeshRun, main: Deployment) -> dict:
    """``mesh_clients`` clients, orders-only mix, orders served by 1, 2, 3 node replicas."""
    config = ctx.config
    counts = sorted(set(config.mesh_replicas) | {1})
    top = max(counts)
    deployments = {1: main}
    if top > 1:
        deployments[top] = run.launch(
            f"replicas-{top}", _settings(), existing=main.nodes, new={ORDERS: top - 1}
        )
    replicas = deployments[top].nodes[ORDERS]
    for count in counts:
        if count not in deployments:
            deployments[count] = run.launch(
                f"replicas-{count}", _settings(), existing={**main.nodes, ORDERS: replicas[:count]}
            )
    run.ready(*(d for d in deployments.values() if d is not main))
    mix = orders_mix(config.scale)
    window = config.mesh_seconds / config.repetitions
    clients = {
        count: [d.adbc() for _ in range(config.mesh_clients)] for count, d in deployments.items()
    }
    windows: dict[int, list[dict]] = {count: [] for count in counts}
    tickets = {count: [0] * count for count in counts}
    with _clients(*(c for group in clients.values() for c in group)):
        for count in counts:  # warm-up window, not kept
            suites._window([c.query for c in clients[count]], mix, min(window / 2, 2.0))
        for _ in range(config.repetitions):
            for count in counts:
                nodes = deployments[count].nodes[ORDERS]
                before = _node_counter(nodes, "tickets")
                windows[count].append(
                    suites._window([c.query for c in clients[count]], mix, window)
                )
                tickets[count] = [
                    t + a - b
                    for t, a, b in zip(
                        tickets[count], _node_counter(nodes, "tickets"), before, strict=True
                    )
                ]
            ctx.advance(1)
    baseline = summary([w["qps"] for w in windows[1]])["median"]
    out: dict = {
        "clients": config.mesh_clients,
        "window_seconds": window,
        "mix": [kind for kind, _ in mix],
        "replicas": {str(c): _scaling_entry(windows[c], tickets[c], baseline) for c in counts},
    }
    out["rss_mb"] = {f"replicas-{c}": _rss_mb(d) for c, d in deployments.items()}
    for deployment in deployments.values():
        if deployment is not main:
            run.stop(deployment)
    out["scaling_top"] = out["replicas"][str(top)]["vs_1_node"]
    return out
