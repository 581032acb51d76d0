"""The operator's day on the dashboard (issue 19), in Chromium, against a real daemon serving it:
log in, see a failed record, fix its data at the source, retry it from the page and see it
delivered; re-export a refused order once fixed; pause a sync and see the daemon honour it, resume.

The pages only queue requests and write controls: every change the tests see at the ERP and in the
run history is the daemon's work (tests/browser/world.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.browser.world import Dashboard, wait

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page


def _flash(page: Page) -> str:
    """The flash message the action's redirect (post/redirect/get) brought: not an error."""
    from playwright.sync_api import expect

    flash = page.locator("#flash")
    expect(flash).to_be_visible()
    assert "error" not in (flash.get_attribute("class") or ""), flash.inner_text()
    return flash.inner_text().lower()


def _row(page: Page, sync: str, no: int) -> Locator:
    """The table row of a record: `data-sync` and `data-key` (the key's text)."""
    return page.locator(f'tr[data-sync="{sync}"][data-key="{no}"]')


def test_a_refused_record_fixed_at_the_source_is_retried_from_the_errors_page(
    operator_page: Page, dashboard: Dashboard
) -> None:
    from playwright.sync_api import expect

    page, world = operator_page, dashboard
    page.goto("/errors")
    row = _row(page, "orders", 2)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("zip_has_five")  # the ERP's message, by the CHECK's name
    expect(_row(page, "orders", 1)).to_have_count(0)  # delivered

    world.edit(2, zip="54321")  # a worker fixes the order at the portal
    row.locator("input[type=checkbox]").check()
    page.locator('[data-action="retry"]').first.click()
    flash = _flash(page)
    assert "retry" in flash and "queued" in flash

    wait(lambda: world.state_of(2)[:3] == (1, "success", None), what=f"order 2 delivered\n{world.tail()}")
    doc_no, zip_code = world.erp_order(2) or (None, None)
    assert zip_code == "54321" and world.erp_lines(2) == 2
    assert world.state_of(2)[3] == doc_no  # the ERP's number, read back into the portal
    wait(
        lambda: world.requests()[-1][1:] == ("orders", "retry", "done"), what=f"request done\n{world.tail()}"
    )
    page.goto("/errors")
    expect(_row(page, "orders", 2)).to_have_count(0)


def test_a_refused_order_fixed_at_the_portal_is_re_exported_from_the_orders_page(
    operator_page: Page, dashboard: Dashboard
) -> None:
    from playwright.sync_api import expect

    page, world = operator_page, dashboard
    page.goto("/orders")
    row = page.locator("tr.failed").and_(_row(page, "orders", 4))
    expect(row).to_have_count(1)
    expect(row).to_contain_text("zip_has_five")  # the ERP's message
    writes = world.erp_writes()

    world.edit(4, zip="67890")  # fixed at the portal
    row.locator('[data-action="reexport"]').click()
    flash = _flash(page)
    assert "export" in flash and "queued" in flash

    wait(lambda: world.state_of(4)[:3] == (1, "success", None), what=f"order 4 exported\n{world.tail()}")
    doc_no, zip_code = world.erp_order(4) or (None, None)
    assert zip_code == "67890" and world.erp_lines(4) == 2 and world.state_of(4)[3] == doc_no
    assert world.erp_writes() == writes + 1  # that order, once: nothing else sent again
    # the request is marked done just after the run that exported the order
    wait(
        lambda: world.requests()[-1][1:] == ("orders", "reexport", "done"),
        what=f"request done\n{world.tail()}",
    )
    page.goto("/orders")
    expect(page.locator("tr.failed").and_(_row(page, "orders", 4))).to_have_count(0)


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
