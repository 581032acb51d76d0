"""The dashboard's form posts (mapsync.web.pages_actions): each calls its action function and
redirects back (303) with a flash; refusals flash an error and act on nothing."""

from __future__ import annotations

import re
import types
from typing import Any

import pytest

from tests.integration.web.page_fakes import CSRF, EVIL, _client, calls

__all__ = ["calls"]


def test_form_posts_redirect_back_with_a_flash(calls: list[Any]) -> None:
    client = _client("operator")
    answer = client.post("/actions/errors/customers/retry", data={"csrf": CSRF, "key": ["C/1", "C/2"]})
    assert answer.status_code == 303 and answer.headers["location"] == "/errors?sync=customers"
    assert calls == [("retry", "alice", "customers", ["C/1", "C/2"])]
    page = client.get("/errors?sync=customers")
    assert re.search(
        r'<div id="flash" class="flash ok"[^>]*>Retry of 2 record\(s\) queued \(request 11\)', page.text
    )
    assert "mapsync_flash" not in client.cookies  # read once
    assert 'id="flash"' not in client.get("/errors").text


@pytest.mark.parametrize(
    ("path", "data", "call"),
    [
        ("/actions/syncs/customers/pause", {"note": "deploy"}, ("pause", "alice", "customers", "deploy")),
        ("/actions/syncs/customers/resume", {}, ("resume", "alice", "customers")),
        ("/actions/syncs/customers/run", {"kind": "overlap"}, ("run_now", "alice", "customers", "overlap")),
        (
            "/actions/errors/customers/resolve",
            {"key": "C/1", "note": "fixed"},
            ("resolve", "alice", "customers", ["C/1"], "fixed"),
        ),
        ("/actions/orders/orders/reexport", {"all_failed": "1"}, ("reexport", "alice", "orders", None)),
        ("/actions/orders/orders/reexport", {"key": "W1"}, ("reexport", "alice", "orders", ["W1"])),
        ("/actions/errors/customers/retry", {"all_open": "1"}, ("retry", "alice", "customers", None)),
        (
            "/actions/errors/customers/resolve",
            {"all_open": "1", "key": "C/1", "note": "obsolete"},  # all open, whatever is ticked
            ("resolve", "alice", "customers", None, "obsolete"),
        ),
        ("/actions/alerts/3/ack", {}, ("ack_alert", "alice", 3)),
        ("/actions/alerts/3/silence", {"for": "4h"}, ("silence_alert", "alice", 3, "4h")),
    ],
)
def test_each_action_calls_its_function(
    calls: list[Any], path: str, data: dict[str, str], call: tuple[Any, ...]
) -> None:
    answer = _client("operator").post(path, data={"csrf": CSRF, **data})
    assert answer.status_code == 303
    assert calls == [call]


def test_refusals_flash_an_error_and_act_on_nothing(calls: list[Any]) -> None:
    client = _client("operator")
    assert (
        client.post("/actions/errors/customers/resolve", data={"csrf": CSRF, "key": "C/1"}).status_code == 303
    )
    assert client.post("/actions/errors/customers/retry", data={"csrf": CSRF}).status_code == 303
    assert (
        client.post("/actions/orders/orders/reexport", data={"csrf": CSRF}).status_code == 303
    )  # none ticked
    assert "Select the orders to re-export" in client.get("/orders").text
    long_note = {"csrf": CSRF, "key": "C/1", "note": "x" * 2001}
    assert client.post("/actions/errors/customers/resolve", data=long_note).status_code == 303
    assert "over 2000 characters" in client.get("/errors").text
    assert calls == []
    answer = client.post("/actions/syncs/nosuch/pause", data={"csrf": CSRF, "next": "//evil.example/"})
    assert answer.headers["location"] == "/"  # never an off-site redirect
    assert "unknown sync nosuch" in client.get("/").text
    assert _client("viewer").post("/actions/syncs/customers/pause", data={"csrf": CSRF}).status_code == 403
    assert calls == []


def test_a_forged_flash_cookie_is_escaped_and_a_broken_one_ignored(calls: list[Any]) -> None:
    import base64
    import json

    client = _client("viewer")
    forged = base64.urlsafe_b64encode(json.dumps({"kind": "<b>", "text": EVIL}).encode()).decode()
    client.cookies.set("mapsync_flash", forged)
    html = client.get("/").text
    assert '<div id="flash" class="flash ok"' in html and "&lt;script&gt;" in html and EVIL not in html
    client.cookies.set("mapsync_flash", "%%%not-base64")
    assert client.get("/").status_code == 200


def test_the_flash_cookie_follows_the_sheets_secure_cookies(calls: list[Any]) -> None:
    client = _client("operator")
    client.app.state.loaded.sheet.web = types.SimpleNamespace(secure_cookies=True)  # type: ignore[attr-defined]
    answer = client.post("/actions/syncs/customers/resume", data={"csrf": CSRF})
    cookie = answer.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    client.app.state.loaded.sheet.web = types.SimpleNamespace(secure_cookies=False)  # type: ignore[attr-defined]
    answer = client.post("/actions/syncs/customers/resume", data={"csrf": CSRF})
    assert "secure" not in answer.headers["set-cookie"].lower()
