"""Source shapes and cursor time zones: a query as the source, aware and naive timestamp columns."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mapsync import errors
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h


def _sheet(
    folder: Path, src: str, dst: str, source: str, changes: str, extra: str = ""
) -> loader.LoadedSheet:
    (folder / "sheet.yaml").write_text(f"""
version: 1
connections:
  erp: {{url: "{src}"{extra}}}
  portal: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, {source}}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    changes: {changes}
    delivery: {{batch: 3}}
    fields: {{nm: descr}}
""")
    return loader.load(folder / "sheet.yaml")


def _run(loaded: loader.LoadedSheet, kind: str) -> tuple[int, int]:
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=kind == "seed")
    engine = Engine(loaded, store)
    try:
        report = engine.run("items", kind)
    finally:
        engine.close()
        store.close()
    assert report.status == "success", report.message
    return report.counts.read, report.counts.written


def test_a_query_is_a_source(database: Callable[[], str], tmp_path: Path) -> None:
    src, dst = database(), database()
    ts = h.TS[h.dialect(src)]
    h.execute(
        src,
        f"CREATE TABLE items (sku VARCHAR(10) PRIMARY KEY, descr VARCHAR(50), kind VARCHAR(5), last_modified {ts})",
    )
    h.execute(dst, "CREATE TABLE products (sku VARCHAR(10) PRIMARY KEY, nm VARCHAR(60))")
    h.execute(
        src,
        "INSERT INTO items VALUES (:s, :d, :k, '2026-01-01 10:00:00')",
        params=[{"s": f"S{i}", "d": f"item {i}", "k": "A" if i % 2 else "B"} for i in range(10)],
    )
    query = "query: \"SELECT sku, UPPER(descr) AS descr, last_modified FROM items WHERE kind = 'A'\""
    loaded = _sheet(tmp_path, src, dst, query, "{method: watermark, column: last_modified, lag: 0s}")
    assert _run(loaded, "seed") == (5, 5)
    assert sorted(h.query(dst, "SELECT sku, nm FROM products")) == [
        (f"S{i}", f"ITEM {i}") for i in (1, 3, 5, 7, 9)
    ]
    # the query's columns are checked like a table's
    bad = _sheet(tmp_path, src, dst, 'query: "SELECT sku FROM items"', "{method: full}")
    store = StateStore.open(bad.sheet.state.url, bad.folder, create=False)
    with pytest.raises(errors.ConfigError, match=r"no column.*descr"):
        Engine(bad, store).parts("items")
    store.close()


def test_timestamptz_cursor_on_postgresql(pg_database: Callable[[], str], tmp_path: Path) -> None:
    src, dst = pg_database(), pg_database()
    h.execute(src, "CREATE TABLE items (sku VARCHAR(10) PRIMARY KEY, descr TEXT, last_modified TIMESTAMPTZ)")
    h.execute(dst, "CREATE TABLE products (sku VARCHAR(10) PRIMARY KEY, nm TEXT)")
    loaded = _sheet(tmp_path, src, dst, "table: items", "{method: watermark, column: last_modified, lag: 0s}")
    assert _run(loaded, "seed") == (0, 0)
    # rows written in a session of another zone: the instant is what counts
    h.execute(src, "SET TIME ZONE 'Asia/Kolkata'", "INSERT INTO items VALUES ('A', 'a', clock_timestamp())")
    assert _run(loaded, "run") == (1, 1)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=False)
    mark = store.cursor("items", "watermark")
    store.close()
    assert isinstance(mark, dt.datetime) and mark.tzinfo is not None  # kept aware, exactly as read
    # a new row at exactly the stored instant (lower key) is still delivered
    h.execute(src, "INSERT INTO items VALUES ('0', 'zero', :t)", params={"t": mark})
    assert _run(loaded, "run") == (2, 1)


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_naive_column_in_a_declared_zone(database: Callable[[], str], tmp_path: Path, zone: str) -> None:
    """The upper bound (source clock − lag) is computed in the column's zone: a row written in
    local time just now is read, whatever zone the server or this process runs in."""
    src, dst = database(), database()
    ts = h.TS[h.dialect(src)]
    h.execute(src, f"CREATE TABLE items (sku VARCHAR(10) PRIMARY KEY, descr VARCHAR(20), last_modified {ts})")
    h.execute(dst, "CREATE TABLE products (sku VARCHAR(10) PRIMARY KEY, nm VARCHAR(20))")
    changes = f"{{method: watermark, column: last_modified, lag: 0s, timezone: {zone}}}"
    loaded = _sheet(tmp_path, src, dst, "table: items", changes)
    assert _run(loaded, "seed") == (0, 0)
    from zoneinfo import ZoneInfo

    time.sleep(0.01)  # the seed recorded "now" as the watermark: stamp the row just after it
    local = dt.datetime.now(ZoneInfo(zone)).replace(tzinfo=None)
    text = local.strftime("%Y-%m-%d %H:%M:%S.%f")
    h.execute(src, "INSERT INTO items VALUES ('L', 'local', :t)", params={"t": text})
    assert _run(loaded, "run") == (1, 1)
    # and a row stamped an hour in the local future is not read yet (it is beyond the upper bound)
    ahead = (local + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    h.execute(src, "INSERT INTO items VALUES ('F', 'future', :t)", params={"t": ahead})
    assert _run(loaded, "run") == (1, 0)
