"""The executor: one hardened DuckDB database and the Arrow streams it produces."""
