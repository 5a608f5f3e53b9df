"""The chart of each section (see sections.py): a matplotlib figure from its results."""

from __future__ import annotations

from typing import Any

from benchmarks.markdown import get, scan_keys


def pyplot() -> Any:
    """matplotlib.pyplot without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tpch(section: dict) -> Any:
    """Gateway / DuckDB time ratio per TPC-H query, without and with the policy set."""
    tpch = section.get("queries", {})
    plt = pyplot()
    numbers = [n for n, e in tpch.items() if "error" not in e]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    xs = range(len(numbers))
    ax.bar(
        [x - 0.2 for x in xs],
        [tpch[n]["ratio"] for n in numbers],
        0.4,
        label="gateway / DuckDB (no policy)",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [tpch[n]["ratio_policy"] for n in numbers],
        0.4,
        label="gateway / hand-written SQL (policy set)",
    )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.05, color="green", linestyle="--", linewidth=0.8, label="1.05x")
    ax.axhline(1.2, color="red", linestyle="--", linewidth=0.8, label="1.2x")
    ax.set_xticks(list(xs), [f"q{n}" for n in numbers])
    ax.set_ylabel("time ratio (median)")
    ax.set_title("TPC-H through the gateway (ADBC) vs DuckDB in-process")
    ax.legend(fontsize=8)
    return fig


def concurrency(section: dict) -> Any:
    """Throughput and latency by number of clients."""
    levels = section.get("levels", {})
    if not levels:
        return None
    clients = [int(k) for k in levels]
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, style, color in (("gateway", "o-", "tab:blue"), ("duckdb", "s--", "tab:orange")):
        left.plot(
            clients,
            [levels[str(c)][name]["qps"]["median"] for c in clients],
            style,
            color=color,
            label=name,
        )
        right.plot(
            clients,
            [levels[str(c)][name]["p99_ms"] for c in clients],
            style,
            color=color,
            label=f"{name} p99",
        )
        right.plot(
            clients,
            [levels[str(c)][name]["p50_ms"] for c in clients],
            style,
            color=color,
            alpha=0.4,
            label=f"{name} p50",
        )
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(clients, [str(c) for c in clients])
        axis.set_xlabel("concurrent clients")
        axis.legend(fontsize=8)
    left.set_ylabel("queries / s (median window)")
    right.set_ylabel("latency (ms)")
    right.set_yscale("log")
    left.set_title("Mixed workload throughput")
    right.set_title("Latency")
    return fig


def small_queries(section: dict) -> Any:
    """p50 latency of each client path."""
    small = section.get("queries", {})
    if not small:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = list(small)
    clients = [
        c
        for c in ("duckdb", "bare_flight", "flight", "adbc", "adbc_new_statement")
        if c in small[names[0]]
    ]
    width = 0.8 / len(clients)
    for index, client in enumerate(clients):
        ax.bar(
            [i + (index - (len(clients) - 1) / 2) * width for i in range(len(names))],
            [small[n][client]["median"] for n in names],
            width,
            label={
                "duckdb": "DuckDB in-process",
                "bare_flight": "bare Flight + DuckDB",
                "flight": "gateway pyarrow.flight",
                "adbc": "gateway ADBC (reused)",
                "adbc_new_statement": "gateway ADBC (one-off)",
            }[client],
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("Small-query latency")
    ax.legend(fontsize=8)
    return fig


def large_result(large: dict) -> Any:
    """MB/s of each path of the full scan."""
    variants = [
        v for v in ("duckdb", "memory_flight", "bare_duckdb_flight", "flight", "adbc") if v in large
    ]
    if not variants:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(
        range(len(variants)),
        [large[v]["mb_per_s"] for v in variants],
        yerr=[
            [large[v]["mb_per_s"] - large[v]["mb_per_s_min"] for v in variants],
            [large[v]["mb_per_s_max"] - large[v]["mb_per_s"] for v in variants],
        ],
    )
    ax.set_xticks(
        range(len(variants)),
        [
            {
                "duckdb": "DuckDB\nin-process",
                "memory_flight": "bare Flight\nin-memory",
                "bare_duckdb_flight": "bare Flight\nDuckDB reader",
                "flight": "gateway\npyarrow.flight",
                "adbc": "gateway\nADBC",
            }[v]
            for v in variants
        ],
    )
    ax.set_ylabel("MB/s")
    ax.set_title("SELECT * FROM lineitem")
    return fig


def peer(section: dict) -> Any:
    """ROAPI time / gateway time per TPC-H query ROAPI ran."""
    peer = get(section, "tpch", "queries", default={})
    ran = [n for n, e in peer.items() if "error" not in e]
    if not ran:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(range(len(ran)), [peer[n]["roapi_vs_gateway"] for n in ran])
    ax.axhline(3.0, color="green", linestyle="--", linewidth=0.8, label="3x target")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ran)), [f"q{n}" for n in ran])
    ax.set_ylabel("ROAPI time / gateway time")
    ax.set_title("Peer: ROAPI Flight SQL vs the gateway (same ADBC client)")
    ax.legend(fontsize=8)
    return fig


def mesh(mesh: dict) -> Any:
    """Full-scan MB/s, cross-domain bytes moved, and QPS by orders replicas, side by side."""
    if not any(
        isinstance(mesh.get(part), dict) and "error" not in mesh[part]
        for part in ("scan", "tpch", "scaling")
    ):
        return None
    plt = pyplot()
    fig, (scan_ax, bytes_ax, qps_ax) = plt.subplots(1, 3, figsize=(15, 4.2))
    scan = mesh.get("scan", {})
    keys = scan_keys(scan)
    scan_ax.bar(range(len(keys)), [scan[k]["mb_per_s"] for k in keys])
    scan_ax.set_xticks(range(len(keys)), [k.replace("_", " ") for k in keys], fontsize=8)
    scan_ax.set_ylabel("MB/s")
    scan_ax.set_title("SELECT * FROM orders.lineitem (ADBC)")
    queries = {n: e for n, e in get(mesh, "tpch", "queries", default={}).items() if "bytes" in e}
    xs = range(len(queries))
    for offset, key, label in (
        (-0.2, "pushdown", "fragment pushdown"),
        (0.2, "whole_products", "whole products"),
    ):
        bytes_ax.bar(
            [x + offset for x in xs],
            [(e["bytes"][key] or 0) / 1e6 for e in queries.values()],
            0.4,
            label=label,
        )
    bytes_ax.set_yscale("log")
    bytes_ax.set_xticks(list(xs), [f"q{n}" for n in queries], fontsize=7, rotation=90)
    bytes_ax.set_ylabel("MB moved node -> gateway")
    bytes_ax.set_title("Cross-domain TPC-H: bytes moved")
    bytes_ax.legend(fontsize=8)
    replicas = get(mesh, "scaling", "replicas", default={})
    qps_ax.bar(range(len(replicas)), [e["qps"]["median"] for e in replicas.values()])
    qps_ax.set_xticks(range(len(replicas)), list(replicas))
    qps_ax.set_xlabel("orders node replicas")
    qps_ax.set_ylabel("queries / s (median window)")
    qps_ax.set_title(f"{get(mesh, 'scaling', 'clients', default='?')} clients, orders-only mix")
    return fig
