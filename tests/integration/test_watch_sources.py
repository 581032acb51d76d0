"""The facts `watch_sources` gathers from real sources, and the monitors over them: a trigger
queue's backlog and oldest pending row, a DISABLED trigger (PostgreSQL) and missing ones
(MariaDB), a replication slot's retained WAL, the watermark facts, a source going backwards
(newest rows deleted, an older copy restored), clock skew measured against real servers, the
state store's side (unmapped values, async batches, call budgets, failing channels, disk), and a
source that cannot be reached (facts left out, nothing raised, no secret logged)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import watch_environment
from mapsync import watch_sources as ws
from mapsync.capture import queue_admin, triggers
from mapsync.monitors import evaluate_sheet, evaluate_sync
from mapsync.monitors.facts import SheetFacts, SyncFacts
from mapsync.rest.budget import Budget
from mapsync.sheet import loader
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.monitor_models import resolve
from mapsync.state import schema
from mapsync.state.data import Finding
from mapsync.state.store import StateStore
from tests import helpers as h
from tests.integration.capture.test_health import _need_logical, slot  # noqa: F401  (the fixture)

UTC = dt.UTC


def _load(folder: Path, text: str, env: dict[str, str] | None = None) -> LoadedSheet:
    (folder / "sheet.yaml").write_text(text)
    return loader.load(folder / "sheet.yaml", env=env)


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """Stores and handles dicts a test opened, closed at its end."""
    things: list[Any] = []
    yield things
    for thing in things:
        if isinstance(thing, dict):
            ws.release(thing)
            for handle in thing.values():
                handle.close()
        else:
            thing.close()


def _store(loaded: LoadedSheet, opened: list[Any]) -> StateStore:
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    opened.append(store)
    return store


def _sync_findings(loaded: LoadedSheet, sync: str, extra: dict[str, Any], name: str) -> list[Finding] | None:
    cfg = loaded.sheet.syncs[sync]
    t = resolve(loaded.sheet.monitors, cfg.monitors)
    return evaluate_sync(SyncFacts(sync, cfg, t, dt.datetime.now(UTC), extra=extra))[name]


def _sheet_findings(loaded: LoadedSheet, extra: dict[str, Any], name: str) -> list[Finding] | None:
    return evaluate_sheet(SheetFacts(dt.datetime.now(UTC), resolve(loaded.sheet.monitors), extra=extra))[name]


# --------------------------------------------------------------------------- trigger queues

QUEUE_SHEET = """
version: 1
monitors: {{backlog_rows: 2}}
connections:
  erp: {{url: "{src}"}}
  shop: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, table: items_dst}}
    key: {{from: id, to: item_id}}
    fields: {{title: name}}
    changes: {{method: queue}}
    deletes: {{policy: hard}}
"""


def _queue_world(src: str, dst: str, folder: Path, install: bool) -> LoadedSheet:
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL)")
    h.execute(dst, "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title VARCHAR(50) NOT NULL)")
    loaded = _load(folder, QUEUE_SHEET.format(src=src, dst=dst))
    if install:
        (queue,) = queue_admin.queues(loaded, ["items"])
        db = queue_admin.connect(loaded, "erp")
        try:
            statements = triggers.install_statements(
                db.dialect or "", queue.table, queue_admin.targets(queue, db), queue.archive
            )
            queue_admin.execute(db, statements)
        finally:
            db.close()
    return loaded


def test_queue_backlog_and_a_disabled_trigger_on_postgresql(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path, opened: list[Any]
) -> None:
    src = pg_database()
    loaded = _queue_world(src, sqlite_database(), tmp_path, install=True)
    store = _store(loaded, opened)
    handles: dict[str, Any] = {}
    opened.append(handles)

    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["queue_table"] is True and extra["triggers"] == "installed"
    assert extra["triggers_disabled"] == 0 and extra["backlog_rows"] == 0
    assert "oldest_pending_s" not in extra and extra["source_rows"] == 0
    assert _sync_findings(loaded, "items", extra, "capture_health") == []
    assert _sync_findings(loaded, "items", extra, "backlog") == []

    h.execute(
        src, "INSERT INTO items VALUES (:id, :name)", params=[{"id": i, "name": f"n{i}"} for i in range(3)]
    )
    time.sleep(0.05)
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["backlog_kind"] == "queue" and extra["backlog_rows"] == 3
    assert 0.04 <= extra["oldest_pending_s"] < 30
    (backlog,) = _sync_findings(loaded, "items", extra, "backlog") or []
    assert "3 pending row(s)" in backlog.message and backlog.subject == "queue"
    seen = store.observations.observations("items")
    assert seen[("items", "backlog_rows")][0] == 3 and seen[("items", "lag_s")][0] >= 0.04

    (name,) = [n for (n,) in h.query(src, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")]
    h.execute(src, f'ALTER TABLE items DISABLE TRIGGER "{name}"')
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["triggers"] == "installed" and extra["triggers_disabled"] == 1
    (found,) = _sync_findings(loaded, "items", extra, "capture_health") or []
    assert found.subject == "triggers" and "1 trigger(s) disabled" in found.message
    assert handles[ws.OPENED] == {"erp"}  # opened once, reused by every call


@pytest.mark.mariadb
def test_missing_then_partial_triggers_on_mariadb(
    mariadb_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path, opened: list[Any]
) -> None:
    src = mariadb_database()
    loaded = _queue_world(src, sqlite_database(), tmp_path, install=False)
    store = _store(loaded, opened)
    handles: dict[str, Any] = {}
    opened.append(handles)
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["queue_table"] is False and extra["triggers"] == "missing"
    assert "backlog_rows" not in extra
    found = _sync_findings(loaded, "items", extra, "capture_health") or []
    assert [f.subject for f in found] == ["queue", "triggers"]

    _queue_world_install(loaded)
    h.execute(src, "INSERT INTO items VALUES (1, 'one')")
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["queue_table"] is True and extra["triggers"] == "installed" and extra["backlog_rows"] == 1
    assert _sync_findings(loaded, "items", extra, "capture_health") == []
    trigger = h.query(src, "SHOW TRIGGERS")[0][0]
    h.execute(src, f"DROP TRIGGER `{trigger}`")
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["triggers"] == "partial" and extra["triggers_disabled"] == 0
    (found_one,) = _sync_findings(loaded, "items", extra, "capture_health") or []
    assert "triggers partial" in found_one.message


def _queue_world_install(loaded: LoadedSheet) -> None:
    (queue,) = queue_admin.queues(loaded, ["items"])
    db = queue_admin.connect(loaded, "erp")
    try:
        queue_admin.execute(
            db,
            triggers.install_statements(db.dialect or "", queue.table, queue_admin.targets(queue, db), False),
        )
    finally:
        db.close()


# --------------------------------------------------------------------------- the change log

LOG_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  shop: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, table: items_dst}}
    key: {{from: id, to: item_id}}
    fields: {{title: name}}
    changes: {{method: log, slot: {slot}, plugin: test_decoding}}
    deletes: {{policy: hard}}
    monitors: {{wal_retained_mb: 1}}
"""


@pytest.mark.changelog
def test_slot_missing_then_retaining_wal(
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
    slot: str,  # noqa: F811  (the fixture imported above)
    opened: list[Any],
) -> None:
    src = pg_database()
    _need_logical(src)
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    loaded = _load(tmp_path, LOG_SHEET.format(src=src, dst=sqlite_database(), slot=slot))
    store = _store(loaded, opened)
    handles: dict[str, Any] = {}
    opened.append(handles)
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["slot_state"] == "missing" and "wal_retained_mb" not in extra
    assert [f.subject for f in _sync_findings(loaded, "items", extra, "capture_health") or []] == ["slot"]

    h.query(src, f"SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'test_decoding')")
    h.execute(
        src,
        "INSERT INTO items VALUES (:id, :name)",
        params=[{"id": i, "name": "x" * 2000} for i in range(1000)],  # ~2 MB of WAL
    )
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["slot_state"] == "ok" and extra["wal_retained_mb"] > 1
    (found,) = _sync_findings(loaded, "items", extra, "capture_health") or []
    assert found.subject == "wal" and "above 1 MB" in found.message
    assert store.observations.observations("items")[("items", "wal_retained_mb")][0] > 1


# --------------------------------------------------------------------------- watermark, regression

WATERMARK_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  shop: {{url: "{dst}"}}
syncs:
{syncs}
"""
WATERMARK_SYNC = """
  {name}:
    from: {{connection: erp, table: {table}}}
    to: {{connection: shop, table: items_dst}}
    key: {{from: id, to: item_id}}
    fields: {{title: name}}
    changes: {{method: watermark, column: updated_at, lag: 0s}}
"""


def _watermark_sheet(src: str, dst: str, folder: Path, tables: list[str]) -> LoadedSheet:
    syncs = "".join(WATERMARK_SYNC.format(name=f"s_{t}", table=t) for t in tables)
    return _load(folder, WATERMARK_SHEET.format(src=src, dst=dst, syncs=syncs))


def _fill(src: str, table: str, n: int, newest: dt.datetime) -> None:
    h.execute(
        src, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT, updated_at TIMESTAMPTZ NOT NULL)"
    )
    rows = [{"id": i, "name": f"n{i}", "at": newest - dt.timedelta(hours=n - 1 - i)} for i in range(n)]
    if rows:
        h.execute(src, f"INSERT INTO {table} VALUES (:id, :name, :at)", params=rows)


def test_watermark_facts_and_a_source_going_backwards(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path, opened: list[Any]
) -> None:
    src = pg_database()
    newest = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    _fill(src, "items", 20, newest)
    loaded = _watermark_sheet(src, sqlite_database(), tmp_path, ["items"])
    store = _store(loaded, opened)
    cursor = newest - dt.timedelta(hours=5)
    store.set_cursors("s_items", {"watermark": cursor})
    handles: dict[str, Any] = {}
    opened.append(handles)

    before = dt.datetime.now(UTC)
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert extra["source_newest"] == newest and extra["cursor_at"] == cursor
    assert abs((extra["source_now"] - before).total_seconds()) < 5 and extra["source_rows"] == 20
    assert "source_newest_seen" not in extra  # the first look: nothing to compare with
    assert _sync_findings(loaded, "s_items", extra, "source_regression") is None
    seen = store.observations.observations("s_items")
    assert seen[("s_items", "lag_s")][0] > 0 and seen[("s_items", "source_rows")][0] == 20

    # the newest two rows deleted: the newest change goes back, and stays back at the next look
    h.execute(src, "DELETE FROM items WHERE id >= 18")
    for _ in range(2):
        extra = ws.sync_extra(loaded, store, "s_items", handles)
        assert extra["source_newest"] == newest - dt.timedelta(hours=2)
        assert extra["source_newest_seen"] == newest
        (found,) = _sync_findings(loaded, "s_items", extra, "source_regression") or []
        assert found.subject == "newest" and found.numbers["behind_s"] == 7200.0

    # an older copy restored: fewer rows, older ones
    h.execute(src, "DROP TABLE items")
    _fill(src, "items", 5, newest - dt.timedelta(days=3))
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert extra["source_rows"] == 5 and extra["source_rows_ref"] == 18
    found_both = _sync_findings(loaded, "s_items", extra, "source_regression") or []
    assert sorted(f.subject for f in found_both) == ["newest", "rows"]

    # the source moves on past the newest seen: that part clears (the rows stay below the reference)
    h.execute(
        src, "INSERT INTO items VALUES (100, 'new', :at)", params={"at": newest + dt.timedelta(hours=1)}
    )
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert [f.subject for f in _sync_findings(loaded, "s_items", extra, "source_regression") or []] == [
        "rows"
    ]


def test_ten_syncs_share_one_connection(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path, opened: list[Any]
) -> None:
    src = pg_database()
    tables = [f"t{i}" for i in range(10)]
    for t in tables:
        _fill(src, t, 50, dt.datetime(2026, 11, 30, tzinfo=UTC))
    loaded = _watermark_sheet(src, sqlite_database(), tmp_path, tables)
    store = _store(loaded, opened)
    handles: dict[str, Any] = {}
    opened.append(handles)
    for name in loaded.sheet.syncs:  # the speed of this is bench/watch.py's, not a test's
        assert ws.sync_extra(loaded, store, name, handles)["source_rows"] == 50
    ws.sheet_extra(loaded, store, handles)
    assert handles[ws.OPENED] == {"erp"}  # one source connection for the ten syncs


# --------------------------------------------------------------------------- clocks

CLOCK_SHEET = """
version: 1
state: {{url: "{state}"}}
connections:
  erp: {{url: "{pg}"}}
  crm: {{url: "{maria}"}}
  local: {{url: "{lite}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: local, table: items_dst}}
    key: {{from: id, to: item_id}}
    fields: {{title: name}}
    changes: {{method: full}}
"""


@pytest.mark.mariadb
def test_clock_skew_against_real_servers(
    pg_database: Callable[[], str],
    mariadb_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
    opened: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = CLOCK_SHEET.format(
        state=pg_database(), pg=pg_database(), maria=mariadb_database(), lite=sqlite_database()
    )
    loaded = _load(tmp_path, text)
    store = _store(loaded, opened)
    handles: dict[str, Any] = {}
    opened.append(handles)
    extra = ws.sheet_extra(loaded, store, handles)
    assert set(extra["clocks"]) == {"state", "erp", "crm"}  # SQLite is this host's clock
    assert all(abs(s) < 2 for s in extra["clocks"].values()), extra["clocks"]
    assert "disk_free_mb" not in extra  # a PostgreSQL store
    assert _sheet_findings(loaded, extra, "clock_skew") == []

    # this host's clock ten minutes ahead (as `faketime -f +600s` would): every database is behind
    monkeypatch.setattr(watch_environment, "_clock", lambda: time.time() + 600)
    extra = ws.sheet_extra(loaded, store, handles)
    assert all(-602 < s < -598 for s in extra["clocks"].values()), extra["clocks"]
    found = _sheet_findings(loaded, extra, "clock_skew") or []
    assert [f.subject for f in found] == ["crm", "erp", "state"]
    assert all("behind this host's" in f.message for f in found)


# --------------------------------------------------------------------------- the store's side

STORE_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  api:
    kind: rest
    base_url: "http://127.0.0.1:9/api"
    auth: {{type: bearer, token: "${{API_TOKEN}}"}}
    budget: ["2/1m"]
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: api, resource: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
"""


def test_the_state_stores_facts(
    sqlite_database: Callable[[], str], tmp_path: Path, opened: list[Any]
) -> None:
    src = sqlite_database()
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    loaded = _load(tmp_path, STORE_SHEET.format(src=src), env={"API_TOKEN": "tok-s3cret-value"})
    store = _store(loaded, opened)
    handles: dict[str, Any] = {}
    opened.append(handles)

    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["unmapped"] == [] and extra["async_created"] == []
    assert extra["budgets"] == {
        "api": {"remaining": 2, "server_remaining": None, "blocked_for": 0.0, "side": "destination"}
    }
    assert _sync_findings(loaded, "items", extra, "budget_low") == []

    # the server asked for a pause, and the budget's two calls are taken: the connection is named
    budget = handles["api"].budget
    assert isinstance(budget, Budget)
    shared = budget.with_store(store)
    shared.acquire()
    shared.acquire()
    now_us = int(time.time() * 1_000_000)
    store.budget_tighten(shared.key, now_us + 60_000_000, (0, now_us + 60_000_000))
    extra = ws.sync_extra(loaded, store, "items", handles)
    b = extra["budgets"]["api"]
    assert b["remaining"] == 0 and b["server_remaining"] == 0 and 55 < b["blocked_for"] <= 60
    (found,) = _sync_findings(loaded, "items", extra, "budget_low") or []
    assert found.subject == "api" and found.failure_class == "destination"
    assert "s3cret" not in found.message and shared.key not in found.message

    # two unmapped values of one field blocking 5 records, one of another; an unsettled batch
    u = schema.unmapped
    with store.engine.begin() as conn:
        for field, value, count, first in (
            ("country", "Atlantis", 3, 1),
            ("country", "Mu", 2, 2),
            ("vat", "X", 1, 3),
        ):
            at = f"2026-12-0{first}T10:00:00.000000Z"
            conn.execute(
                sa.insert(u).values(
                    sync="items",
                    field=field,
                    rule="map",
                    value=value,
                    count=count,
                    first_seen=at,
                    last_seen=at,
                )
            )
    store.jobs.record("items", [(1,)])
    extra = ws.sync_extra(loaded, store, "items", handles)
    assert extra["unmapped"] == [
        {"field": "country", "values": 2, "records": 5, "newest": dt.datetime(2026, 12, 2, 10, tzinfo=UTC)},
        {"field": "vat", "values": 1, "records": 1, "newest": dt.datetime(2026, 12, 3, 10, tzinfo=UTC)},
    ]
    found_fields = _sync_findings(loaded, "items", extra, "unmapped_new") or []
    assert [f.subject for f in found_fields] == ["country", "vat"]
    assert not any("Atlantis" in f.message or "Mu" in f.message for f in found_fields)
    (created,) = extra["async_created"]
    assert abs((created - dt.datetime.now(UTC)).total_seconds()) < 10

    sheet = ws.sheet_extra(loaded, store, handles)
    assert sheet["store_trouble"] is None and sheet["channel_failures"] == {}
    assert sheet["clocks"] == {} and sheet["disk_free_mb"] > 0
    assert store.observations.observations("*")[("*", "disk_free_mb")][0] > 0
    assert _sheet_findings(loaded, sheet, "disk_free") is not None


def test_failing_channels_counted_in_a_row(
    tmp_path: Path, sqlite_database: Callable[[], str], opened: list[Any]
) -> None:
    src = sqlite_database()
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    loaded = _load(tmp_path, STORE_SHEET.format(src=src), env={"API_TOKEN": "t"})
    store = _store(loaded, opened)
    for i in range(4):
        finding = Finding("backlog", "items", "warning", "tool", f"backlog {i}", subject=f"s{i}")
        store.incidents.raise_incident(finding, ["ops", "chat"])
    claimed = store.incidents.claim_notifications("me", dt.timedelta(minutes=1), 100)
    for n in sorted(claimed, key=lambda n: n.id):
        if n.channel == "chat" and n.incident_id > 1:
            store.incidents.notification_sent(n.id, "me")
        else:  # ops fails every time; chat failed only its oldest
            store.incidents.notification_failed(n.id, "me", "refused", None)
    sheet = ws.sheet_extra(loaded, store, {})
    assert sheet["channel_failures"] == {"ops": 4, "chat": 0}
    (found,) = (
        _sheet_findings(loaded, dict(sheet, channel_failures={"ops": 5, "chat": 0}), "channel_failing") or []
    )
    assert found.subject == "ops"


# --------------------------------------------------------------------------- unreachable

DOWN_SHEET = """
version: 1
connections:
  erp: {url: "postgresql://sync:${PGPASSWORD}@127.0.0.1:1/nowhere"}
  shop: {url: "sqlite:///shop.db"}
syncs:
  items:
    from: {connection: erp, table: items}
    to: {connection: shop, table: items_dst}
    key: {from: id, to: item_id}
    fields: {title: name}
    changes: {method: queue}
    deletes: {policy: hard}
"""


def test_an_unreachable_source_leaves_its_facts_out(
    tmp_path: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    h.execute(
        f"sqlite:///{tmp_path / 'shop.db'}",
        "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title TEXT)",
    )
    loaded = _load(tmp_path, DOWN_SHEET, env={"PGPASSWORD": "pw-s3cret-xyz"})
    store = _store(loaded, opened)
    handles: dict[str, Any] = {}
    opened.append(handles)
    caplog.set_level(logging.DEBUG, logger="mapsync.watch")
    started = time.perf_counter()
    extra = ws.sync_extra(loaded, store, "items", handles)
    sheet = ws.sheet_extra(loaded, store, handles)
    assert time.perf_counter() - started < 10
    assert set(extra) == {"unmapped", "async_created"}  # nothing of the source
    assert "erp" not in sheet["clocks"]
    assert _sync_findings(loaded, "items", extra, "capture_health") is None
    assert "could not be read" in caplog.text and "pw-s3cret-xyz" not in caplog.text


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def naive_src(request: pytest.FixtureRequest) -> str:
    factory: Callable[[], str] = request.getfixturevalue(f"{request.param}_database")
    return factory()


def test_watermark_facts_of_a_naive_column(
    naive_src: str, sqlite_database: Callable[[], str], tmp_path: Path, opened: list[Any]
) -> None:
    """SQLite (text in mixed forms) and MariaDB (DATETIME): naive times read in UTC (`timezone:`
    default on SQLite; MariaDB's session is UTC) come back as aware UTC."""
    text = "TEXT" if h.dialect(naive_src) == "sqlite" else "DATETIME(6)"
    h.execute(
        naive_src, f"CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, updated_at {text} NOT NULL)"
    )
    h.execute(
        naive_src,
        "INSERT INTO items VALUES (:id, 'x', :at)",
        params=[
            {"id": 1, "at": "2026-11-30 10:00:00"},
            {"id": 2, "at": "2026-11-30 11:30:00.250000"},
            {"id": 3, "at": "2026-11-29 23:00:00"},
        ],
    )
    loaded = _watermark_sheet(naive_src, sqlite_database(), tmp_path, ["items"])
    store = _store(loaded, opened)
    store.set_cursors("s_items", {"watermark": "2026-11-30 10:00:00"})
    handles: dict[str, Any] = {}
    opened.append(handles)
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert extra["source_newest"] == dt.datetime(2026, 11, 30, 11, 30, 0, 250000, tzinfo=UTC)
    assert extra["cursor_at"] == dt.datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert extra["source_rows"] == 3 and abs((extra["source_now"] - dt.datetime.now(UTC)).total_seconds()) < 5
    h.execute(naive_src, "DELETE FROM items WHERE id = 2")
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert extra["source_newest_seen"] == dt.datetime(2026, 11, 30, 11, 30, 0, 250000, tzinfo=UTC)
    found = _sync_findings(loaded, "s_items", extra, "source_regression") or []
    assert sorted(f.subject for f in found) == ["newest", "rows"]  # 3 rows to 2: more than 10 %
    if text != "TEXT":
        return
    # SQLite reads only the rows near or after the watermark for the newest (see ts_since): a row
    # whose local text is hours below it, with its offset, is found there; with none at or after
    # the watermark left, the whole table is read, and the newest is older than the watermark
    h.execute(naive_src, "INSERT INTO items VALUES (4, 'x', '2026-11-30 02:00:00-09:00')")  # 11:00Z
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert extra["source_newest"] == dt.datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
    h.execute(naive_src, "DELETE FROM items WHERE id IN (1, 4)")
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert extra["source_newest"] == dt.datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    # near the watermark only an older row with an offset (05:00Z); the newest (09:00Z) is not near
    h.execute(naive_src, "INSERT INTO items VALUES (5, 'x', '2026-11-30 00:00:00-05:00')")
    h.execute(naive_src, "INSERT INTO items VALUES (6, 'x', '2026-11-30 09:00:00')")
    extra = ws.sync_extra(loaded, store, "s_items", handles)
    assert extra["source_newest"] == dt.datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.mark.slow
def test_an_unreachable_state_store_is_seen_as_store_trouble(
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
    opened: list[Any],
    fault_proxy: Callable[[str, int], Any],
) -> None:
    """The store goes away while the facts are gathered: `store_trouble` says why (after the
    store's own retries, ~4 s), `state_store` finds it, and the message holds no URL."""
    from mapsync.testing.fault_proxy import proxied_url, target_of

    real = pg_database()
    proxy = fault_proxy(*target_of(real))
    src = sqlite_database()
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    text = STORE_SHEET.format(src=src).replace(
        "version: 1\n", f'version: 1\nstate: {{url: "{proxied_url(real, proxy)}"}}\n'
    )
    loaded = _load(tmp_path, text, env={"API_TOKEN": "t"})
    store = _store(loaded, opened)
    assert ws.sheet_extra(loaded, store, {})["store_trouble"] is None
    proxy.close()  # the server can no longer be reached
    extra = ws.sheet_extra(loaded, store, {})
    assert extra["store_trouble"] in ("unreachable", "cut")
    (found,) = _sheet_findings(loaded, extra, "state_store") or []
    assert found.message.startswith("the state store ") and "127.0.0.1" not in found.message
