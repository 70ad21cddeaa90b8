"""The viewer in a real headless Chromium (Debian's package, driven by Playwright; no browser
is downloaded): live counts, navigation, the status filter, markup shown as text, the token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import XSS, Viewer, make_job

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = os.environ.get("STARFISH_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # a bound on waiting for a condition, not a delay: checks pass as soon as true


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run installs it); "
            "these tests never download a browser"
        )
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


GATED_JOB = """
import asyncio, pathlib, sys
from starfish import data_factory

gate = pathlib.Path(sys.argv[1])


@data_factory(max_concurrency=4, show_progress=False)
async def watched(i: int):
    while True:  # input i completes once the test lets more than i through
        try:
            allowed = int(gate.read_text() or 0)
        except (FileNotFoundError, ValueError):
            allowed = 0
        if i < allowed:
            return [{"i": i}]
        await asyncio.sleep(0.02)


watched.run(i=list(range(40)))
"""


def test_jobs_page_shows_a_running_jobs_count_growing(
    page: Any, start_ui: Callable[..., Viewer], tmp_path: Path
) -> None:
    script, gate = tmp_path / "job.py", tmp_path / "gate"
    script.write_text(GATED_JOB)
    gate.write_text("0")
    viewer = start_ui()
    job = subprocess.Popen([sys.executable, str(script), str(gate)], stderr=subprocess.PIPE)
    try:
        page.goto(viewer.url)
        row = page.locator("tr.job").first
        expect(row.get_by_test_id("status")).to_have_text("running", timeout=WAIT_MS)
        expect(row.get_by_test_id("completed")).to_have_text("0", timeout=WAIT_MS)
        for allowed in (3, 10):
            gate.write_text(str(allowed))
            expect(row.get_by_test_id("completed")).to_have_text(str(allowed), timeout=WAIT_MS)
        gate.write_text("40")
        assert job.wait(timeout=60) == 0
        expect(row.get_by_test_id("status")).to_have_text("completed", timeout=WAIT_MS)
        expect(row.get_by_test_id("completed")).to_have_text("40", timeout=WAIT_MS)
    finally:
        gate.write_text("40")
        if job.poll() is None:
            job.kill()
        job.wait()


def test_a_click_opens_the_job_and_the_status_filter_shows_its_dead_inputs(
    page: Any, start_ui: Callable[..., Viewer], tmp_path: Path
) -> None:
    job_id = make_job(60, die_every=7)  # inputs 6, 13, 20, ... die
    viewer = start_ui()
    page.goto(viewer.url)
    page.locator(f"tr.job[data-job='{job_id}']").click()
    expect(page.locator("h1")).to_contain_text(job_id, timeout=WAIT_MS)
    assert page.url.endswith(f"#/job/{job_id}")
    expect(page.get_by_test_id("count-dead").locator("b")).to_have_text("8")
    expect(page.locator("#dead")).to_contain_text("TimeoutError")
    page.select_option("#status-filter", "dead")
    first_cells = page.locator("#records-table tbody tr td:first-child")
    expect(first_cells).to_have_text([str(i) for i in range(6, 60, 7)], timeout=WAIT_MS)
    page.locator("#records-table tbody tr").first.click()
    expect(page.locator("#record-json")).to_contain_text("input 6 timed out", timeout=WAIT_MS)
    _screenshots(page, "ui-job.png")
    page.goto(viewer.url)
    expect(page.locator("tr.job")).to_have_count(1, timeout=WAIT_MS)
    _screenshots(page, "ui-jobs.png")


def test_a_record_holding_markup_renders_as_text(
    page: Any, start_ui: Callable[..., Viewer]
) -> None:
    job_id = make_job(10, xss_at=4)
    viewer = start_ui()
    page.goto(f"{viewer.url}#/job/{job_id}")
    page.fill("#search", "onerror")
    row = page.locator("#records-table tbody tr")
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row.locator("td.preview")).to_contain_text(XSS.replace('"', '\\"'))
    row.click()
    expect(page.locator("#record-json")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None  # neither the script nor the onerror ran
    assert page.locator("main img, main script").count() == 0


def test_a_request_without_the_token_is_refused_when_the_host_is_not_loopback(
    page: Any, start_ui: Callable[..., Viewer]
) -> None:
    make_job(5)
    token = "correct-horse-battery"
    viewer = start_ui("--host", "0.0.0.0", "--token", token, token=token)
    refused = page.goto(viewer.url)
    assert refused is not None and refused.status == 401
    expect(page.locator("body")).to_contain_text("--token")
    wrong = page.goto(viewer.url + "?token=not-the-token")
    assert wrong is not None and wrong.status == 401
    page.goto(viewer.url + f"?token={token}")
    expect(page.locator("tr.job")).to_have_count(1, timeout=WAIT_MS)
    page.goto(viewer.url)  # the cookie set by the first visit carries it from then on
    expect(page.locator("tr.job")).to_have_count(1, timeout=WAIT_MS)


def _screenshots(page: Any, name: str) -> None:
    """Kept for docs/ when STARFISH_SCREENSHOTS names a folder (see docs/ui.md)."""
    folder = os.environ.get("STARFISH_SCREENSHOTS")
    if folder:
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(Path(folder) / name), full_page=False)
