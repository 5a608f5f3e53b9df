"""Query admission around execution: the plan cache, per-user limits and EXPLAIN."""
