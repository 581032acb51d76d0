"""The dashboard pages (mapsync.web.pages): every page renders for a viewer, the action buttons only
for an operator, forms carry the CSRF token, values are escaped, static files, no inline script.

The read and action functions are faked (`page_fakes` swaps the modules the pages call), so the pages are tested alone; the
last test renders against the real `mapsync.web.readmodel` once it exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mapsync.web import pages
from tests.integration.web.page_fakes import ACTIONS, CSRF, EVIL, PAGES, _client, calls

__all__ = ["calls"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_viewer_without_action_buttons(calls: list[Any], path: str) -> None:
    page = _client("viewer").get(path)
    assert page.status_code == 200, page.text
    assert "<nav>" in page.text and 'href="/static/app.css"' in page.text
    assert EVIL not in page.text
    assert 'method="post" action="/actions' not in page.text
    assert not re.search(r'data-action="(' + "|".join(ACTIONS) + ')"', page.text)


@pytest.mark.parametrize("path", PAGES)
def test_pages_escape_values(calls: list[Any], path: str) -> None:
    page = _client("operator").get(path)
    assert page.status_code == 200
    assert "<script>alert" not in page.text


def test_operator_sees_every_action_and_each_form_carries_the_csrf_token(calls: list[Any]) -> None:
    client = _client("operator")
    seen: set[str] = set()
    for path in PAGES:
        html = client.get(path).text
        seen |= set(re.findall(r'data-action="([\w-]+)"', html))
        for form in re.findall(r'<form method="post".*?</form>', html, flags=re.S):
            assert f'name="csrf" value="{CSRF}"' in form, form
        assert f'data-csrf="{CSRF}"' in html
    assert seen == set(ACTIONS)


def test_overview_shows_states_hooks_and_numbers(calls: list[Any]) -> None:
    html = _client("operator").get("/").text
    assert 'id="sync-customers"' in html and 'data-sync="customers"' in html
    assert 'class="state-failing"' in html and 'class="state-paused"' in html
    assert "late by 10m 00s" in html and "15m 00s" in html  # late_by_s and lag_s
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the pause note, escaped


def test_errors_rows_have_key_hooks_and_unmapped_shows_the_snippet(calls: list[Any]) -> None:
    client = _client("operator")
    html = client.get("/errors").text
    assert 'data-sync="customers" data-key="C/1"' in html
    assert 'formaction="/actions/orders/orders/reexport"' in html  # orders is an export sync
    assert 'formaction="/actions/orders/customers/reexport"' not in html
    assert "Deutschland: DE" in client.get("/unmapped").text
    orders = client.get("/orders").text
    assert "ERP: customer blocked" in orders and 'data-key="SO-9"' in orders


def test_unknown_run_and_sync_are_404(calls: list[Any]) -> None:
    client = _client("viewer")
    assert client.get("/runs/99").status_code == 404
    assert client.get("/syncs/nosuch").status_code == 404
    for page in ("/errors", "/orders", "/unmapped", "/audit"):  # a filter on a sync the sheet lacks
        missing = client.get(f"{page}?sync=nosuch", headers={"Accept": "text/html"})
        assert missing.status_code == 404 and "nosuch" in missing.text, page


def test_static_files_are_served_and_nothing_else() -> None:
    client = _client("viewer")
    assert client.get("/static/htmx.min.js").status_code == 200
    css = client.get("/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fpages.py").status_code == 404
    assert client.get("/static/htmx.LICENSE").status_code == 404


def test_templates_hold_no_inline_script_or_style() -> None:
    folder = Path(pages.__file__).parent / "templates"
    for template in folder.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert "<style" not in text and " style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # no onclick= handlers
        assert "http://" not in text and "https://" not in text, template.name  # no CDN


REAL_SHEET = """
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  shop: {url: "sqlite:///shop.db"}
state: {url: "sqlite:///state.db"}
syncs:
  customers:
    from: {connection: erp, table: customers}
    to: {connection: shop, table: web_customers}
    key: {from: id, to: ref}
    changes: {method: watermark, column: changed_at, lag: 0s}
    fields:
      name: name
"""


def test_pages_render_over_the_real_readmodel_and_store(tmp_path: Path) -> None:
    """Every page renders over the real read model, a real sheet and a SQLite store."""
    from mapsync.sheet.loader import load
    from mapsync.state.store import StateStore

    (tmp_path / "sheet.yaml").write_text(REAL_SHEET)
    loaded = load(tmp_path / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    store.pause("customers", "bob", EVIL)
    client = _client("operator")
    client.app.state.loaded = loaded  # type: ignore[attr-defined]
    client.app.state.store = store  # type: ignore[attr-defined]
    for path in [p for p in PAGES if p not in ("/runs/7",) and "orders" not in p]:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "<script>alert" not in page.text
    overview = client.get("/").text
    assert 'id="sync-customers"' in overview and 'class="state-paused"' in overview
    assert client.get("/runs/999").status_code == 404


def test_login_template_has_the_hooks_and_escapes() -> None:
    """`login.html` for GET /login: `#login` with user/password/next, escaped values."""
    from mapsync.web.templating import templates

    html = templates.get_template("login.html").render(next="/errors", error=EVIL, user=EVIL)
    assert '<form id="login" method="post" action="/login">' in html
    assert 'name="user"' in html and 'name="password" type="password"' in html
    assert 'type="submit"' in html and 'name="next" value="/errors"' in html
    assert "<script>alert" not in html and 'id="flash"' in html
