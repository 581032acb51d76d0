"""The breaker against a real HTTP server that answers 422 to every write: SQLite → REST seed
of 5 batches of 10 records, 5 records per call. The run fails (class `destination`) after 3
refused batches with a bounded number of requests (the first batch bisected in full: 2 × 9, then
one request per call: 2 + 2); the cursor stays after batch 2. A healthy server then gets every
record: the seed goes on from batch 3 and `retry` re-sends the record errors of batches 1–2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.testing.fault_server import FaultServer, Reply, Request
from tests import helpers as h

SHEET = """
version: 1
connections:
  db: {{url: "{src}"}}
  api:
    kind: rest
    base_url: "{url}"
    auth: {{type: api_key, header: X-Key, value: "k-123"}}
    write: {{batch: 5, results: results}}
syncs:
  things:
    from: {{connection: db, table: things}}
    to: {{connection: api, resource: things}}
    key: {{from: id, to: code}}
    fields: {{name: name}}
    changes: {{method: full}}
    delivery: {{batch: 10}}
"""


class Api:
    """POST /things: 422 to everything while `down`, else upserts by `code`."""

    def __init__(self) -> None:
        self.down = True
        self.things: dict[str, dict[str, Any]] = {}

    def __call__(self, req: Request) -> Reply:
        if self.down:
            return Reply(422, {"error": "validation failed"})
        items = req.json()
        for item in items:
            self.things[item["code"]] = item
        return Reply(200, {"results": [{"ok": True} for _ in items]})


def test_an_api_refusing_everything_trips_the_breaker(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src = sqlite_database()
    h.execute(src, "CREATE TABLE things (id VARCHAR(10) PRIMARY KEY, name VARCHAR(20))")
    h.execute(
        src,
        "INSERT INTO things VALUES (:i, :n)",
        params=[{"i": f"t{i:02d}", "n": f"n{i}"} for i in range(50)],
    )
    api = Api()
    with FaultServer(api) as server:
        (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, url=server.url))
        loaded = loader.load(tmp_path / "sheet.yaml", env={})
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
        engine = Engine(loaded, store)
        try:
            report = engine.run("things", "seed")
            assert (report.status, report.failure_class) == ("failed", "destination")
            assert report.message == (
                "sync things: destination refused 100 % of 30 records in 3 batches in a row: "
                "stopped (delivery.breaker)"
            )
            assert len(server.requests("POST", "/things")) == 2 * 9 + 2 + 2  # bounded
            (row,) = store.history.runs("things", 1)
            assert (row["status"], row["failure_class"]) == ("failed", "destination")
            assert store.cursors("things")["seed"]["after"] is not None  # after batch 2
            assert len(store.open_error_keys("things")) == 20  # batches 1 and 2; batch 3 uncommitted
            api.down = False
            assert engine.run("things", "seed").counts.written == 30  # goes on from batch 3
            assert engine.retry("things").counts.written == 20
            assert sorted(api.things) == [f"t{i:02d}" for i in range(50)]
            assert store.open_error_keys("things") == []
        finally:
            engine.close()
            store.close()
