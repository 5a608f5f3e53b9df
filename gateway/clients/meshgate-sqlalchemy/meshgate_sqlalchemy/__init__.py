"""Meshgate for SQLAlchemy and BI tools: the ``meshgate://`` dialect (``dialect``) and an
Apache Superset engine spec (``superset``, loaded by Superset only).

This distribution (``meshgate-sqlalchemy``) needs the ADBC Flight SQL driver and SQLAlchemy,
nothing of the Meshgate server.
"""

__version__ = "0.1.0"
