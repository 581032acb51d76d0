"""The whole app (`web.app.create_app`) over a real world: a SQLite → SQLite sync run by the
engine, with record errors whose values hold a secret of the sheet. Every page and every API
read answers, the key each error shows opens its trace, and no answer or log line holds the
secret (or a DSN password) in any form the canary knows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mapsync.web import app as web_app
from mapsync.web import auth
from tests.integration.web.world import SECRET, World, world
from tests.web_world import all_routes

ALICE = auth.Principal(user="alice", role="operator", csrf="csrf-of-alice", via="session")


@pytest.fixture
def w(tmp_path: Path, sqlite_database: Callable[[], str]) -> Iterator[World]:
    made = world(
        tmp_path, sqlite_database, export=True, schedule="every: 1h, start_within: 30s, finish_within: 5m"
    )
    yield made
    made.close()


def _client(w: World) -> TestClient:
    app = web_app.create_app(w.loaded, w.store, host="127.0.0.1")
    app.dependency_overrides[auth.require_viewer] = lambda: ALICE
    app.dependency_overrides[auth.require_operator] = lambda: ALICE
    return TestClient(app, base_url="https://127.0.0.1", follow_redirects=False)


def test_every_page_and_read_answers_over_real_state_without_the_secret(
    w: World, canary: Callable[..., Any]
) -> None:
    c = canary(SECRET)
    client = _client(w)
    errors = client.get("/api/errors").json()
    assert sorted(e["key"] for e in errors) == ["4", "5"]  # the command-line form
    (run,) = [r for r in client.get("/api/syncs/items/runs").json() if r["failed"]]
    fill = {"sync": "items", "run_id": str(run["id"]), "key": "5", "incident_id": "1"}
    seen = 0
    for route_path, methods in all_routes(client.app):
        if "GET" not in methods or route_path.startswith(("/static", "/login", "/webhooks")):
            continue
        path = re.sub(r"\{(\w+)(:path)?\}", lambda m: fill.get(m.group(1), "1"), route_path)
        answer = client.get(path, headers={"Accept": "text/html"})
        assert answer.status_code == 200, (path, answer.text[:300])
        c.text(f"GET {path}", answer.text)
        seen += 1
    assert seen >= 30
    trace = client.get("/api/errors/items/5/trace").json()
    assert trace and "rejected" in str(trace)
    page = client.get("/errors/items/5").text
    assert 'data-key="5"' in page and "***" in client.get("/errors").text  # redacted, not dropped
    c.assert_clean()
