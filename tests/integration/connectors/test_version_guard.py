"""The version guard: an older write that arrives after a newer one changes nothing.

A run that lost its lease may still have a write on the wire. When the sheet maps the source's
version column (the watermark column) to a destination column, every upsert path keeps the newer
row: PostgreSQL `ON CONFLICT … WHERE`, also through COPY → temp table → upsert; MariaDB
`IF(VALUES(v) >= v, …)` with `v` last; SQLite; the update-then-insert path. Opt-out:
`delivery.version_guard: false` (then the older write wins, which is what the guard prevents).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync import records
from mapsync.connectors import sql_destination
from mapsync.connectors.sql import SqlDatabase
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.sheet import models
from tests import helpers as h

T1 = dt.datetime(2024, 1, 1, 10, 0, 0)  # noqa: DTZ001 (naive columns)
T2 = dt.datetime(2024, 1, 1, 11, 0, 0)  # noqa: DTZ001


def _cfg(guard: bool = True, omit: bool = False) -> models.SyncConfig:
    return models.SyncConfig.model_validate(
        {
            "from": {"connection": "src", "table": "items"},
            "to": {"connection": "dst", "table": "items"},
            "key": {"from": "code", "to": "code"},
            "fields": {
                "name": "name",
                "qty": {"from": "qty", "on_null": "omit"} if omit else "qty",
                "modified": "last_modified",
            },
            "changes": {"method": "watermark", "column": "last_modified"},
            "delivery": {"version_guard": guard},
        }
    )


def _up(code: str, name: str, version: dt.datetime, qty: int | None = 1) -> records.Mapped:
    values: dict[str, Any] = {"code": code, "name": name, "modified": version}
    if qty is not None:
        values["qty"] = qty
    return records.Mapped("upsert", (code,), (code,), version, values, {}, records.content_hash(values))


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Callable[..., SqlDestination]]:
    opened: list[SqlDatabase] = []

    def make(url: str, *, guard: bool = True, omit: bool = False) -> SqlDestination:
        ts = "DATETIME(6)" if h.dialect(url) == "mysql" else "TIMESTAMP"
        h.execute(
            url,
            "CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, name VARCHAR(50) NOT NULL, "
            f"qty INTEGER {'NOT NULL' if omit else ''}, modified {ts})",
        )
        db = SqlDatabase("dst", url, tmp_path)
        opened.append(db)
        return SqlDestination(db, "items", _cfg(guard, omit))

    yield make
    for db in opened:
        db.close()


def _rows(url: str) -> dict[str, tuple[Any, ...]]:
    return {r[0]: tuple(r[1:]) for r in h.query(url, "SELECT code, name, modified FROM items")}


def _as_dt(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


@pytest.mark.parametrize("n", [3, sql_destination.COPY_THRESHOLD], ids=["upsert", "copy"])
def test_an_older_write_after_a_newer_one_changes_nothing(
    database: Callable[[], str], dest: Callable[..., SqlDestination], n: int
) -> None:
    url = database()
    d = dest(url)
    codes = [f"k{i:04d}" for i in range(n)]
    d.write([_up(c, "new", T2) for c in codes])
    result = d.write([_up(c, "old", T1) for c in codes] + [_up("fresh", "old-but-new-key", T1)])
    assert not result.rejected, result.rejected  # skipped by the guard: older, not an error
    rows = _rows(url)
    wrong = [c for c in codes if rows[c][0] != "new" or _as_dt(rows[c][1]) != T2]
    assert wrong == []
    assert rows["fresh"][0] == "old-but-new-key"  # an insert is never held back
    d.write([_up(codes[0], "newer", T2 + dt.timedelta(seconds=1)), _up(codes[1], "same", T2)])
    rows = _rows(url)
    assert rows[codes[0]][0] == "newer"  # newer versions go through
    assert rows[codes[1]][0] == "same"  # an equal version is written again (re-sends stay idempotent)


def test_the_update_then_insert_path_is_guarded(
    database: Callable[[], str], dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    d = dest(url, omit=True)
    d.write([_up("a", "new", T2, qty=5)])
    d.write([_up("a", "old", T1, qty=None)])  # `qty` omitted: the NOT NULL column forces update-then-insert
    assert _rows(url)["a"][0] == "new"


def test_opting_out_lets_the_older_write_win(
    database: Callable[[], str], dest: Callable[..., SqlDestination]
) -> None:
    url = database()
    d = dest(url, guard=False)
    d.write([_up("a", "new", T2)])
    d.write([_up("a", "old", T1)])
    assert _rows(url)["a"][0] == "old"


def test_no_guard_without_a_mapped_version_column() -> None:
    cfg = _cfg().model_copy(update={"fields": {"name": models.FieldRule.model_validate("name")}})
    from mapsync.connectors.version_guard import guard_column

    assert guard_column(cfg) is None
    assert guard_column(_cfg()) == "modified"
    assert guard_column(_cfg(guard=False)) is None


def test_no_guard_on_a_text_version_column(sqlite_database: Callable[[], str], tmp_path: Path) -> None:
    """Text stamps of mixed forms (`T` or space, with or without fractions) do not sort as time."""
    url = sqlite_database()
    h.execute(url, "CREATE TABLE items (code VARCHAR(20) PRIMARY KEY, name TEXT, qty INTEGER, modified TEXT)")
    db = SqlDatabase("dst", url, tmp_path)
    try:
        assert SqlDestination(db, "items", _cfg()).guard is None
    finally:
        db.close()
