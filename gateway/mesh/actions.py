"""The Flight action names a domain node answers (``gateway.mesh.node``), in a module of their own:
the gateway's side (``gateway.mesh.federation``; ``benchmarks.launch`` for the benchmarks and tests)
names them without importing the node server, which imports the gateway's application."""

from __future__ import annotations

ACTION_HEALTH = "health"
ACTION_STATS = "stats"
ACTION_SCHEMA = "schema"
ACTION_ENDS = "ends"
