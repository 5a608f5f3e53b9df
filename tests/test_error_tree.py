"""One error tree: every exception class of gateway, connectors and policies derives from
MeshgateError, the tree drawn in gateway/errors.py names them all, and the root can be
imported by connectors and policies without loading the rest of the gateway."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import connectors
import gateway
import policies
from connectors.errors import ConnectorError
from gateway.errors import (
    AccessDenied,
    AuthenticationError,
    ContractError,
    MeshgateError,
    Unavailable,
    UnknownObject,
)
from gateway.mesh.federation import NodeUnavailable
from gateway.mesh.tickets import TicketError
from policies.errors import PolicyError, PolicyExpressionError, PolicyTestFileError

PACKAGES = (gateway, connectors, policies)


def _module_names(packages=PACKAGES) -> list[str]:
    names = []
    for package in packages:
        names.append(package.__name__)
        names.extend(
            info.name for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        )
    return names


def _our_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in our packages, found by walking BaseException's
    subclasses once every module is imported (also classes that do not end in Error)."""
    for name in _module_names():
        importlib.import_module(name)
    prefixes = tuple(f"{p.__name__}." for p in PACKAGES)
    found, pending = [], [BaseException]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith(prefixes) and sub not in found:
                found.append(sub)
    return found


def test_every_exception_class_is_a_meshgate_error():
    classes = _our_exception_classes()
    known = {
        ConnectorError,
        ContractError,
        PolicyError,
        PolicyExpressionError,
        PolicyTestFileError,
        TicketError,
        NodeUnavailable,
    }
    assert known <= set(classes), "the walk missed classes it should find"
    outside = [
        f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, MeshgateError)
    ]
    assert not outside, f"not under MeshgateError (gateway/errors.py): {outside}"


def test_the_drawn_tree_names_every_class():
    drawing = sys.modules["gateway.errors"].__doc__ or ""
    missing = [c.__qualname__ for c in _our_exception_classes() if c.__qualname__ not in drawing]
    assert not missing, f"add to the tree in gateway/errors.py's docstring: {missing}"


def test_subclass_relations_callers_rely_on():
    assert issubclass(PolicyExpressionError, ValueError)  # Governor: except ValueError
    assert issubclass(ConnectorError, ContractError)  # load_catalog: except ContractError
    assert issubclass(TicketError, AuthenticationError)
    assert issubclass(NodeUnavailable, Unavailable)
    assert issubclass(AccessDenied, UnknownObject)


def test_connectors_and_policies_load_only_the_root_of_the_gateway():
    names = _module_names((connectors, policies))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == ["gateway", "gateway.errors"], (
        "connectors and policies may import gateway.errors alone (pyproject.toml "
        f"[tool.importlinter]); importing them loaded {loaded}"
    )
