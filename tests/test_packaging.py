"""What the distribution declares: one version, the license file, the py.typed markers."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import gateway

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_is_kept_in_gateway_init_alone():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    source = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert source == {"attr": "gateway.__version__"}
    installed = importlib.metadata.version("meshgate")
    assert installed == gateway.__version__, (
        f"installed metadata says {installed}, gateway/__init__.py {gateway.__version__}: "
        "reinstall (pip install -c constraints.txt -e '.[test]')"
    )


def test_the_declared_license_file_is_there():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    for name in PYPROJECT["project"]["license-files"]:
        text = (ROOT / name).read_text(encoding="utf-8")
        assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_each_package_ships_a_py_typed_marker():
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package in ("gateway", "connectors", "policies"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in package_data[package]
