"""The generic REST destination: N records per call, per-record results, a whole-call 4xx split
until the bad record stands alone, updates and hard deletes, every kind of authentication; and
SQL → REST end to end with `mapsync seed` / `run`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync import records
from mapsync.rest.connector import open_handle
from mapsync.rest.destination import RestDestination
from mapsync.sheet import models
from mapsync.sheet.connection_models import RestConnection
from mapsync.testing.fault_server import FaultServer, Reply, Request
from tests import helpers as h


class Api:
    """POST /things (array) upserts by `code`; per-record results; `BAD` values refused."""

    def __init__(self, results: bool, whole_call_refusal: bool = False) -> None:
        self.results, self.whole = results, whole_call_refusal
        self.things: dict[str, dict[str, Any]] = {}
        self.tokens = 0

    def __call__(self, req: Request) -> Reply:
        if req.path == "/oauth/token":
            self.tokens += 1
            return Reply(200, {"access_token": f"tok{self.tokens}", "expires_in": 3600})
        if req.method == "GET":
            return Reply(200, {"service": "things"})
        if req.method == "DELETE":
            self.things.pop(req.path.rsplit("/", 1)[1], None)
            return Reply(204, raw=b"")
        body = req.json()
        items = body if isinstance(body, list) else [body]
        if self.whole and any(i.get("name") == "BAD" for i in items):
            return Reply(422, {"error": "name BAD is not allowed"})
        out = []
        for item in items:
            if item.get("name") == "BAD":
                out.append({"ok": False, "error": f"{item['code']}: name BAD is not allowed"})
                continue
            if req.method == "PATCH" and item["code"] not in self.things:
                out.append({"ok": False, "error": "no such thing"})
                continue
            self.things[item["code"]] = {**self.things.get(item["code"], {}), **item}
            out.append({"ok": True})
        return Reply(200, {"results": out} if self.results else {"done": len(items)})


@pytest.fixture
def api_server(request: pytest.FixtureRequest) -> Iterator[tuple[FaultServer, Api]]:
    api = Api(**getattr(request, "param", {"results": True}))
    with FaultServer(api) as server:
        yield server, api


def dest(
    url: str, batch: int = 10, auth: dict[str, Any] | None = None, results: bool = True
) -> RestDestination:
    cfg = RestConnection.model_validate(
        {
            "kind": "rest",
            "base_url": url,
            "auth": auth or {"type": "api_key", "header": "X-Key", "value": "k-123"},
            "write": {"batch": batch, "results": "results" if results else None},
        }
    )
    sync = models.SyncConfig.model_validate(
        {
            "from": {"connection": "db", "table": "t"},
            "to": {"connection": "api", "resource": "things"},
            "key": {"from": "id", "to": "code"},
            "fields": {"name": "name"},
            "changes": {"method": "full"},
            "deletes": {"policy": "hard"},
        }
    )
    return RestDestination(open_handle("api", cfg), "things", sync)


def recs(names: list[str], op: str = "upsert") -> list[records.Mapped]:
    return [
        records.Mapped(op, (i,), (f"c{i}",), None, {"code": f"c{i}", "name": n}, hash=str(i))  # type: ignore[arg-type]
        for i, n in enumerate(names)
    ]


def test_n_records_per_call_with_per_record_results(api_server: tuple[FaultServer, Api]) -> None:
    server, api = api_server
    d = dest(server.url, batch=4)
    names = ["a", "b", "BAD", "d", "e", "f", "BAD", "h", "i", "j"]
    result = d.write(recs(names))
    assert len(server.requests("POST", "/things")) == 3  # 4 + 4 + 2
    assert sorted(r.key for r in result.rejected) == [(2,), (6,)]
    assert "c2: name BAD is not allowed" in result.rejected[0].message
    assert len(result.delivered) == 8 and len(api.things) == 8
    assert all(isinstance(json.loads(r.body), list) for r in server.log)


@pytest.mark.parametrize("api_server", [{"results": False, "whole_call_refusal": True}], indirect=True)
def test_a_whole_call_4xx_is_split_until_the_record_stands_alone(api_server: tuple[FaultServer, Api]) -> None:
    server, api = api_server
    d = dest(server.url, batch=8, results=False)
    names = ["a", "b", "c", "d", "e", "BAD", "g", "h"]
    result = d.write(recs(names))
    assert [r.key for r in result.rejected] == [(5,)]
    assert (
        "HTTP 422" in result.rejected[0].message and "name BAD is not allowed" in result.rejected[0].message
    )
    assert len(api.things) == 7
    assert len(server.log) == 1 + 2 + 2 + 2  # the call, then halves down to one record (2·log2 8)


def test_updates_and_hard_deletes(api_server: tuple[FaultServer, Api]) -> None:
    server, api = api_server
    d = dest(server.url)
    d.write(recs(["a", "b", "c"]))
    result = d.write([*recs(["x", "y"], op="update"), recs(["", "", "z"], op="delete")[2]])
    assert len(result.delivered) == 3 and result.rejected == []
    assert api.things == {"c0": {"code": "c0", "name": "x"}, "c1": {"code": "c1", "name": "y"}}
    assert [r.method for r in server.log[1:]] == ["PATCH", "DELETE"]
    assert server.log[-1].path == "/things/c2"


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ({"type": "bearer", "token": "tok-abc"}, ("authorization", "Bearer tok-abc")),
        (
            {"type": "basic", "username": "u", "password": "p"},
            ("authorization", "Basic " + base64.b64encode(b"u:p").decode()),
        ),
        ({"type": "api_key", "header": "X-Key", "value": "k-123"}, ("x-key", "k-123")),
        (
            {
                "type": "token",
                "url": "/oauth/token",
                "body": {"client_id": "c", "secret": "s"},
                "token_field": "access_token",
                "expires_field": "expires_in",
            },
            ("authorization", "Bearer tok1"),
        ),
    ],
)
def test_every_kind_of_auth(
    api_server: tuple[FaultServer, Api], auth: dict[str, Any], header: tuple[str, str]
) -> None:
    server, api = api_server
    d = dest(server.url, auth=auth)
    d.write(recs(["a"]))
    d.write(recs(["b"]))
    writes = server.requests("POST", "/things")
    assert all(w.headers.get(header[0]) == header[1] for w in writes)
    assert api.tokens == (1 if auth["type"] == "token" else 0)  # fetched once, reused


SHEET = """
version: 1
connections:
  db: {{url: "{src}"}}
  api:
    kind: rest
    base_url: "{url}"
    auth: {{type: api_key, header: X-Key, value: "${{API_KEY}}"}}
    write: {{batch: 5, results: results}}
syncs:
  things:
    from: {{connection: db, table: things}}
    to: {{connection: api, resource: things}}
    key: {{from: id, to: code}}
    fields: {{name: name}}
    changes: {{method: full}}
"""


def test_sql_to_rest_end_to_end(
    api_server: tuple[FaultServer, Api], sqlite_database: Any, tmp_path: Path
) -> None:
    server, _api = api_server
    src = sqlite_database()
    h.execute(src, "CREATE TABLE things (id VARCHAR(10) PRIMARY KEY, name VARCHAR(20))")
    rows = [{"i": f"t{i}", "n": "BAD" if i == 3 else f"n{i}"} for i in range(12)]
    h.execute(src, "INSERT INTO things VALUES (:i, :n)", params=rows)
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, url=server.url))
    done = h.mapsync("seed", "sheet.yaml", "--json", cwd=tmp_path, env={"API_KEY": "k-123"})
    assert done.returncode == 1, done.stdout + done.stderr  # one record refused
    (report,) = json.loads(done.stdout)
    assert report["counts"]["written"] == 11 and report["counts"]["rejected"] == 1
    assert len(server.requests("POST", "/things")) == 3
    assert "k-123" not in done.stdout + done.stderr
    errors_out = h.mapsync("errors", "sheet.yaml", "--json", cwd=tmp_path, env={"API_KEY": "k-123"})
    assert "name BAD is not allowed" in errors_out.stdout


def test_check_of_a_rest_connection(api_server: tuple[FaultServer, Api]) -> None:
    from mapsync.rest.connector import check
    from mapsync.testing.fault_server import Fault

    server, _ = api_server
    d = dest(server.url)
    assert check(d.db) == {
        "connection": "api",
        "kind": "rest",
        "reachable": True,
        "auth_ok": True,
        "status": 200,
    }
    server.script = [Fault.status(403, body={"error": "key k-123 revoked"})]
    refused = check(d.db)
    assert refused["auth_ok"] is False and "HTTP 403" in refused["error"] and "k-123" not in refused["error"]
