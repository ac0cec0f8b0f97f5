"""A real headless Chromium (Debian's package) driven by Playwright, for UI tests.

Playwright's own browser download cannot be used here; it drives the system Chromium.
Screenshots go to ``MLOPS_PACK_TEST_ARTIFACTS`` (default ``.mlops/test-artifacts``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import ROOT

ARTIFACTS = Path(os.environ.get("MLOPS_PACK_TEST_ARTIFACTS") or ROOT / ".mlops" / "test-artifacts")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "the browser test needs Chromium: apt-get install chromium (make test does in CI)"
    return found


@contextmanager
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), headless=True)
        try:
            yield launched
        finally:
            launched.close()


def login(browser, base: str, user: str, password: str):
    """A fresh browser context logged in through Airflow's own login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{base}/", wait_until="networkidle")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url and "login" not in url, timeout=60_000)
    page.wait_for_load_state("networkidle")  # the UI is a single-page app: let it settle
    return context, page


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
