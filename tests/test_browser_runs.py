"""Real-browser checks of a training run's life: start it, reload the tab, see it from a second browser, stop it,
open the model just trained; and a run interrupted by a server restart is offered for Resume."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest

from tests.test_browser import ARGS, CHROMIUM, PAGE_TIMEOUT, settle, shots_dir, streamlit_server, sync_api

pytestmark = pytest.mark.browser


@contextmanager
def chromium() -> Iterator:
    """Headless Chromium, closed at the end."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_train(browser, url: str):
    """A fresh browser context on the Train page, settled."""
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.goto(f"{url}/train")
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=PAGE_TIMEOUT)
    settle(page)
    return page


LIVE = re.compile(r"· batch \d+/\d+")  # the live status line of a run in progress


def wait_for_text(page, text: str | re.Pattern, timeout: float = 120.0) -> None:
    """Wait until `text` shows on the page (the live panel refreshes every 1.5 s)."""
    page.get_by_text(text).first.wait_for(timeout=timeout * 1000)


def start_digits_run(page, epochs: int) -> None:
    """Fill the form for a small digits M2 and press Start."""
    page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="Digits · 8×8, offline").click()
    settle(page)
    page.locator('[data-testid="stMain"] button', has_text=re.compile(r"^M2$")).first.click()
    settle(page)
    for label, value in (("Epochs", str(epochs)),):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        settle(page)
    page.get_by_text("Advanced").click()
    for label, value in (("Hidden layer sizes", "32"), ("Batch size", "300")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        settle(page)
    page.get_by_role("button", name="Start training").click()


def test_a_run_survives_reloads_is_seen_from_every_browser_and_opens_when_done(tmp_path):
    with streamlit_server(tmp_path) as url, chromium() as browser:
        page = open_train(browser, url)
        start_digits_run(page, 3000)
        wait_for_text(page, LIVE)  # the live status line
        page.reload()
        page.wait_for_selector('[data-testid="stMain"] h1', timeout=PAGE_TIMEOUT)
        wait_for_text(page, LIVE)  # still visible after a reload...
        other = open_train(browser, url)
        wait_for_text(other, LIVE)  # ...and from another browser
        wait_for_text(other, "Epochs done")
        wait_for_text(other, re.compile(r"· (about [\d.]+ (min|h)|under a minute) left"))  # the time still to go
        settle(other)
        other.screenshot(path=str(shots_dir(tmp_path) / "train-live-second-browser.png"), full_page=True)
        assert other.get_by_role("button", name="Stop").count() == 1
        assert page.get_by_role("button", name="Start training").is_disabled()  # the machine's one run
        page.get_by_role("button", name="Stop").click()
        wait_for_text(page, "Saved the best epoch")
        wait_for_text(other, "Saved the best epoch")
        explore = page.get_by_role("button", name="Explore its styles")
        sync_api.expect(explore).to_have_count(1, timeout=PAGE_TIMEOUT)  # the finished run's panel, drawn once
        explore.click()
        # the Style page adds its view to the URL's query as it loads: wait for the path alone
        page.wait_for_url(lambda url: urlparse(url).path.endswith("/style"), timeout=PAGE_TIMEOUT)
        settle(page)
        box = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first
        picked = box.inner_text() + " ".join(i.input_value() for i in box.locator("input").all()) \
            + (box.locator("[title]").first.get_attribute("title") if box.locator("[title]").count() else "")
        page.screenshot(path=str(shots_dir(tmp_path) / "style-after-explore.png"))
        saved = [d.name for d in tmp_path.iterdir() if (d / "model.pt").is_file()]
        assert len(saved) == 1 and saved[0] in picked, (saved, picked)


def test_a_run_interrupted_by_a_server_restart_resumes_with_a_click(tmp_path):
    with streamlit_server(tmp_path, crash=True) as url, chromium() as browser:
        page = open_train(browser, url)
        start_digits_run(page, 3000)
        wait_for_text(page, "Epochs done")
        end = time.time() + 120
        while not any((d / "resume.pt").is_file() for d in tmp_path.iterdir()) and time.time() < end:
            time.sleep(0.2)  # an epoch is on disk
    # the server was killed mid-run (the context manager's exit); a new one offers the run again
    run = next(d for d in tmp_path.iterdir() if (d / "resume.pt").is_file())
    with streamlit_server(tmp_path, crash=True) as url, chromium() as browser:
        page = open_train(browser, url)
        wait_for_text(page, "Runs that can go on")
        assert page.get_by_text(run.name).count() >= 1
        settle(page)
        page.screenshot(path=str(shots_dir(tmp_path) / "train-resume-after-restart.png"), full_page=True)
        page.get_by_role("button", name="Resume").click()
        wait_for_text(page, "(resumed)")
        page.get_by_role("button", name="Stop").click()
        wait_for_text(page, "Saved the best epoch")
