"""Superset in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright through ``executable_path``) logs into Superset, opens a saved time-series chart
over sales.orders on alice's connection, and the chart draws from data that holds EU rows
only. The screenshot is kept in the test's directory; with ``MESHGATE_DOCS_SCREENSHOTS=1``
it also replaces docs/superset-chart.png (the README shows it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from support.superset import ADMIN, Superset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
#: Debian's Chromium binary (``/usr/bin/chromium`` is a shell wrapper around it)
CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chart(superset: Superset, orders_dataset: int) -> int:
    """The id of a saved monthly bar chart of alice's orders, by region."""
    dataset = orders_dataset
    metric = {
        "expressionType": "SIMPLE",
        "column": {"column_name": "amount"},
        "aggregate": "SUM",
        "label": "SUM(amount)",
    }
    form = {
        "datasource": f"{dataset}__table",
        "viz_type": "echarts_timeseries_bar",
        "x_axis": "order_date",
        "time_grain_sqla": "P1M",
        "metrics": [metric],
        "groupby": ["region"],
        "adhoc_filters": [
            {
                "clause": "WHERE",
                "subject": "order_date",
                "operator": "TEMPORAL_RANGE",
                "comparator": "No filter",
                "expressionType": "SIMPLE",
            }
        ],
        "row_limit": 10000,
        "show_legend": True,
    }
    saved = superset.ok(
        "POST",
        "/api/v1/chart/",
        {
            "slice_name": "Orders by month and region, as alice (Meshgate)",
            "viz_type": "echarts_timeseries_bar",
            "datasource_id": dataset,
            "datasource_type": "table",
            "params": json.dumps(form),
        },
    )
    return int(saved["id"])


def test_chromium_logs_in_and_draws_alices_chart_from_eu_rows_only(
    superset: Superset, chart: int, oracle, tmp_path: Path
):
    assert CHROMIUM.is_file(), "Debian's chromium is not installed: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{superset.url}/login/")
            page.fill('[data-test="username-input"]', ADMIN[0])
            page.fill('[data-test="password-input"]', ADMIN[1])
            page.click('[data-test="login-button"]')
            page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
            with page.expect_response(
                lambda r: "/api/v1/chart/data" in r.url and r.request.method == "POST",
                timeout=120_000,
            ) as answered:
                page.goto(f"{superset.url}/explore/?slice_id={chart}")
            response = answered.value
            assert response.status == 200
            [result] = response.json()["result"]
            # the series are pivoted by region: one column per region the rows hold
            assert result["colnames"] == ["order_date", "EU"]
            months = oracle.rows(
                "alice", "SELECT count(DISTINCT date_trunc('month', order_date)) FROM sales.orders"
            )[0][0]
            assert len(result["data"]) == months
            page.wait_for_selector('[data-test="chart-container"] canvas', timeout=60_000)
            assert page.locator(".ant-alert-error").count() == 0
            # the bars are drawn after the data arrives (ECharts animates them in)
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-test=\"chart-container\"] canvas')]"
                ".some(c => c.width > 0 && c.height > 0)",
                timeout=30_000,
            )
            page.wait_for_timeout(1500)  # let the bar animation finish for the picture only
            shot = tmp_path / "superset-chart.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("MESHGATE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(shot, REPO / "docs" / "superset-chart.png")
