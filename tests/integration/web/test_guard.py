"""mapsync.web.guard through the whole app: the Host allow-list (DNS rebinding), security
headers on every answer, and the body limit (announced or streamed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mapsync.web import guard
from tests import web_world as w


@pytest.fixture
def world(tmp_path: Path) -> Iterator[w.WebWorld]:
    yield from w.web_world(tmp_path)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8765", "localhost:1", "[::1]:8765", "dash.example.com", "DASH.example.com:443"],
)
def test_allowed_hosts(world: w.WebWorld, host: str) -> None:
    assert world.client(headers={"Host": host}).get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "dash.example.com.evil.example", "127.0.0.2", "attacker:8765"]
)
def test_a_foreign_host_is_refused_even_on_public_routes(world: w.WebWorld, host: str) -> None:
    bearer = {"Authorization": f"Bearer {w.ROBOT_TOKEN}"}
    for path in ("/healthz", "/metrics", "/login", "/api/probe"):
        answer = world.client(headers={"Host": host, **bearer}).get(path)
        assert answer.status_code == 421, (host, path)
        assert "web.hosts" in answer.json()["error"]


@pytest.mark.parametrize("host", ["", "a b", "evil.example:port", "user@127.0.0.1"])
def test_a_missing_or_malformed_host_is_400(world: w.WebWorld, host: str) -> None:
    assert world.client(headers={"Host": host}).get("/healthz").status_code == 400


def test_host_name() -> None:
    assert guard.host_name("Example.COM:8080") == "example.com"
    assert guard.host_name("[::1]:80") == "[::1]"
    assert guard.host_name("::1") is None  # an IPv6 host needs its brackets
    assert guard.host_name("a/b") is None


def test_security_headers_on_every_answer(world: w.WebWorld) -> None:
    c = world.client()
    alice, _ = world.login("alice")
    answers = {
        "page": alice.get("/probe"),
        "api": alice.get("/api/probe"),
        "login": c.get("/login"),
        "redirect": c.get("/probe"),
        "401": c.get("/api/probe"),
        "404": c.get("/nothing-here"),
        "healthz": c.get("/healthz"),
        "421": world.client(headers={"Host": "evil.example"}).get("/"),
        "413": c.post("/login", content=b"x" * 5000),
    }
    for name, answer in answers.items():
        headers = answer.headers
        assert headers["content-security-policy"].startswith("default-src 'self'; frame-ancestors 'none'"), (
            name
        )
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["referrer-policy"] == "same-origin", name
        assert headers["x-frame-options"] == "DENY", name
        assert headers["cache-control"] == "no-store", name


def test_a_body_over_the_limit_is_413(world: w.WebWorld) -> None:
    robot = world.client(headers={"Authorization": f"Bearer {w.ROBOT_TOKEN}"})
    assert robot.post("/api/probe", content=b"x" * 2048).status_code == 200  # max_body: 2048
    announced = robot.post("/api/probe", content=b"x" * 2049)
    assert announced.status_code == 413 and "2048" in announced.json()["error"]


def test_a_streamed_body_is_counted_not_trusted(world: w.WebWorld) -> None:
    """Chunked (no Content-Length), and a Content-Length that lies: the bytes are counted."""

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 500

    c = world.client()
    streamed = c.post(
        "/login", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert streamed.status_code == 413
    alice, csrf = world.login("alice")
    form = alice.post(
        "/actions/probe", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 413
    small = alice.post("/actions/probe", data={"csrf": csrf, "note": "z" * 100})
    assert small.status_code == 200


def test_webhook_routes_keep_their_own_limit_and_host_rules(tmp_path: Path) -> None:
    """A webhook sender is a server with an HMAC signature, not a browser: no Host allow-list and
    its own max_body (webhooks.py answers 401 for the missing signature, not 421 or 413)."""
    for world in w.web_world(tmp_path, hook=True):
        sender = world.client(headers={"Host": "hooks.example"})
        answer = sender.post("/webhooks/items", content=b"{}" + b" " * 5000)
        assert (answer.status_code, answer.json()) == (401, {"error": "invalid signature"})
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert world.client(headers={"Host": "hooks.example"}).get("/healthz").status_code == 421
