"""The landing page and the sending-details view in headless Chromium (Debian's chromium).

One manual-clock simulator and one exporter web server per module, so every page shows
the same fixed data; the records the view shows are compared with a direct signed query
to the simulator with the same filters. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import START, Simulator, account_for, config_for, require_binary
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.client import DetailsClient
from exporter.details_page import record_cells
from exporter.records import DetailsQuery, SendRecord, SendResult
from exporter.templates import SmsTemplate
from exporter.timestamps import parse_rfc3339

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
NOW = parse_rfc3339(START)
LOGIN = "8ff55eac1d0b478ab3c06c3c6a492300"  # "Login verification code": many records
SENDER_CHECK = "9a4c6e8f0b1d3f5a7c9e1b3d5f7a9c37"  # "International sender check": failures
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1200",
)


@dataclass
class Site:
    url: str
    simulator: Simulator
    client: DetailsClient
    templates: list[SmsTemplate]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    args = ("--clock", "manual", "--start-time", START, "--history", "2h", "--scale", "0.05")
    with simulator_process(*args) as url, httpx.Client(timeout=30) as http:
        sim = Simulator(url, http)
        with Exporter(config_for(url), clock=sim.now) as exporter:
            assert exporter.poll_once()
            host, port = exporter.start("127.0.0.1", 0)
            direct = DetailsClient(account_for(url), http)
            yield Site(f"http://{host}:{port}", sim, direct, direct.list_templates())


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = require_binary("chromium")
    chromedriver = require_binary("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        try:
            driver.set_page_load_timeout(30)
            yield driver
        finally:
            driver.quit()


def _by(kind: str) -> str:
    from selenium.webdriver.common.by import By

    return str(getattr(By, kind))


def _rows(driver) -> list[tuple[str, ...]]:
    rows = driver.find_elements(_by("CSS_SELECTOR"), "#records tbody tr")
    return [tuple(td.text for td in row.find_elements(_by("TAG_NAME"), "td")) for row in rows]


def _direct(
    site: Site, template: str, result: SendResult, page: int
) -> tuple[int, list[SendRecord]]:
    query = DetailsQuery(
        start_time=NOW - 3600,
        end_time=NOW,
        template_id=template,
        send_result=result,
        offset=(page - 1) * 10,
        limit=10,
    )
    answer = site.client.query(query)
    return answer.total, answer.records


def _expected(site: Site, records: list[SendRecord]) -> list[tuple[str, ...]]:
    names = {t.template_id: t.template_name for t in site.templates}
    return [record_cells(r, names) for r in records]


def _click_and_load(driver, element_id: str) -> None:
    """Click a control that loads a new page, and wait until the new page is there.

    The old page is marked with a window property that a new document does not
    have; polling for it avoids holding element references across the
    navigation (chromedriver may answer those with a generic inspector error
    instead of a stale-element one).
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__msgsmsOldPage = true;")
    driver.find_element(_by("ID"), element_id).click()
    # A script run while the document is being replaced may fail; poll again.
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return window.__msgsmsOldPage === undefined && document.readyState === 'complete'"
        )
    )


def _select(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(_by("ID"), element_id)).select_by_value(value)


def test_landing_page_shows_the_simulators_templates(site: Site, browser):
    browser.get(f"{site.url}/")
    rows = browser.find_elements(_by("CSS_SELECTOR"), "table.templates tr[data-template]")
    shown = {row.get_attribute("data-template"): row.text for row in rows}
    assert set(shown) == {t.template_id for t in site.templates}
    for template in site.templates:
        assert template.template_name in shown[template.template_id]
    assert (
        browser.find_element(_by("LINK_TEXT"), "Sending details")
        .get_attribute("href")
        .endswith("/details")
    )
    browser.save_screenshot(str(SCREENSHOTS / "landing.png"))


def test_details_filters_by_template_and_result(site: Site, browser):
    browser.get(f"{site.url}/details")
    _select(browser, "template", SENDER_CHECK)
    _select(browser, "result", "failed")
    _select(browser, "last", "1h")
    _click_and_load(browser, "search")
    total, records = _direct(site, SENDER_CHECK, SendResult.FAILED, 1)
    assert total > 0
    assert _rows(browser) == _expected(site, records)
    assert browser.find_element(_by("ID"), "summary").text.startswith(f"{total} record")
    assert {row[3] for row in _rows(browser)} == {"Failed"}
    browser.save_screenshot(str(SCREENSHOTS / "details-failed.png"))


def test_details_pages_forward_and_back(site: Site, browser):
    browser.get(f"{site.url}/details?template={LOGIN}&result=success&last=1h")
    total, first = _direct(site, LOGIN, SendResult.SUCCESS, 1)
    assert total > 30
    assert _rows(browser) == _expected(site, first)
    _click_and_load(browser, "next")
    assert browser.find_element(_by("ID"), "page").text.startswith("Page 2 of ")
    assert _rows(browser) == _expected(site, _direct(site, LOGIN, SendResult.SUCCESS, 2)[1])
    _click_and_load(browser, "next")
    assert _rows(browser) == _expected(site, _direct(site, LOGIN, SendResult.SUCCESS, 3)[1])
    browser.save_screenshot(str(SCREENSHOTS / "details-page-3.png"))
    _click_and_load(browser, "prev")
    assert browser.find_element(_by("ID"), "page").text.startswith("Page 2 of ")
    assert _rows(browser) == _expected(site, _direct(site, LOGIN, SendResult.SUCCESS, 2)[1])
    _click_and_load(browser, "prev")
    assert _rows(browser) == _expected(site, first)
    assert browser.find_elements(_by("ID"), "prev") == []


def test_details_shows_the_error_for_a_25_hour_range(site: Site, browser):
    browser.get(f"{site.url}/details")
    _select(browser, "last", "")
    browser.execute_script(
        "document.getElementById('start').value = '2026-11-25T09:00:00';"
        "document.getElementById('end').value = '2026-11-26T10:00:00';"
    )
    _click_and_load(browser, "search")
    error = browser.find_element(_by("ID"), "error")
    assert error.text == "Sending time: the range spans 25 h; a query may span at most 24 h."
    assert browser.find_elements(_by("ID"), "records") == []
    browser.save_screenshot(str(SCREENSHOTS / "details-25h-error.png"))
    status = httpx.get(
        f"{site.url}/details",
        params={"start": "2026-11-25T09:00:00", "end": "2026-11-26T10:00:00"},
        timeout=10,
    ).status_code
    assert status == 400


def test_a_status_code_link_of_the_landing_page_shows_only_that_codes_records(site: Site, browser):
    browser.get(f"{site.url}/")
    link = browser.find_element(_by("CSS_SELECTOR"), "table.templates td a[title]")
    code = link.text
    browser.get(link.get_attribute("href"))
    rows = _rows(browser)
    assert rows, "the template's top failing code has records"
    assert {row[4] for row in rows} == {code}
    assert f" with status code {code} sent " in browser.find_element(_by("ID"), "summary").text
    browser.save_screenshot(str(SCREENSHOTS / "details-status-code.png"))


def test_details_times_are_iso_24_hour_on_one_line_with_styled_controls(site: Site, browser):
    browser.get(f"{site.url}/details?template={LOGIN}&result=success&last=1h")
    for field in ("start", "end"):
        value = browser.find_element(_by("ID"), field).get_attribute("value")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", value), value
    # Line boxes of the send-time and receive-time cells' text: one each, no wrapping.
    lines = browser.execute_script(
        "return [...document.querySelectorAll("
        "'#records tbody td:nth-child(1), #records tbody td:nth-child(7)')].map(td => {"
        "const range = document.createRange(); range.selectNodeContents(td);"
        "return range.getClientRects().length;});"
    )
    assert lines and set(lines) == {1}
    styles = browser.execute_script(
        "const s = id => getComputedStyle(document.getElementById(id));"
        "return [s('search').backgroundColor, s('start').borderTopStyle, s('result').borderRadius];"
    )
    assert styles == ["rgb(31, 95, 191)", "solid", "4px"]
    browser.save_screenshot(str(SCREENSHOTS / "details-form.png"))
