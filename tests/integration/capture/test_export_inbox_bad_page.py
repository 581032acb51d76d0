"""An export from an API (issue 17) whose destructive GET returns a page holding a record without
its key: the raw page stays in the inbox as `error` (nothing lost, the run says how its orders
come back), and the next run goes on with the next page instead of failing on it for good."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mapsync import errors
from mapsync.capture.base import Context
from mapsync.capture.export_inbox import InboxExportCapture
from mapsync.rest.connector import RestConnector, open_handle
from mapsync.rest.destructive_source import DestructiveSource
from mapsync.sheet import loader, models
from mapsync.sheet.connection_models import RestConnection
from mapsync.state.store import StateStore

SHEET = """\
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  api: {kind: rest, base_url: "http://shop.invalid/v1", paging: {style: none, size: 50}}
syncs:
  web_orders:
    from: {connection: api, resource: exports, destructive: true}
    to: {connection: erp, table: sales_orders}
    key: {from: order_no, to: order_no}
    fields: {customer: customer}
    changes: {method: export_flag, flag: exported}
"""


def test_a_page_with_a_keyless_record_is_kept_as_error_and_the_export_goes_on(tmp_path: Path) -> None:
    pages = [
        [{"order_no": "W1", "customer": "C1"}, {"customer": "C2"}],
        [{"order_no": "W3", "customer": "C3"}],
    ]
    gets: list[str] = []

    def api(req: httpx.Request) -> httpx.Response:
        gets.append(req.url.path)
        return httpx.Response(200, text=json.dumps(pages.pop(0) if pages else []))

    (tmp_path / "sheet.yaml").write_text(SHEET)
    loaded = loader.load(tmp_path / "sheet.yaml", env={})
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    try:
        cfg = loaded.sheet.connections["api"]
        assert isinstance(cfg, RestConnection)
        handle = open_handle("api", cfg, store, transport=httpx.MockTransport(api))
        sync = loaded.sheet.syncs["web_orders"]
        source = RestConnector().source(handle, "web_orders", sync, None)
        assert isinstance(source, DestructiveSource) and isinstance(sync.changes, models.ExportFlagChanges)
        ctx = Context("web_orders", sync, store, lambda name: handle)
        capture = InboxExportCapture(source, sync.changes, 100, ctx)

        with pytest.raises(errors.TransientError, match="a record has no key field") as caught:
            list(capture.read("run", {}))
        assert "mapsync sweep SHEET --sync web_orders" in str(caught.value)
        # the raw page, kept; the `lost:` item written before the GET was closed when it was
        # stored, and a new one asks for a sweep (the page's orders are marked exported)
        assert store.inbox.counts("web_orders") == {"error": 1, "processed": 1, "new": 1}

        batches = list(capture.read("run", {}))  # the next run: not stuck on that page
        assert [c.key for b in batches for c in b.changes] == [("W3",)]
        assert len(gets) == 2  # the bad page, then the next (short) one
    finally:
        store.close()


def _capture(tmp_path: Path, api: object, size: int = 50) -> tuple[InboxExportCapture, StateStore]:
    (tmp_path / "sheet.yaml").write_text(SHEET.replace("size: 50", f"size: {size}"))
    loaded = loader.load(tmp_path / "sheet.yaml", env={})
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    cfg = loaded.sheet.connections["api"]
    assert isinstance(cfg, RestConnection)
    handle = open_handle("api", cfg, store, transport=httpx.MockTransport(api))  # type: ignore[arg-type]
    sync = loaded.sheet.syncs["web_orders"]
    source = RestConnector().source(handle, "web_orders", sync, None)
    assert isinstance(source, DestructiveSource) and isinstance(sync.changes, models.ExportFlagChanges)
    return InboxExportCapture(
        source, sync.changes, 100, Context("web_orders", sync, store, lambda n: handle)
    ), store


def test_a_get_that_does_not_mark_what_it_returns_stops_at_the_second_page(tmp_path: Path) -> None:
    """A full page returned twice (a resource that is no order export): the run stops instead of
    asking 200 times for the same records."""
    gets: list[str] = []

    def api(req: httpx.Request) -> httpx.Response:
        gets.append(req.url.path)
        return httpx.Response(200, text=json.dumps([{"order_no": "W1"}, {"order_no": "W2"}]))

    capture, store = _capture(tmp_path, api, size=2)
    try:
        with pytest.raises(errors.TransientError, match="returned the same 2 records twice"):
            list(capture.read("run", {}))
        assert len(gets) == 2
    finally:
        store.close()


def test_an_unreadable_page_leaves_a_lost_item_open_so_a_sweep_is_due(tmp_path: Path) -> None:
    def api(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>maintenance</html>")

    capture, store = _capture(tmp_path, api)
    try:
        with pytest.raises(errors.TransientError, match="the answer is not JSON"):
            list(capture.read("run", {}))
        found = store.inbox.latest("web_orders", ["lost:"], status="new")
        assert "lost:" in found  # a sweep is due
    finally:
        store.close()
