"""The demo mesh: three domains, their contracts, data and policies, written to disk."""
