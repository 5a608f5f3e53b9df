"""Meshgate: a governed, federated Arrow Flight SQL gateway for a data mesh."""

__version__ = "0.1.0"
