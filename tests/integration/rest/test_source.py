"""The generic REST source: paging by page number, offset, next cursor/URL and Link header; the
incremental filter (`>=`, inclusive, deduped by the key ledger) through `changes: watermark`;
reading by key; a REST API → SQL sync end to end."""

from __future__ import annotations

import datetime as dt
import math
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.engine import Engine
from mapsync.rest.connector import open_handle
from mapsync.rest.source import RestSource
from mapsync.sheet import loader, models
from mapsync.sheet.connection_models import RestConnection
from mapsync.state.store import StateStore
from mapsync.testing.fault_server import FaultServer, Reply, Request
from tests import helpers as h

T0 = dt.datetime(2026, 3, 1, 8, 0, 0)  # noqa: DTZ001


class Items:
    """A collection at /items: `?since=` (>=), `?ids=a,b`, and every paging style."""

    def __init__(self, n: int, style: str, size: int = 5) -> None:
        self.style, self.size = style, size
        self.rows: list[dict[str, Any]] = [
            {"id": i, "name": f"item {i}", "updated_at": (T0 + dt.timedelta(minutes=i)).isoformat() + "Z"}
            for i in range(n)
        ]

    def __call__(self, req: Request) -> Reply:
        parsed = urllib.parse.urlsplit(req.path)
        q = dict(urllib.parse.parse_qsl(parsed.query))
        if req.headers.get("authorization") != "Bearer t0k3n":
            return Reply(401, {"error": "no"})
        rows = self.rows
        if "since" in q:
            since = dt.datetime.fromisoformat(q["since"])
            rows = [r for r in rows if dt.datetime.fromisoformat(r["updated_at"][:-1]) >= since]
        if "ids" in q:
            wanted = set(q["ids"].split(","))
            rows = [r for r in rows if str(r["id"]) in wanted]
        start = {
            "page": (int(q.get("page", 1)) - 1) * self.size,
            "offset": int(q.get("offset", 0)),
            "cursor": int(q.get("cursor", 0)),
            "link": int(q.get("at", 0)),
        }[self.style]
        chunk = rows[start : start + self.size]
        end = start + self.size
        if self.style == "cursor":
            return Reply(200, {"data": chunk, "next": end if end < len(rows) else None})
        headers = {}
        if self.style == "link" and end < len(rows):
            query = urllib.parse.urlencode({**q, "at": end})
            headers["Link"] = f'</items?{query}>; rel="next"'
        return Reply(200, {"data": chunk}, headers)


def connection(url: str, style: str, **extra: Any) -> RestConnection:
    return RestConnection.model_validate(
        {
            "kind": "rest",
            "base_url": url,
            "auth": {"type": "bearer", "token": "t0k3n"},
            "paging": {"style": style, "size": 5, "items": "data", "size_param": "limit"},
            "modified_param": "since",
            "key_param": "ids",
            **extra,
        }
    )


SYNC = models.SyncConfig.model_validate(
    {
        "from": {"connection": "api", "resource": "items"},
        "to": {"connection": "db", "table": "items"},
        "key": {"from": "id", "to": "id"},
        "fields": {"name": "name"},
        "changes": {"method": "watermark", "column": "updated_at"},
    }
)


@pytest.fixture
def served() -> Iterator[Callable[[Items], FaultServer]]:
    servers: list[FaultServer] = []

    def start(app: Items) -> FaultServer:
        server = FaultServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.__exit__(None, None, None)


@pytest.mark.parametrize("style", ["page", "offset", "cursor", "link"])
@pytest.mark.parametrize("n", [23, 25])
def test_every_paging_style_reads_everything_once(
    served: Callable[[Items], FaultServer], style: str, n: int
) -> None:
    server = served(Items(n, style))
    source = RestSource(open_handle("api", connection(server.url, style)), "items", SYNC, "updated_at")
    rows = [r for batch in source.stream(["id"], [], None, 7) for r in batch]
    assert [r["id"] for r in rows] == list(range(n))
    assert rows[3]["updated_at"] == T0 + dt.timedelta(minutes=3)  # a time, naive UTC
    pages = len(server.log)
    if style in ("page", "offset"):  # until a short page: one more when n fills the last page
        assert pages == n // 5 + 1
    else:
        assert pages == math.ceil(n / 5)


def test_incremental_filter_is_inclusive_and_bounded(served: Callable[[Items], FaultServer]) -> None:
    server = served(Items(23, "page"))
    source = RestSource(open_handle("api", connection(server.url, "page")), "items", SYNC, "updated_at")
    col = source.col("updated_at")
    lower, upper = T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=14)
    rows = [
        r for b in source.stream(["updated_at", "id"], [col >= lower, col <= upper], None, 100) for r in b
    ]
    assert [r["id"] for r in rows] == [10, 11, 12, 13, 14]
    assert "since=2026-03-01T08%3A10%3A00" in server.log[0].path
    after = [T0 + dt.timedelta(minutes=12), 12]  # the keyset position of a resumed run
    rows = [r for b in source.stream(["updated_at", "id"], [col >= lower], after, 100) for r in b]
    assert [r["id"] for r in rows][:2] == [13, 14]


def test_read_keys(served: Callable[[Items], FaultServer]) -> None:
    server = served(Items(23, "page"))
    source = RestSource(open_handle("api", connection(server.url, "page")), "items", SYNC, "updated_at")
    rows = source.read_keys([(3,), (17,), (99,)])
    assert sorted(r["id"] for r in rows) == [3, 17]
    assert "ids=3%2C17%2C99" in server.log[0].path


SHEET = """
version: 1
connections:
  api:
    kind: rest
    base_url: "{url}"
    auth: {{type: bearer, token: "${{API_TOKEN}}"}}
    paging: {{style: link, size: 5, items: data, size_param: limit}}
    modified_param: since
  db: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: api, resource: items}}
    to: {{connection: db, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: updated_at, lag: 0s}}
"""


def test_rest_to_sql_end_to_end(
    served: Callable[[Items], FaultServer], sqlite_database: Any, tmp_path: Path
) -> None:
    app = Items(12, "link")
    server = served(app)
    dst = sqlite_database()
    h.execute(dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    (tmp_path / "sheet.yaml").write_text(SHEET.format(url=server.url, dst=dst))
    loaded = loader.load(tmp_path / "sheet.yaml", env={"API_TOKEN": "t0k3n"})
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)
    try:
        assert engine.run("items", "seed").counts.written == 12
        assert dict(h.query(dst, "SELECT id, name FROM items"))[7] == "item 7"
        # the seed's watermark is "now": move two rows past it
        time.sleep(0.01)
        later = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        for i in (4, 9):
            app.rows[i] = {**app.rows[i], "name": f"new {i}", "updated_at": later.isoformat() + "Z"}
        report = engine.run("items", "run")
        assert report.status == "success" and report.counts.written == 2
        names = dict(h.query(dst, "SELECT id, name FROM items"))
        assert names[4] == "new 4" and names[9] == "new 9"
        # again: the same two are re-read (>= is inclusive) and skipped as unchanged
        again = engine.run("items", "run")
        assert again.counts.written == 0 and again.counts.read == 2 and again.counts.skipped == 2
    finally:
        engine.close()
        store.close()


def test_an_api_that_ignores_the_page_number_is_stopped(served: Callable[[Items], FaultServer]) -> None:
    from mapsync import errors

    app = Items(12, "page")
    app.style = "offset"  # the server now ignores `page`: every page is the first
    server = served(app)
    source = RestSource(open_handle("api", connection(server.url, "page")), "items", SYNC, "updated_at")
    with pytest.raises(errors.TransientError, match="repeats"):
        list(source.stream(["id"], [], None, 100))
    assert len(server.log) == 2
