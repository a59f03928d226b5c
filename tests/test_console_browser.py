"""The console and the static reports in a real browser: headless Chromium (Debian's ``chromium``
package) driven by Playwright. A real `predstore ui` process serves a store built by
`tests.console_store`; every link is followed, nothing logs an error to the browser's console, and
what a person sees is there: the model, the version serving, charts with their axes, a held run.

Without Chromium these tests are skipped (``apt-get install chromium``), unless
``PREDSTORE_REQUIRE_BROWSER=1`` (CI sets it) makes that a failure. With ``PREDSTORE_SCREENSHOTS=DIR``
they build the demo's whole two years instead and save the console's screenshots in DIR (the ones in
docs/images were taken so).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from demo.run import MODEL
from monitor.compare import compare_models, render
from monitor.runner import write_report
from store import Settings
from tests.conftest import cloned_database
from tests.helpers import eventually, free_port

SCREENSHOTS = os.environ.get("PREDSTORE_SCREENSHOTS")
#: What Chromium needs to start as root in a container with no network beyond loopback.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    return os.environ.get("PREDSTORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        message = "no Chromium here: `apt-get install chromium` (and `pip install -e '.[dev]'` for Playwright)"
        if os.environ.get("PREDSTORE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def built(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Settings, dict[str, int]]]:
    from tests.console_store import build_store

    with cloned_database(server_url, template_url, prefix="predstore_browser") as url:
        settings = Settings(home=tmp_path_factory.mktemp("browser") / "home", database_url=url, api_require_key=False)
        yield settings, build_store(settings, weeks=None if SCREENSHOTS else 8)


@pytest.fixture(scope="module")
def console(built: tuple[Settings, dict[str, int]]) -> Iterator[str]:
    """The URL of a real `predstore ui` process over the built store."""
    settings = built[0]
    port = free_port()
    env = {**os.environ, "PREDSTORE_DATABASE_URL": settings.database_url or "", "PREDSTORE_HOME": str(settings.home)}
    process = subprocess.Popen([sys.executable, "-m", "predstore", "ui", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        if not eventually(lambda: _answers(base + "/healthz"), attempts=200, pause=0.1):
            process.kill()
            pytest.fail(f"`predstore ui` did not start: {process.communicate(timeout=10)}")
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context, recording whatever it logs as an error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()


def test_every_page_and_every_link_loads_without_an_error(page: Any, console: str) -> None:
    seen: dict[str, int] = {}
    queue = [console + "/"]
    runs = 0  # a dozen run pages stand for all of them (every run page is the same template)
    while queue and len(seen) < 80:
        url = queue.pop(0)
        if url in seen:
            continue
        if re.fullmatch(r"/runs/\d+", urlsplit(url).path):
            runs += 1
            if runs > 12:
                continue
        response = page.goto(url)
        seen[url] = response.status
        assert response.status == 200, url
        assert page.locator("h1").count() == 1, url
        for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))"):
            target = urljoin(url, href).split("#")[0]
            if urlsplit(target).netloc == urlsplit(console).netloc and target not in seen:
                queue.append(target)
    paths = {urlsplit(u).path for u in seen}
    assert {"/", f"/models/{MODEL}", f"/models/{MODEL}/drift", f"/models/{MODEL}/performance", "/runs"} <= paths
    assert any(p.startswith("/runs/") for p in paths)
    assert page.errors == []


def test_a_person_sees_the_model_the_serving_version_and_the_held_run(page: Any, console: str,
                                                                   built: tuple[Settings, dict[str, int]]) -> None:
    page.goto(console + "/")
    row = page.locator("table.models tr", has_text=MODEL)
    assert row.locator("td.serving").inner_text() == "v1"
    assert f"v{built[1]['challenger']}" in row.inner_text()
    _shoot(page, "console-models")
    row.locator('a[href*="status=held"]').click()  # the held runs' count
    held = page.locator("table.runs tr", has_text="held")
    assert held.count() >= 1 and "held by the publish gate" in held.first.inner_text()
    held.first.get_by_role("link").first.click()
    assert page.locator("p.held").is_visible() and "temp" in page.locator("p.held").inner_text()
    _axes(page)
    _shoot(page, "console-run")
    page.get_by_role("link", name="overview").click()
    assert "Serving v1" in " ".join(page.locator("body").inner_text().split())
    _shoot(page, "console-model")
    assert page.errors == []


def test_drift_and_performance_draw_charts_with_axes(page: Any, console: str) -> None:
    page.goto(f"{console}/models/{MODEL}/drift")
    assert page.get_by_role("heading", name="Drift over time").is_visible()
    assert page.locator("svg.chart.trend").count() >= 1
    _axes(page)
    _shoot(page, "console-drift")
    page.goto(f"{console}/models/{MODEL}/performance")
    assert page.locator("svg.chart.performance").is_visible()
    assert page.get_by_role("heading", name="Champion against challenger").is_visible()
    assert page.locator("table.figures").is_visible()
    _axes(page)
    _shoot(page, "console-performance")
    assert page.errors == []


def test_the_filters_work_with_javascript_off(browser: Any, console: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.goto(console + "/runs")
        tab.select_option("select[name=model]", MODEL)
        tab.select_option("select[name=status]", "held")
        tab.get_by_role("button", name="Filter").click()
        assert "status=held" in tab.url and f"model={MODEL}" in tab.url
        statuses = tab.locator("table.runs td.status").all_inner_texts()
        assert statuses and set(statuses) == {"held"}
    finally:
        context.close()


def test_the_static_reports_open_cleanly_with_their_charts(page: Any, built: tuple[Settings, dict[str, int]],
                                                          tmp_path: Path) -> None:
    settings = built[0]
    report = write_report(settings, MODEL, tmp_path / "report.html")
    compared = tmp_path / "compare.html"
    compared.write_text(render(compare_models(settings, MODEL, min_labels=10)), encoding="utf-8")
    for path in (report, compared):
        page.goto(path.as_uri())
        assert page.locator("h1").inner_text().startswith(("Monitoring report: bikes", "bikes: v1"))
        assert page.locator("svg.chart").count() >= 1
        _axes(page)
    assert page.errors == []


def _axes(page: Any) -> None:
    """Every chart on the page is drawn, with both axes labelled and ticks along them."""
    charts = page.locator("svg.chart")
    for i in range(charts.count()):
        chart = charts.nth(i)
        box = chart.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        for axis in ("x", "y"):
            label = chart.locator(f"text.axis-label.{axis}")
            assert label.is_visible() and (label.text_content() or "").strip()
        assert chart.locator("text.tick").count() >= 2


def _shoot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))
