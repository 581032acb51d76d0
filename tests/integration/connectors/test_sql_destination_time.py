"""Aware values written into naive timestamp columns (issue 9 item 12).

`cast: datetime` of `2020-01-01 00:00:02.750000+02:00` is one instant; a naive column stores it
in the zone mapsync resolves for the column (here the connection's `timezone: Europe/Berlin`:
2020-01-01 00:00:02.75 local is 23:00:02.75 the day before in Berlin), identically on every
write path: PostgreSQL's COPY into an empty table (seed), COPY → temp table → upsert (large
batches), and the `executemany` upsert; MariaDB's multi-row upsert; SQLite. A second-precision
column (DATETIME(0) / timestamp(0)) keeps the seconds (cut, never rounded) and the cut fraction
is counted as a truncation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync import records, transforms
from mapsync.connectors.sql import SqlDatabase
from mapsync.connectors.sql_destination import COPY_THRESHOLD, SqlDestination
from mapsync.engine import Engine
from mapsync.mapping import constraint_check
from mapsync.sheet import loader, models
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}", timezone: Europe/Berlin}}
syncs:
  ev:
    from: {{connection: src, table: ev}}
    to: {{connection: dst, table: ev}}
    key: {{from: id, to: id}}
    fields:
      at: {{from: at, cast: datetime}}
      at0: {{from: at, cast: datetime}}
    changes: {{method: full}}
"""

COLUMNS = {
    "sqlite": ("TIMESTAMP", "TIMESTAMP"),
    "postgresql": ("TIMESTAMP(6)", "TIMESTAMP(0)"),
    "mysql": ("DATETIME(6)", "DATETIME(0)"),
}


def stored(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_aware_values_land_in_the_columns_zone_on_every_write_path(
    database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = sqlite_database(), database()
    dialect = h.dialect(dst)
    full, seconds = COLUMNS[dialect]
    h.execute(src, "CREATE TABLE ev (id INTEGER PRIMARY KEY, at TEXT)")
    h.execute(dst, f"CREATE TABLE ev (id INTEGER PRIMARY KEY, at {full}, at0 {seconds})")
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    loaded = loader.load(tmp_path / "sheet.yaml")
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)

    def write(ids: range, local: str, kind: str = "run") -> dict[str, Any]:
        h.execute(src, "DELETE FROM ev")
        h.execute(src, "INSERT INTO ev (id, at) VALUES (:i, :t)", params=[{"i": i, "t": local} for i in ids])
        report = engine.run("ev", kind)
        assert report.status == "success", report
        return {**dataclasses.asdict(report.counts), "by_field": report.truncated}

    def check(ids: range, expected: dt.datetime) -> None:
        rows = h.query(dst, f"SELECT id, at, at0 FROM ev WHERE id >= {ids.start} AND id < {ids.stop}")
        assert len(rows) == len(ids)
        for _id, at, at0 in rows:
            assert stored(at) == expected, (dialect, _id, at)
            kept = expected if dialect == "sqlite" else expected.replace(microsecond=0)
            assert stored(at0) == kept, (dialect, _id, at0)

    try:
        # 1. a seed into the empty table (PostgreSQL: COPY straight in)
        first = range(0, 3)
        report = write(first, "2020-01-01 00:00:02.750000+02:00", "seed")
        check(first, dt.datetime(2019, 12, 31, 23, 0, 2, 750000))  # noqa: DTZ001
        if dialect != "sqlite":  # SQLite keeps every fraction: nothing cut
            assert report["by_field"] == {"at0": 3} and report["truncated"] == 3
        # 2. a large batch of changed rows (PostgreSQL: COPY → temp table → upsert)
        large = range(0, COPY_THRESHOLD + 5)
        write(large, "2020-07-01T00:00:03.5-04:00")  # 04:00:03.5 UTC, 06:00:03.5 in Berlin (CEST)
        check(large, dt.datetime(2020, 7, 1, 6, 0, 3, 500000))  # noqa: DTZ001
        # 3. a small batch (PostgreSQL: executemany upsert; MariaDB and SQLite: their upsert)
        small = range(0, 2)
        report = write(small, "2021-03-01 12:00:04.25Z")
        check(small, dt.datetime(2021, 3, 1, 13, 0, 4, 250000))  # noqa: DTZ001
    finally:
        engine.close()
        store.close()


BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
CFG = models.SyncConfig.model_validate(
    {
        "from": {"connection": "src", "table": "ev"},
        "to": {"connection": "dst", "table": "ev"},
        "key": {"from": "id", "to": "id"},
        "fields": {"at": "at", "at0": "at"},
        "changes": {"method": "full"},
    }
)
AWARE = st.builds(
    lambda m, minutes: m.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))),
    st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1)),  # noqa: DTZ001
    st.integers(-14 * 60, 14 * 60),
)


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_every_path_stores_the_same_wall_time(database: Callable[[], str], tmp_path: Path) -> None:
    """Any aware instant, through the real driver: the fresh path (PostgreSQL COPY straight in)
    and the upsert path store the same Berlin wall time, seconds cut in the (0) column."""
    url = database()
    dialect = h.dialect(url)
    full, seconds = COLUMNS[dialect]
    h.execute(url, f"CREATE TABLE ev (id INTEGER PRIMARY KEY, at {full}, at0 {seconds})")
    db = SqlDatabase("dst", url, tmp_path, timezone="Europe/Berlin")
    dest = SqlDestination(db, "ev", CFG)
    checks = {c: constraint_check(c, dest.columns[c]) for c in ("at", "at0")}

    @settings(max_examples=20)
    @given(st.lists(AWARE, min_size=1, max_size=6))
    def write_and_read(moments: list[dt.datetime]) -> None:
        tally = transforms.Tally()
        batch = []
        for i, moment in enumerate(moments):
            values = {"id": i, "at": checks["at"](moment, tally), "at0": checks["at0"](moment, tally)}
            batch.append(records.Mapped("upsert", (i,), (i,), None, values, {}, records.content_hash(values)))
        stored: dict[str, dict[int, tuple[Any, Any]]] = {}
        for path, fresh in (("fresh", True), ("upsert", False)):
            with db.engine.begin() as conn:  # the destination's own engine: no new connections
                conn.exec_driver_sql("DELETE FROM ev")
            assert not dest.write(batch, fresh=fresh).rejected
            with db.engine.connect() as conn:
                stored[path] = {i: (a, b) for i, a, b in conn.exec_driver_sql("SELECT id, at, at0 FROM ev")}
        assert stored["fresh"] == stored["upsert"]
        for i, moment in enumerate(moments):
            wall = moment.astimezone(BERLIN).replace(tzinfo=None)
            assert stored["fresh"][i] == (wall, wall.replace(microsecond=0))
        assert tally.truncated["at0"] == sum(1 for m in moments if m.microsecond)

    try:
        write_and_read()
    finally:
        db.close()
