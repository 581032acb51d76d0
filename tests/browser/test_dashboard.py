"""The operator's day on the dashboard (issue 19), in Chromium, against a real daemon serving it:
log in, see a failed record, fix its data at the source, retry it from the page and see it
delivered; re-export an order the ERP lost; pause a sync and see the daemon honour it, resume.

The pages only queue requests and write controls: every change the tests see at the ERP and in the
run history is the daemon's work (tests/browser/world.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests import helpers as h
from tests.browser.world import Dashboard, wait

if TYPE_CHECKING:
    from playwright.sync_api import Page


def _flash(page: Page) -> str:
    """The flash message the action's redirect (post/redirect/get) brought: not an error."""
    from playwright.sync_api import expect

    flash = page.locator("#flash")
    expect(flash).to_be_visible()
    assert "error" not in (flash.get_attribute("class") or ""), flash.inner_text()
    return flash.inner_text().lower()


def test_a_refused_record_fixed_at_the_source_is_retried_from_the_errors_page(
    operator_page: Page, dashboard: Dashboard
) -> None:
    from playwright.sync_api import expect

    page, world = operator_page, dashboard
    page.goto("/errors")
    row = page.locator('[data-sync="orders"][data-key="2"]')
    expect(row).to_have_count(1)
    expect(row).to_contain_text("zip_has_five")  # the ERP's message, by the CHECK's name
    expect(page.locator('[data-sync="orders"][data-key="1"]')).to_have_count(0)  # delivered

    world.edit(2, zip="54321")  # a worker fixes the order at the portal
    row.locator("input[type=checkbox]").check()
    page.locator('[data-action="retry"]').first.click()
    flash = _flash(page)
    assert "retry" in flash and "queued" in flash

    wait(lambda: world.state_of(2)[:3] == (1, "success", None), what=f"order 2 delivered\n{world.tail()}")
    doc_no, zip_code = world.erp_order(2) or (None, None)
    assert zip_code == "54321" and world.erp_lines(2) == 2
    assert world.state_of(2)[3] == doc_no  # the ERP's number, read back into the portal
    assert world.requests()[-1][1:] == ("orders", "retry", "done")
    page.goto("/errors")
    expect(page.locator('[data-sync="orders"][data-key="2"]')).to_have_count(0)


def test_an_order_the_erp_lost_is_re_exported_from_the_orders_page(
    operator_page: Page, dashboard: Dashboard
) -> None:
    from playwright.sync_api import expect

    page, world = operator_page, dashboard
    first = world.erp_order(3)
    assert first is not None and world.state_of(3)[:2] == (1, "success")
    h.execute(world.erp, "DELETE FROM sales_order WHERE portal_ref = 3")  # the ERP lost it
    h.execute(world.erp, "DELETE FROM sales_order_lines WHERE portal_ref = 3")
    writes = world.erp_writes()

    page.goto("/orders")
    row = page.locator('[data-sync="orders"][data-key="3"]')
    expect(row).to_have_count(1)
    row.locator('[data-action="reexport"]').click()
    flash = _flash(page)
    assert "export" in flash and "queued" in flash

    wait(lambda: world.erp_order(3) is not None, what=f"order 3 re-exported\n{world.tail()}")
    again = world.erp_order(3)
    assert again is not None and again[0] != first[0]  # the ERP numbered it anew
    assert world.erp_lines(3) == 2 and world.erp_writes() == writes + 1
    wait(lambda: world.state_of(3) == (1, "success", None, again[0]), what="the new number written back")
    assert world.requests()[-1][1:] == ("orders", "reexport", "done")
    assert world.erp_order(1) is not None and world.erp_writes() == writes + 1  # nothing else sent


def test_a_sync_paused_on_the_overview_is_skipped_by_the_daemon_until_resumed(
    operator_page: Page, dashboard: Dashboard
) -> None:
    from playwright.sync_api import expect

    page, world = operator_page, dashboard
    wait(lambda: any(r[3] == "success" for r in world.runs("ping")), what="ping runs every second")
    page.goto("/")
    row = page.locator("#sync-ping")
    expect(row).to_have_attribute("data-sync", "ping")
    before = world.last_run_id()
    row.locator('[data-action="pause"]').click()
    assert "ping paused" in _flash(page)

    def skipped() -> list[int]:
        return [r[0] for r in world.runs("ping", before) if r[3] == "skipped" and "pause" in (r[4] or "")]

    wait(lambda: len(skipped()) >= 3, what=f"three slots of ping skipped as paused\n{world.tail()}")
    held = world.runs("ping", skipped()[0])
    assert held and all(r[3] == "skipped" for r in held), held  # no run while paused

    page.goto("/")
    row = page.locator("#sync-ping")
    expect(row).to_contain_text("paused")
    expect(row.locator('[data-action="pause"]')).to_have_count(0)
    last = world.last_run_id()
    row.locator('[data-action="resume"]').click()
    assert "ping resumed" in _flash(page)
    wait(
        lambda: any(r[3] == "success" for r in world.runs("ping", last)),
        what=f"ping runs again after resume\n{world.tail()}",
    )

    page.goto("/audit")
    audit = page.locator("body")
    expect(audit).to_contain_text("pause")
    expect(audit).to_contain_text("resume")
    expect(audit).to_contain_text("op")
