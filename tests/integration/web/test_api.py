"""The JSON API in-process (FastAPI's TestClient) over real state stores filled by real runs:
answers, statuses (202 queued, 404 unknown, 422 refused, 401/403 by role), the OpenAPI schema,
and no secret of the sheet in any answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from mapsync.web import api
from mapsync.web.auth import Principal, require_operator, require_viewer
from tests.integration.web.world import SECRET, World, world

OPERATOR = Principal(user="alice", role="operator", csrf=None, via="token")
VIEWER = Principal(user="grafana", role="viewer", csrf=None, via="token")
READS = [
    "/api/overview",
    "/api/syncs/items/runs",
    "/api/errors?sync=items&all=true",
    "/api/unmapped",
    "/api/orders",
    "/api/queues",
    "/api/alerts?all=true",
    "/api/reconcile",
    "/api/workers",
    "/api/budgets",
    "/api/audit",
    "/api/requests",
]


def _app(w: World, who: Principal | None) -> FastAPI:
    app = FastAPI()
    app.include_router(api.router)
    app.state.loaded, app.state.store = w.loaded, w.store
    if who is not None:
        app.dependency_overrides[require_viewer] = lambda: who
        if who.role == "operator":
            app.dependency_overrides[require_operator] = lambda: who
    return app


@pytest.fixture
def w(tmp_path: Path, sqlite_database: Callable[[], str]) -> Iterator[World]:
    made = world(tmp_path, sqlite_database)
    yield made
    made.close()


def test_every_read_answers_and_never_shows_a_secret(w: World) -> None:
    client = TestClient(_app(w, OPERATOR))
    # texts an operator or a failure put into the store raw: the API redacts them
    assert client.post("/api/syncs/items/pause", json={"note": f"pw is {SECRET}"}).status_code == 200
    w.store.record_failed_run("items", "run", "cli", "destination", f"login failed for {SECRET}")
    for path in READS:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert SECRET not in answer.text, path
    overview = client.get("/api/overview").json()
    assert overview[0]["paused"]["note"] == "pw is ***"
    assert overview[0]["last_run"]["status"] == "failed"
    assert client.get("/api/syncs/items/runs?limit=1").json()[0]["message"] == "login failed for ***"


def test_errors_trace_and_run_answers(w: World) -> None:
    client = TestClient(_app(w, VIEWER))
    errors = client.get("/api/errors", params={"sync": "items"}).json()
    assert sorted(e["field"] for e in errors) == ["name", "qty"]
    key = errors[0]["key"]
    trace = client.get(f"/api/errors/items/{key}/trace")
    assert trace.status_code == 200 and trace.json()["sync"] == "items"
    assert client.get("/api/errors/items/999/trace").status_code == 404
    assert client.get("/api/runs/99999").json() == {"error": "no run 99999"}


def test_unknown_syncs_are_404_with_an_error(w: World) -> None:
    client = TestClient(_app(w, OPERATOR))
    for method, path in [
        ("GET", "/api/syncs/nope/runs"),
        ("GET", "/api/errors?sync=nope"),
        ("GET", "/api/unmapped?sync=nope"),
        ("POST", "/api/syncs/nope/resume"),
        ("POST", "/api/syncs/nope/run"),
    ]:
        answer = client.request(method, path)
        assert answer.status_code == 404, path
        assert answer.json() == {"error": "no sync 'nope'"}


def test_actions_queue_requests_and_refuse_what_they_must(w: World) -> None:
    client = TestClient(_app(w, OPERATOR))
    queued = client.post("/api/syncs/items/run", json={"kind": "overlap"})
    assert queued.status_code == 202
    (request,) = w.store.requests("items", 10)
    assert queued.json() == {"request": request.id} and request.kind == "overlap"
    retry = client.post("/api/errors/items/retry", json={"keys": None})
    assert retry.status_code == 202
    refused = client.post("/api/orders/items/reexport", json={"keys": None})
    assert refused.status_code == 422 and "not an export" in refused.json()["error"]
    assert client.post("/api/syncs/items/run", json={"kind": "seed"}).status_code == 422
    assert client.post("/api/errors/items/resolve", json={"keys": None}).status_code == 422  # no note
    assert client.post("/api/alerts/77/ack").json() == {"error": "no incident 77"}
    assert client.post("/api/alerts/77/silence", json={"for": "2h"}).status_code == 404
    assert [r["action"] for r in client.get("/api/audit").json()] == ["retry", "run"]


def _refuse() -> Principal:
    raise HTTPException(403, "operators only")


def _anonymous() -> Principal:
    raise HTTPException(401, "login required")


def test_reads_need_a_viewer_and_every_action_an_operator(w: World) -> None:
    nobody = _app(w, None)
    nobody.dependency_overrides[require_viewer] = _anonymous  # what auth answers without credentials
    gets = [r for r in api.router.routes if isinstance(r, APIRoute) and "GET" in r.methods]
    assert len(gets) == 14
    for route in gets:
        path = route.path.replace(":path", "").format(sync="items", run_id=1, key="[4]")
        assert TestClient(nobody).get(path).status_code == 401, path
    app = _app(w, VIEWER)
    app.dependency_overrides[require_operator] = _refuse  # what auth answers a viewer
    viewer = TestClient(app)
    assert viewer.get("/api/overview").status_code == 200
    posts = [r for r in api.router.routes if isinstance(r, APIRoute) and "POST" in r.methods]
    assert len(posts) == 8
    for route in posts:
        path = route.path.format(sync="items", incident_id=1)
        assert viewer.post(path, json={"note": "x", "for": "1h", "keys": None}).status_code == 403, path
    assert w.store.paused() == {} and w.store.requests("items", 10) == []


def test_every_route_is_in_the_openapi_schema_with_a_response_model(w: World) -> None:
    schema = TestClient(_app(w, VIEWER)).get("/openapi.json").json()
    assert len(schema["paths"]) == 22
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            ok = op["responses"].get("200") or op["responses"].get("202")
            assert ok is not None and "schema" in ok["content"]["application/json"], (method, path)
            assert ok["content"]["application/json"]["schema"] != {}, (method, path)
    json.dumps(schema)


def test_the_api_on_a_postgresql_state_store(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    made = world(tmp_path, sqlite_database, state=pg_database())
    try:
        client = TestClient(_app(made, OPERATOR))
        (row,) = client.get("/api/overview").json()
        assert (row["open_errors"], row["unmapped"], row["last_run"]["written"]) == (2, 1, 1)
        assert client.post("/api/syncs/items/pause", json={"note": "pg"}).status_code == 200
        assert client.get("/api/overview").json()[0]["paused"]["note"] == "pg"
        assert client.post("/api/syncs/items/run", json={}).status_code == 202
        assert [r["status"] for r in client.get("/api/requests").json()] == ["new"]
    finally:
        made.close()
