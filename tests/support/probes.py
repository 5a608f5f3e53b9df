"""Issue 11's timing probe: does a costly predicate take longer on rows the user may not
see than on rows that do not exist? (It must not: the security barrier.)"""

from __future__ import annotations

import statistics
import time

from support.clients import adbc_connect


def hidden_only_customers(uri: str, count: int = 40) -> list[int]:
    """Customers whose orders are all outside alice's row filter (region = 'EU'), asked
    of bob, who sees every order."""
    connection = adbc_connect(uri, "bob")
    try:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT customer_id FROM sales.orders GROUP BY customer_id "
            f"HAVING bool_and(region <> 'EU') ORDER BY customer_id LIMIT {count}"
        )
        return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def hidden_probe(customers: list[int]) -> str:
    """Issue 11's timing probe, its comparison bounded as the function allow-list wants:
    about 0.5 ms of work per order of ``customers`` that reaches the predicate."""
    constant = "ba" * 50
    return (
        f"SELECT count(*) FROM sales.orders WHERE CASE WHEN customer_id IN "
        f"({', '.join(map(str, customers))}) THEN "
        f"damerau_levenshtein(repeat('ab', 1000) || customer_id::VARCHAR, '{constant}') "
        f"ELSE 0 END > 5"
    )


def hidden_probe_timing_ratio(uri: str, alice, pairs: int = 12) -> float:
    """The median time of alice's probe on customers whose orders are all hidden from her
    over that on as many absent customers, alternating the order of each pair, after a
    warm-up. Each probe answers 0 rows."""
    hidden = hidden_only_customers(uri)
    assert len(hidden) >= 20, "the demo data should have customers alice sees no order of"
    absent = [10_000_000 + c for c in hidden]
    times: dict[str, list[float]] = {"hidden": [], "absent": []}
    cursor = alice.cursor()
    try:
        for round_ in range(pairs + 1):
            order = (("hidden", hidden), ("absent", absent))
            for name, customers in order if round_ % 2 else order[::-1]:
                started = time.perf_counter()
                cursor.execute(hidden_probe(customers))
                assert cursor.fetchall() == [(0,)]  # alice sees none of these orders
                if round_:
                    times[name].append(time.perf_counter() - started)
    finally:
        cursor.close()
    return statistics.median(times["hidden"]) / statistics.median(times["absent"])
