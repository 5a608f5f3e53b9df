"""The audit trail: every query attempt as a durable JSON line, and reading it back."""
