"""Helpers of the test suite, one module per concern. Test modules import them as
``support.<module>`` (pyproject's ``[tool.pytest.ini_options] pythonpath`` puts tests/ on
the import path); test modules never import each other.

- ``servers``: gateway processes: the shared one, and a test's private one with changed
  settings on its own mesh copy (started by ``benchmarks.launch``).
- ``mesh``: mesh mode: domain node processes beside a gateway; mesh = embedded comparison.
- ``clients``: ADBC and pyarrow.flight clients, raw-SQL queries, what a client sees of an
  error, ``Outcome`` (a table or an error) of one statement, the ``Health`` of products.
- ``oracle``: the one oracle of the demo rules (the session ``oracle`` fixture): the raw
  demo data, what each demo user should see of it, and facts of it, with DuckDB.
- ``leaks``: the leak detector of the adversarial suite.
- ``attacks``: the adversarial suite's escape cases and barrier statements, as data (run on
  DuckDB by tests/adversarial, on Spark by tests/spark).
- ``tables``: Arrow tables compared column by column.
- ``policy_files``: where a rule stands in a policy file (``crm/policy.csv:3``).
- ``logs``: server log lines, audit files, CLI text.
- ``polling``: waiting for what a server does in its own time; timing a call.
- ``probes``: issue 11's timing probe on rows hidden by a row filter.
- ``memory``: a server's RSS sampled while a test runs.
- ``metrics``: a gateway's ``/metrics`` scraped and parsed.
- ``planning``: an allow-everything ``PlanContext`` for in-process planning tests.
"""
