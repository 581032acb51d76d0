"""The browser tier: Debian's Chromium (`/usr/bin/chromium`) driven by Python Playwright, against
the dashboard of a real `mapsync daemon SHEET --serve` process (tests/browser/world.py).

Playwright never downloads a browser here: it launches the distribution's Chromium
(`executable_path`), headless. Without Chromium or the playwright package the tests skip with the
reason, unless MAPSYNC_REQUIRE_SERVICES names `chromium` (.ci/run installs it and does): then they
fail. One browser per module; a fresh context (cookies) per test.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.world import CHROMIUM, Dashboard, launch

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REQUIRED = {s.strip() for s in os.environ.get("MAPSYNC_REQUIRE_SERVICES", "").split(",") if s.strip()}


def _need_chromium() -> None:
    reason = None
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        reason = "the playwright package is not installed (pip install -e '.[dev]')"
    if reason:
        if "chromium" in REQUIRED:
            pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser per module. Not per session: Playwright's sync API keeps an asyncio loop
    running in this thread while it is open, and every later test on the same xdist worker that
    calls `asyncio.run` (webhooks, the guard, the budget) would fail."""
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The world with the daemon serving it: orders 1 and 3 delivered, orders 2 and 4 refused by
    the ERP (zip codes of 4 and 2 characters: open record errors); `ping` runs every second."""
    _need_chromium()
    world = Dashboard(tmp_path_factory.mktemp("dashboard"))
    world.seed()
    for no, zip_code in ((1, "12345"), (2, "1234"), (3, "12345"), (4, "99")):
        world.order(no, zip=zip_code)
    ran = world.cli("run", "sheet.yaml", "--sync", "orders")
    assert ran.returncode in (0, 1), ran.stdout + ran.stderr  # 1: order 2 refused
    assert [world.erp_order(no) is not None for no in (1, 2, 3, 4)] == [True, False, True, False]
    with world.daemon():
        yield world


def login(browser: Browser, world: Dashboard, user: str = "op") -> Page:
    """A new context (no cookies) logged in as `user` through the login form."""
    context = browser.new_context(base_url=world.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/login")
    form = page.locator("#login")
    form.locator("input[name=user]").fill(user)
    form.locator("input[name=password]").fill(world.passwords[user])
    form.locator("[type=submit]").click()
    page.wait_for_url(lambda url: "/login" not in url)
    return page


@pytest.fixture
def operator_page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    page = login(browser, dashboard, "op")
    page.on("dialog", lambda dialog: dialog.accept())  # "Export this order again?": yes
    try:
        yield page
    finally:
        page.context.close()
