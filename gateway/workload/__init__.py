"""Workload management: what a query costs, which resource group runs it, and when."""
