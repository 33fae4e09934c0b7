"""The page at / in a real headless chromium against the running pipeline, and /docs, /redoc.

Producer -> Kafka -> processor (with a read token required) -> FerretDB; the browser opens the
page for a fixed window, enters the token, and must show the numbers /api/v1/costs, /gpu/info
and /health answer for that same window, with no console error. The screenshot goes to
.state/e2e/page.png (printed; docs/page.md).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import chromium, severe_console_entries
from tests.support.processes import REPO, ProcessorProcess, wait_for

pytestmark = pytest.mark.e2e

EVENTS = 400
TOKEN = "page-e2e-read-token-0123456789abcdef"
SCREENSHOT = REPO / ".state" / "e2e" / "page.png"
# Rendering waits: the page makes five requests and draws a chart; generous for a 2-core CI box.
_RENDER_TIMEOUT_S = 30


# ---- the page's formatting (processor/static/page.js), to compare text with the API's JSON
def _sig2(x: float) -> str:
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 1:
        return f"{x:.2f}"
    if a == 0:
        return "0.00"
    return f"{x:.{min(8, max(2, 1 - math.floor(math.log10(a))))}f}"


def _usd(x: float | None) -> str:
    return "—" if x is None else f"${_sig2(x)}"


def _per1m(x: float | None) -> str:
    return "—" if x is None else f"${_sig2(x)} / 1M"


def _per_group(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows of every period summed per group; $/1M from the sums, as the totals are."""
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        for field in ("tokens", "input_tokens", "output_tokens", "requests", "cost_usd"):
            groups[row["group"]][field] += row[field]
    for g in groups.values():
        g["cost_per_1m_tokens"] = g["cost_usd"] / g["tokens"] * 1e6 if g["tokens"] else None
    return groups


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mongo_url: str,
             ) -> Iterator[tuple[ProcessorProcess, datetime]]:  # fmt: skip
    from tests.conftest import create_topic, delete_topic, unique_name

    topic, dlq = unique_name("page"), unique_name("page-dlq")
    create_topic(kafka_bootstrap, topic, 3)
    create_topic(kafka_bootstrap, dlq, 1)
    db_name = unique_name("page")
    produced_from = datetime.now(UTC)
    done = subprocess.run(
        [sys.executable, "-m", "producers", "run", "--count", str(EVENTS), "--rate", "0",
         "--host", "page-host", "--seed", "11"],
        cwd=REPO, env={**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "KAFKA_TOPIC": topic},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tmp = tmp_path_factory.mktemp("page")
    processor = ProcessorProcess(
        {"KAFKA_BOOTSTRAP": kafka_bootstrap, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": dlq,
         "KAFKA_GROUP_ID": unique_name("page"), "MONGO_URL": mongo_url, "MONGO_DB": db_name,
         "API_READ_TOKENS": TOKEN},
        tmp / "processor.log",
    ).start()  # fmt: skip
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        wait_for(
            f"{EVENTS} token events stored",
            lambda: (
                httpx.get(f"{processor.url}/api/v1/stats", headers=auth, timeout=10)
                .json()
                .get("token_usage")
                == EVENTS
            ),
            120,
        )
        yield processor, produced_from
        processor.stop()
    finally:
        processor.kill()
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]]
        with MongoClient(mongo_url) as client:
            client.drop_database(db_name)
        delete_topic(kafka_bootstrap, topic)
        delete_topic(kafka_bootstrap, dlq)


def _api(processor: ProcessorProcess, path: str, **params: str) -> Any:
    response = httpx.get(f"{processor.url}{path}", params=params, timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def _foreign_resources(driver: WebDriver, origin: str) -> list[str]:
    """Every resource the page loaded (scripts, styles, fonts, images, fetches) not from origin."""
    names: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert names, "the browser recorded no resource at all"
    return [n for n in names if not n.startswith(origin + "/")]


def _wait_state(driver: WebDriver, state: str) -> None:
    WebDriverWait(driver, _RENDER_TIMEOUT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == state,
        f"page never reached data-state={state}",
    )


def _cells(driver: WebDriver, table: str, group: str) -> dict[str, str]:
    row = driver.find_element(By.CSS_SELECTOR, f'#{table} tr[data-group="{group}"]')
    return {c.get_attribute("data-field") or "": c.text
            for c in row.find_elements(By.CSS_SELECTOR, "td[data-field]")}  # fmt: skip


def test_page_shows_what_the_api_answers(
    pipeline: tuple[ProcessorProcess, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    processor, produced_from = pipeline
    start = (produced_from - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with chromium() as driver:
        driver.get(f"{processor.url}/?start={start}&end={end}")
        # The API needs a read token: the page asks for it instead of calling and failing.
        _wait_state(driver, "needs-token")
        assert driver.find_element(By.ID, "auth-form").is_displayed()
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#auth-form button").click()
        _wait_state(driver, "ready")

        shown = driver.find_element(By.ID, "window-shown")
        assert (shown.get_attribute("data-start"), shown.get_attribute("data-end")) == (start, end)
        granularity = shown.get_attribute("data-granularity") or ""
        assert granularity == "minute"
        window = {"start": start, "end": end, "granularity": granularity}
        by_model = _api(processor, "/api/v1/costs", group_by="model", **window)
        by_tenant = _api(processor, "/api/v1/costs", group_by="tenant", **window)

        totals = by_model["totals"]
        assert totals["requests"] == EVENTS
        cards = {c.get_attribute("data-field"): c.text
                 for c in driver.find_elements(By.CSS_SELECTOR, "#summary .value")}  # fmt: skip
        assert cards["cost_usd"] == _usd(totals["cost_usd"])
        assert cards["cost_per_1m_tokens"] == _per1m(totals["cost_per_1m_tokens"])
        assert cards["tokens"] == f"{totals['tokens']:,}"
        assert cards["requests"] == f"{EVENTS:,}"
        assert cards["idle_share"] == f"{totals['idle_share'] * 100:.1f}%"

        for table, report in (("by-model", by_model), ("by-tenant", by_tenant)):
            groups = _per_group(report["rows"])
            assert len([g for g in groups if g != "(idle)"]) >= 2, groups.keys()
            rendered = driver.find_elements(By.CSS_SELECTOR, f"#{table} tr[data-group]")
            assert {r.get_attribute("data-group") for r in rendered} == set(groups)
            for group, sums in groups.items():
                cells = _cells(driver, table, group)
                assert cells["cost_usd"] == _usd(sums["cost_usd"]), (table, group)
                assert cells["cost_per_1m_tokens"] == _per1m(sums["cost_per_1m_tokens"])
                assert cells["tokens"] == f"{int(sums['tokens']):,}"
                assert cells["requests"] == f"{int(sums['requests']):,}"

        # The chart: one series per model (and idle), drawn on a canvas.
        legend = driver.find_elements(By.CSS_SELECTOR, "#chart .u-legend .u-series")
        assert len(legend) == 1 + len(_per_group(by_model["rows"]))
        assert driver.find_element(By.CSS_SELECTOR, "#chart canvas").size["height"] > 100

        info = _api(processor, "/gpu/info")
        fleet = driver.find_elements(By.CSS_SELECTOR, "#fleet tr[data-gpu]")
        assert sorted(r.get_attribute("data-gpu") or "" for r in fleet) == sorted(
            r["gpu_key"] for r in info["stream"]
        )
        assert info["stream"]
        for reading in info["stream"]:
            row = driver.find_element(
                By.CSS_SELECTOR, f'#fleet tr[data-gpu="{reading["gpu_key"]}"]'
            )
            price = row.find_element(By.CSS_SELECTOR, 'td[data-field="price_per_hour_usd"]')
            assert price.text.startswith(_usd(reading["price_per_hour_usd"]) + " / h")

        openapi = httpx.get(f"{processor.url}/openapi.json", timeout=10).json()
        anomalies = driver.find_element(By.ID, "anomalies").text
        if "/api/v1/anomalies" in openapi["paths"]:
            listed = _api(processor, "/api/v1/anomalies", start=start, end=end)
            assert ("no anomalies" in anomalies) == (listed["count"] == 0), anomalies
            if listed["count"]:
                assert f"{listed['count']} flagged reading(s)" in anomalies
                shown_events = driver.find_elements(By.CSS_SELECTOR, "#anomalies tr[data-event]")
                assert len(shown_events) == min(50, len(listed["anomalies"]))
            per_gpu: dict[str, int] = defaultdict(int)
            for flagged in listed["anomalies"]:
                per_gpu[f"{flagged['host']}/{flagged['gpu_uuid']}"] += 1
            for reading in info["stream"]:
                count = driver.find_element(
                    By.CSS_SELECTOR,
                    f'#fleet tr[data-gpu="{reading["gpu_key"]}"] td[data-field="anomalies"]',
                )
                assert count.text == str(per_gpu[reading["gpu_key"]])
        else:
            assert "anomaly flags not available" in anomalies

        status = _api(processor, "/health")["status"]
        assert driver.find_element(By.ID, "health-status").text == status == "ok"

        assert _foreign_resources(driver, processor.url) == []
        assert severe_console_entries(driver) == []
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        # The whole page, not the first screenful: a viewport as tall as the document.
        height = driver.execute_script(
            "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom) + 24"
        )
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        assert driver.save_screenshot(str(SCREENSHOT))
        # A sliding window from the picker's link: the token is still in this tab's session.
        driver.get(f"{processor.url}/?window=1h")
        _wait_state(driver, "ready")
        shown = driver.find_element(By.ID, "window-shown")
        assert shown.get_attribute("data-granularity") == "minute"
        requests = driver.find_element(By.CSS_SELECTOR, '#summary [data-field="requests"]')
        assert requests.text == f"{EVENTS:,}"  # all were produced within the hour
        assert severe_console_entries(driver) == []
    with capsys.disabled():
        print(f"\npage screenshot: {SCREENSHOT}")


@pytest.mark.parametrize(
    ("path", "rendered"),
    [("/docs", "#swagger-ui .opblock"), ("/redoc", ".api-content h1")],
)
def test_api_docs_render_offline(
    pipeline: tuple[ProcessorProcess, datetime], path: str, rendered: str
) -> None:
    processor, _ = pipeline
    with chromium() as driver:
        driver.get(f"{processor.url}{path}")
        WebDriverWait(driver, _RENDER_TIMEOUT_S).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, rendered), f"{path}: no {rendered}"
        )
        assert _foreign_resources(driver, processor.url) == []
        assert severe_console_entries(driver) == []
