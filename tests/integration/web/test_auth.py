"""mapsync.web.auth through the whole app (Starlette TestClient, a real SQLite state store):
every route refuses a request without credentials, viewers cannot act, actions need the
session's CSRF token, logins are rate limited and rotate the session, expired and revoked
sessions are refused, cookie flags, anonymous reads only on loopback, no secret in any answer."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync import webhook_server
from mapsync.web import app as web_app
from mapsync.web import auth
from tests import web_world as w


@pytest.fixture
def world(tmp_path: Path) -> Iterator[w.WebWorld]:
    yield from w.web_world(tmp_path)


def _public(path: str) -> bool:
    return path in ("/healthz", "/readyz", "/metrics", "/login", "/logout") or path.startswith(
        ("/webhooks/", "/static")
    )


def test_every_route_without_credentials_is_refused(world: w.WebWorld) -> None:
    """Iterates the app's routes: the API's and pages' routes, once merged, are covered too."""
    c = world.client()
    checked = 0
    for route_path, methods in w.all_routes(world.app):
        if _public(route_path):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route_path)
        for method in sorted(methods):
            if method == "HEAD":
                continue
            answer = c.request(method, path)
            checked += 1
            if path.startswith("/api/") or path == "/openapi.json":
                assert answer.status_code == 401, (method, path, answer.status_code)
                assert "error" in answer.json()
            else:
                assert answer.status_code == 303, (method, path, answer.status_code)
                assert answer.headers["location"].startswith("/login?next="), (method, path)
    assert checked >= 45  # every page, API read and action, both forms of each action


def test_the_login_page_and_a_redirect_back(world: w.WebWorld) -> None:
    c = world.client()
    to_login = c.get("/probe?x=1")
    assert to_login.status_code == 303 and to_login.headers["location"] == "/login?next=%2Fprobe%3Fx%3D1"
    page = c.get(to_login.headers["location"])
    assert page.status_code == 200 and 'id="login"' in page.text and 'name="password"' in page.text
    assert 'value="/probe?x=1"' in page.text
    done = c.post("/login", data={"user": "alice", "password": w.PASSWORDS["alice"], "next": "/probe?x=1"})
    assert (done.status_code, done.headers["location"]) == (303, "/probe?x=1")
    assert c.get("/probe").text == "<p>hello alice</p>"
    assert c.get("/api/probe").json() == {"user": "alice", "role": "operator", "via": "session"}


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", ""])
def test_login_never_sends_to_another_site(world: w.WebWorld, target: str) -> None:
    c = world.client()
    done = c.post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"], "next": target})
    assert (done.status_code, done.headers["location"]) == (303, "/")


def test_the_session_cookie_flags(world: w.WebWorld) -> None:
    done = world.client().post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]})
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"{auth.COOKIE}=")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "max-age", "samesite"} <= flags
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert "max-age=28800" in cookie.lower()


def test_a_login_rotates_the_session(world: w.WebWorld) -> None:
    c, _ = world.login("alice")
    first = c.cookies[auth.COOKIE]
    again = c.post("/login", data={"user": "alice", "password": w.PASSWORDS["alice"]})
    assert again.status_code == 303
    second = c.cookies[auth.COOKIE]
    assert second != first
    assert world.sessions.session(first) is None  # the old one is closed
    stale = world.client(cookies={auth.COOKIE: first})
    assert stale.get("/api/probe").status_code == 401
    assert c.get("/api/probe").status_code == 200


def test_logout_closes_the_session_and_needs_its_csrf(world: w.WebWorld) -> None:
    c, csrf = world.login("bob")
    token = c.cookies[auth.COOKIE]
    assert c.post("/logout").status_code == 403  # no CSRF token: a forged logout
    assert world.sessions.session(token) is not None
    out = c.post("/logout", data={"csrf": csrf})
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert world.sessions.session(token) is None
    assert world.client(cookies={auth.COOKIE: token}).get("/api/probe").status_code == 401
    logged = [(a["user"], a["action"], a["detail"]) for a in world.store.audit.actions(None, 10)]
    assert logged == [
        ("bob", "logout", {"via": "web"}),
        ("bob", "login", {"client": "testclient", "via": "web"}),
    ]


def test_a_failed_login_is_not_audited_only_logged(
    world: w.WebWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mapsync.web")
    answer = world.client().post("/login", data={"user": "bob", "password": "wrong-pw-C4nary"})
    assert answer.status_code == 401 and world.store.audit.actions(None, 10) == []
    assert "web_login_failed" in caplog.text and "wrong-pw-C4nary" not in caplog.text


def test_revoked_sessions_are_refused(world: w.WebWorld) -> None:
    alice, _ = world.login("alice")
    bob, _ = world.login("bob")
    assert world.sessions.close_sessions("alice") == 1
    assert alice.get("/api/probe").status_code == 401
    assert alice.get("/probe").status_code == 303
    assert bob.get("/api/probe").status_code == 200


def test_an_expired_session_is_refused(tmp_path: Path) -> None:
    for world in w.web_world(tmp_path, w.DEFAULT_WEB + "  session_ttl: 2s\n"):
        c, _ = world.login("bob")
        assert (
            "max-age=2"
            in c.post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]})
            .headers["set-cookie"]
            .lower()
        )
        assert c.get("/api/probe").status_code == 200
        time.sleep(2.1)
        assert c.get("/api/probe").status_code == 401
        assert c.get("/probe").status_code == 303


def test_a_session_of_a_user_removed_from_the_sheet_is_refused(world: w.WebWorld) -> None:
    token, _ = world.sessions.open_session("mallory", dt.timedelta(hours=1))
    assert world.client(cookies={auth.COOKIE: token}).get("/api/probe").status_code == 401


def test_every_action_refuses_a_viewer_and_a_session_without_its_csrf_token(world: w.WebWorld) -> None:
    """Every POST route of the app (the API's actions, the pages' forms): a viewer's session and a
    viewer's token get 403, an operator's session without the CSRF token gets 403; nothing is
    written (no request, no pause, no audit row but the logins)."""
    bob, bob_csrf = world.login("bob")
    alice, _ = world.login("alice")
    grafana = world.client(headers={"Authorization": f"Bearer {w.GRAFANA_TOKEN}"})
    posts = [p for p, methods in w.all_routes(world.app) if "POST" in methods and not _public(p)]
    checked = 0
    for route_path in posts:
        if "probe" in route_path:
            continue
        path = re.sub(r"\{(\w+)[^}]*\}", lambda m: "items" if m.group(1) == "sync" else "1", route_path)
        body = {"note": "n", "for": "1h", "keys": None, "kind": "run"}
        for who, headers in ((bob, {"X-CSRF-Token": bob_csrf}), (grafana, {}), (alice, {})):
            answer = (
                who.post(path, json=body, headers=headers)
                if path.startswith("/api/")
                else who.post(
                    path, data={"csrf": bob_csrf if who is bob else "", "note": "n"}, headers=headers
                )
            )
            assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
            checked += 1
    assert checked >= 3 * 16, checked  # 8 API actions and 8 page forms
    assert world.store.requests("items", 10) == [] and world.store.paused() == {}
    assert [a["action"] for a in world.store.audit.actions(None, 10)] == ["login", "login"]


def test_a_viewer_cannot_act(world: w.WebWorld) -> None:
    bob, csrf = world.login("bob")
    refused = bob.post("/api/probe", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403 and "operator" in refused.json()["error"]
    assert bob.post("/actions/probe", data={"csrf": csrf}).status_code == 403
    grafana = world.client(headers={"Authorization": f"Bearer {w.GRAFANA_TOKEN}"})
    assert grafana.get("/api/probe").json() == {"user": "grafana", "role": "viewer", "via": "token"}
    assert grafana.post("/api/probe").status_code == 403


def test_an_operators_action_needs_the_sessions_csrf_token(world: w.WebWorld) -> None:
    alice, csrf = world.login("alice")
    assert alice.post("/api/probe").status_code == 403
    assert alice.post("/api/probe", headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    assert alice.post("/actions/probe", data={"csrf": "wrong"}).status_code == 403
    _, other_csrf = world.login("alice")  # another session's token is no good here
    assert alice.post("/api/probe", headers={"X-CSRF-Token": other_csrf}).status_code == 403
    assert alice.post("/api/probe", headers={"X-CSRF-Token": csrf}).json() == {"acted": "alice"}
    assert alice.post("/actions/probe", data={"csrf": csrf}).text == "<p>done by alice</p>"
    both = alice.post("/actions/probe", data={"csrf": csrf, "note": "fixed at the source"})
    assert both.text == "<p>done by alice: fixed at the source</p>"  # the handler reads the same form
    multipart = alice.post("/actions/probe", data={"csrf": csrf}, files={"note": (None, "as multipart")})
    assert multipart.text == "<p>done by alice: as multipart</p>"


def test_a_bearer_token_acts_without_csrf_and_a_wrong_one_is_refused(world: w.WebWorld) -> None:
    robot = world.client(headers={"Authorization": f"Bearer {w.ROBOT_TOKEN}"})
    assert robot.post("/api/probe").json() == {"acted": "robot"}
    wrong = world.client(headers={"Authorization": f"Bearer {w.ROBOT_TOKEN[:-1]}x"})
    assert wrong.get("/api/probe").status_code == 401
    assert wrong.post("/api/probe").status_code == 401
    alice, _ = world.login("alice")  # a wrong bearer token is not rescued by a session cookie
    alice.headers["Authorization"] = "Bearer nope"
    assert alice.get("/api/probe").status_code == 401


def test_wrong_passwords_and_token_users_cannot_log_in(world: w.WebWorld) -> None:
    c = world.client()
    for user, password in (("alice", "nope"), ("nobody", "nope"), ("grafana", w.GRAFANA_TOKEN)):
        page = c.post("/login", data={"user": user, "password": password})
        assert page.status_code == 401 and "wrong user or password" in page.text
        assert auth.COOKIE not in c.cookies


def test_logins_are_rate_limited_per_user(world: w.WebWorld) -> None:
    for i in range(3):  # login_attempts: 3
        c = world.client(headers={"X-Forwarded-For": f"10.0.0.{i}"})
        assert c.post("/login", data={"user": "alice", "password": "nope"}).status_code == 401
    blocked = world.client().post("/login", data={"user": "alice", "password": w.PASSWORDS["alice"]})
    assert blocked.status_code == 429
    assert (
        world.client().post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]}).status_code == 429
    )


def test_logins_are_rate_limited_per_address_never_trusting_forwarded_for(world: w.WebWorld) -> None:
    auth_ = world.app.state.auth
    for user in ("u1", "u2", "u3"):  # three users from the one socket address, forged headers
        c = world.client(headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"})
        assert c.post("/login", data={"user": user, "password": "nope"}).status_code == 401
    assert auth_.attempts.blocked("addr:testclient")
    assert not auth_.attempts.blocked("addr:203.0.113.9")
    late = world.client().post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]})
    assert late.status_code == 429


def test_the_real_server_never_trusts_forwarded_headers(world: w.WebWorld) -> None:
    """Over a real socket (the server `mapsync serve` runs, which a reverse proxy on 127.0.0.1
    reaches): a forged X-Forwarded-For changes neither the address the login limit counts nor
    the one the audit log writes."""
    server = webhook_server.Background(world.app, host="127.0.0.1", port=0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        with httpx.Client(base_url=base, headers=forged, follow_redirects=False) as c:
            assert c.post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]}).status_code == 303
            for user in ("u1", "u2", "u3"):
                assert c.post("/login", data={"user": user, "password": "nope"}).status_code == 401
    finally:
        server.stop()
    (login,) = world.store.audit.actions(None, 10)
    assert login["detail"]["client"] == "127.0.0.1"
    assert world.app.state.auth.attempts.blocked("addr:127.0.0.1")
    assert not world.app.state.auth.attempts.blocked("addr:203.0.113.9")


def test_the_rate_limit_window_slides(world: w.WebWorld) -> None:
    now = [1000.0]
    world.app.state.auth.attempts.clock = lambda: now[0]
    for _ in range(3):
        world.client().post("/login", data={"user": "bob", "password": "nope"})
    assert (
        world.client().post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]}).status_code == 429
    )
    now[0] += auth.WINDOW_S + 1
    assert (
        world.client().post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]}).status_code == 303
    )


def test_a_login_form_posted_from_another_site_is_refused(world: w.WebWorld) -> None:
    for header in (
        {"Origin": "https://evil.example"},
        {"Referer": "https://evil.example/x"},
        {"Origin": "null"},
    ):
        c = world.client(headers=header)
        assert c.post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]}).status_code == 403
        assert auth.COOKIE not in c.cookies
    ok = world.client(headers={"Origin": "https://dash.example.com"})
    assert ok.post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"]}).status_code == 303


def test_openapi_only_for_a_viewer_and_no_docs(world: w.WebWorld) -> None:
    c = world.client()
    assert c.get("/openapi.json").status_code == 401
    assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
    schema = world.client(headers={"Authorization": f"Bearer {w.GRAFANA_TOKEN}"}).get("/openapi.json")
    assert schema.status_code == 200 and "/api/probe" in schema.json()["paths"]
    assert "/login" not in schema.json()["paths"] and "/webhooks/{sync}" not in schema.json()["paths"]


def test_the_public_routes_need_no_login(world: w.WebWorld) -> None:
    c = world.client()
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"status": "ready"}
    assert c.get("/metrics").status_code == 200


def test_anonymous_reads_only_on_loopback(tmp_path: Path) -> None:
    web = w.DEFAULT_WEB + "  anonymous_reads: true\n"
    with pytest.raises(ValueError, match="loopback"):
        next(w.web_world(tmp_path, web, host="0.0.0.0"))
    with pytest.raises(ValueError, match="loopback"):
        next(w.web_world(tmp_path, web, host="192.168.1.5"))
    for world in w.web_world(tmp_path, web, host="::1"):
        c = world.client()
        assert c.get("/api/probe").json() == {"user": "anonymous", "role": "viewer", "via": "anonymous"}
        assert c.get("/probe").status_code == 200
        assert c.post("/api/probe").status_code == 401  # never an operator: log in to act
        assert c.post("/actions/probe").status_code == 303
        assert c.get("/openapi.json").status_code == 401  # the schema only for a known user
        assert (
            world.client(headers={"Authorization": f"Bearer {w.GRAFANA_TOKEN}"})
            .get("/openapi.json")
            .status_code
            == 200
        )


def test_is_loopback() -> None:
    assert all(map(web_app.is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(web_app.is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))


def test_without_users_everything_but_health_answers_401_with_a_hint(tmp_path: Path) -> None:
    for world in w.web_world(tmp_path, None):
        c = world.client()
        for path in ("/api/probe", "/probe", "/openapi.json"):
            answer = c.get(path)
            assert answer.status_code == 401 and "web: users" in answer.json()["error"]
        assert c.get("/healthz").status_code == 200
        assert c.post("/login", data={"user": "alice", "password": "x"}).status_code == 401


def test_no_secret_in_any_answer(world: w.WebWorld, canary: Callable[..., Any]) -> None:
    c = canary(w.DSN_PW, w.GRAFANA_TOKEN, w.ROBOT_TOKEN, *w.PASSWORDS.values(), *w.HASHES.values())
    alice, csrf = world.login("alice")
    robot = world.client(headers={"Authorization": f"Bearer {w.ROBOT_TOKEN}"})
    answers = [
        world.client().post("/login", data={"user": "alice", "password": "nope"}),
        world.client().post("/login", data={"user": "bob", "password": w.PASSWORDS["bob"] + "x"}),
        world.client().get("/login"),
        alice.post("/api/probe"),
        alice.post("/api/probe", headers={"X-CSRF-Token": csrf}),
        robot.get("/openapi.json"),
        robot.get("/metrics"),
        robot.get("/readyz"),
        world.client(headers={"Authorization": f"Bearer {w.ROBOT_TOKEN}x"}).get("/api/probe"),
        world.client(base_url="https://evil.example").get("/api/probe"),
    ]
    paths = [p for p, methods in w.all_routes(world.app) if "GET" in methods and not _public(p)]
    answers += [robot.get(re.sub(r"\{[^}]+\}", "1", p)) for p in paths]
    world.client().post("/login", data={"user": w.PASSWORDS["bob"], "password": "x"})  # in the wrong field
    for i, answer in enumerate(answers):
        c.text(f"answer {i} {answer.request.url.path}", answer.text + repr(dict(answer.headers)))
    c.assert_clean()


def test_refusals_answer_one_shape_json_or_a_page(world: w.WebWorld) -> None:
    """An unknown `/api/` path, an id past 64 bits and a bad filter answer `{"error"}`; a
    browser asking for a page gets a small escaped page, never FastAPI's `{"detail"}`."""
    bob, _ = world.login("bob")
    unknown = bob.get("/api/no/such/route")
    assert unknown.status_code == 404 and unknown.json() == {"error": "Not Found"}
    too_big = bob.get(f"/api/runs/{2**63}")
    assert too_big.status_code == 422 and "run_id" in too_big.json()["error"]
    page = bob.get("/errors?sync=<b>nosuch</b>", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;nosuch&lt;/b&gt;" in page.text and "<b>nosuch" not in page.text
