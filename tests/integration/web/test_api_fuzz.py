"""The JSON API (`mapsync.web.api`) against its own OpenAPI schema, with schemathesis: every
operation, with generated paths, queries and bodies (bounded: a fixed number of examples per
operation, derandomised), called by an operator's bearer token on the app in this process over a
throwaway SQLite state store that holds runs, a refused record and its error. No answer is a 5xx,
and every answer matches what the schema says of it (status, content type, body, headers).

Also: the schema itself is only for a logged-in user."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests.browser.world import Dashboard

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 25  # per operation
TOKEN_VAR = "MAPSYNC_FUZZ_TOKEN"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str], Any]]:
    """(the app, the token user's headers, the loaded schema). The ASGI client sends
    `Host: testserver`: the sheet's `web.hosts` allows it."""
    from mapsync.web.app import create_app

    token = secrets.token_urlsafe(32)
    world = Dashboard(
        tmp_path_factory.mktemp("fuzz"),
        web_more=f'    fuzz: {{role: operator, token: "${{{TOKEN_VAR}}}"}}\n  hosts: [testserver]\n',
    )
    world.env[TOKEN_VAR] = token
    world.seed()
    for no, zip_code in ((1, "12345"), (2, "1234")):
        world.order(no, zip=zip_code)
    assert world.cli("run", "sheet.yaml", "--sync", "orders").returncode == 1  # order 2 refused
    loaded = loader.load(world.folder / "sheet.yaml", env={TOKEN_VAR: token})
    store = StateStore.open(world.state, world.folder, create=False)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        app = create_app(loaded, store, host="127.0.0.1")
        yield app, headers, schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    finally:
        store.close()


def test_the_schema_is_only_for_a_logged_in_user(api: tuple[Any, dict[str, str], Any]) -> None:
    from starlette.testclient import TestClient

    app, headers, _ = api
    with TestClient(app, base_url="http://testserver") as client:
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/openapi.json", headers={"Authorization": "Bearer " + "x" * 43}).status_code == 401
        got = client.get("/openapi.json", headers=headers)
    assert got.status_code == 200
    paths = got.json()["paths"]
    assert "/api/overview" in paths and "/api/errors/{sync}/retry" in paths


def test_every_operation_answers_within_its_schema(api: tuple[Any, dict[str, str], Any]) -> None:
    from schemathesis import checks

    _, headers, schema = api
    chosen = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.response_headers_conformance,
    ]
    failures: list[str] = []
    operations = 0
    for result in schema.include(path_regex="^/api/").get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=chosen)

        try:
            call()
        except (Exception, BaseExceptionGroup) as exc:  # a failed check, or the app's own exception
            notes = "\n".join(getattr(exc, "__notes__", []))
            failures.append(f"{operation.label}: {type(exc).__name__}: {exc}\n{notes}".strip())
    assert operations >= 20  # every route of docs/dashboard.md's API, not a schema cut short
    assert not failures, "\n\n".join(failures)
