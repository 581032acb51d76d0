"""The change-log method without a server: the plugins' output parsers, value conversion, and
the refusals that need no log (SQLite source, two syncs on one slot)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync.capture.pg_logical import PgLog, parse_tuple
from tests import changelog_world as w
from tests import helpers as h

pytestmark = pytest.mark.changelog


def test_test_decoding_tuples() -> None:
    text = (
        "id[integer]:1 name[text]:'it''s a [x]: y' \"We ird\"[character varying]:null "
        "a[integer[]]:'{1,2}' big[text]:unchanged-toast-datum ts[timestamp without time zone]:"
        "'2024-01-01 08:00:00' new-tuple: id[integer]:2"
    )
    old, at = parse_tuple(text, 0)
    assert old == {
        "id": "1",
        "name": "it's a [x]: y",
        "We ird": None,
        "a": "{1,2}",
        "ts": "2024-01-01 08:00:00",
    }
    new, _ = parse_tuple(text, at + len("new-tuple: "))
    assert new == {"id": "2"}


def test_wal2json_messages() -> None:
    log = PgLog.__new__(PgLog)
    log.sync, log.by_pair = "items", {("public", "items"): ""}
    kind, change = log._wal2json(
        '{"action":"U","schema":"public","table":"items","columns":[{"name":"id","type":"integer",'
        '"value":7},{"name":"amount","type":"numeric","value":12.10}],"identity":[{"name":"id",'
        '"type":"integer","value":5}]}'
    )
    assert kind == "U" and change is not None
    assert change.new == {"id": 7, "amount": __import__("decimal").Decimal("12.10")}
    assert change.old == {"id": 5}
    assert log._wal2json('{"action":"I","schema":"public","table":"other","columns":[]}') == ("", None)
    assert log._wal2json('{"action":"C"}')[0] == "C"


def test_sqlite_source_is_refused(sqlite_database: Callable[[], str], tmp_path: Path) -> None:
    src, dst = sqlite_database(), sqlite_database()
    w.build(src, dst)
    path = w.sheet(tmp_path, src, dst, {}, children=False)
    proc = h.mapsync("seed", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and "no change log" in proc.stderr, proc.stderr
    assert w.dest_rows(dst) == {}  # nothing was written


def test_log_values_become_driver_types() -> None:
    """Keys from the log must equal the keys the driver returned to the seed (the ledger's)."""
    import datetime as dt
    import decimal
    import uuid as uuid_

    from mapsync import records
    from mapsync.capture.log import coerce
    from mapsync.connectors.sql import ColumnInfo

    def info(kind: type) -> ColumnInfo:
        return ColumnInfo("c", kind, None, True, False, False, kind.__name__)

    u = uuid_.uuid4()
    cases: list[tuple[Any, type, Any]] = [
        ("42", int, 42),
        ("1.10", decimal.Decimal, decimal.Decimal("1.10")),
        ("2024-01-02", dt.date, dt.date(2024, 1, 2)),
        ("2024-01-01 08:00:00.5+00", dt.datetime, dt.datetime(2024, 1, 1, 8, 0, 0, 500000, tzinfo=dt.UTC)),
        (str(u), uuid_.UUID, u),
        ("t", bool, True),
        (b"abc", str, "abc"),
        ("not a number", int, "not a number"),  # left as it is
    ]
    for raw, kind, want in cases:
        got = coerce(raw, info(kind))
        assert got == want and type(got) is type(want), (raw, got)
        assert records.key_text((got,)) == records.key_text((want,))
    assert coerce(None, info(int)) is None


def test_two_syncs_sharing_a_slot_are_refused(sqlite_database: Callable[[], str], tmp_path: Path) -> None:
    src, dst = sqlite_database(), sqlite_database()
    w.build(src, dst)
    path = w.sheet(tmp_path, src, dst, {"slot": "mapsync_shared"}, children=False)
    doc = json.loads(path.read_text())
    doc["syncs"]["items_too"] = doc["syncs"]["items"]
    path.write_text(json.dumps(doc))
    proc = h.mapsync("changelog", "install", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "items and items_too share the slot mapsync_shared" in proc.stderr
