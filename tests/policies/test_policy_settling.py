"""A policy file being written in place is never taken half-written."""

from __future__ import annotations

from pathlib import Path

from gateway.catalog.state import MeshState
from gateway.config import load_config
from policies.engine import Subject

CAROL = Subject("carol", ("marketing",), {})


def test_a_file_caught_mid_write_is_not_taken_until_it_stops_changing(mesh_copy: Path) -> None:
    state = MeshState(mesh_copy, load_config(mesh_copy))

    def carol_reads_customers() -> bool:
        return state.current.governor.may_read(CAROL, "crm.customers")

    assert carol_reads_customers()
    policy = mesh_copy / "crm" / "policy.csv"
    full = policy.read_text(encoding="utf-8")
    policy.write_text("", encoding="utf-8")  # truncated: the moment before the new text
    assert not state.refresh()
    assert carol_reads_customers(), "a half-written policy file took effect"
    policy.write_text(full + "# edited\n", encoding="utf-8")  # the write completes
    assert not state.refresh()  # changed again: looked at once more
    assert state.refresh()
    assert carol_reads_customers()
    policy.write_text("", encoding="utf-8")  # emptied on purpose, and left so
    assert not state.refresh()
    assert state.refresh()
    assert not carol_reads_customers()
