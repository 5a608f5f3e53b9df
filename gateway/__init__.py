"""Meshgate: a governed, federated Arrow Flight SQL gateway for a data mesh."""

# The one place the version is kept: pyproject.toml reads it ([tool.setuptools.dynamic]).
# This module imports nothing: connectors and policies load it with gateway.errors.
__version__ = "0.1.0"
