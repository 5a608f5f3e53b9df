"""A failure while the federation plans its dynamic filters cuts every stream already
opening, not only those that finished opening."""

from __future__ import annotations

import threading
from typing import cast

import pyarrow as pa
import pytest

from gateway.mesh import dynamic, federation
from gateway.mesh.fragments import FederatedPlan, Fragment
from gateway.mesh.sizes import EstimateCache
from gateway.security.principal import Principal


class _Stream:
    def __init__(self, fragment: Fragment) -> None:
        self.fragment = fragment
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def read_all(self) -> pa.Table:
        return pa.table({"k": [1]})


class _Nodes:
    """Opens streams that report when they are opening and wait for ``go``."""

    dynamic_filters = True

    def __init__(self) -> None:
        self.estimates = EstimateCache()
        self.opening = threading.Event()
        self.go = threading.Event()
        self.streams: list[_Stream] = []

    def open_stream(self, fragment, principal, decisions, failures) -> _Stream:
        self.opening.set()
        assert self.go.wait(60)
        stream = _Stream(fragment)
        self.streams.append(stream)
        return stream


def test_a_planning_error_cuts_the_streams_still_opening(monkeypatch) -> None:
    free = Fragment("__fragment_0", "sales", "SELECT 1 AS k", ("sales.orders",))
    keyed = Fragment("__fragment_1", "crm", "SELECT 1 AS k", ("crm.customers",))
    plan = FederatedPlan((free, keyed), "SELECT 1", pushed_down=True)
    nodes = _Nodes()
    join = dynamic.KeyJoin(
        build="__fragment_1", build_column="k", probe="__fragment_1", probe_column="k"
    )

    def failing_order(*_):
        assert nodes.opening.wait(60)  # the free fragment is opening now
        threading.Timer(0.2, nodes.go.set).start()
        raise RuntimeError("planning failed")

    monkeypatch.setattr(dynamic, "key_joins", lambda _: [join])
    monkeypatch.setattr(dynamic, "plan_order", failing_order)
    with pytest.raises(RuntimeError, match="planning failed"):
        federation.run_fragments(
            plan,
            cast(federation.NodeDirectory, nodes),
            cast(Principal, None),
            {},
            lambda sql: pa.schema([("k", pa.int64())]),
        )
    assert [s.fragment.name for s in nodes.streams] == ["__fragment_0"]
    assert all(s.stopped for s in nodes.streams)
