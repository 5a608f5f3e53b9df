"""Data products: ODCS contracts checked against their sources, the catalog, mesh state."""
