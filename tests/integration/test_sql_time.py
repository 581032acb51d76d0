"""Stored time text read back as the instant it was (issue 9 item 11, issue 10 item 1).

- `parse_time(stamp(x)) == x` for every form mapsync writes (a stored `…Z` / `+00:00` stamp
  came back naive, and every run after the first with `overlap.every` or `deletes_every`
  crashed comparing it with the clock);
- three runs in a row with `overlap.every` and with `deletes_every`;
- SQLite rows stamped in mixed forms (`T` or space, fractions, `Z`, `+02:00`, `-05:00`, none)
  are all delivered by `run` and seen by `--overlap`; a row dated 2099 is warned about.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import sqlite3
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite as sqlite_dialect

from mapsync import records
from mapsync.connectors.sql_source import since_text
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.sql_time import (
    _sqlite_utc,
    _sqlite_utc_general,
    named_zone,
    parse_time,
    register_sqlite,
    text_floor,
    utc_exact,
    utc_floor,
    utc_text,
    zone_name,
)
from mapsync.state.store import StateStore, stamp
from tests import helpers as h

# --------------------------------------------------------------------------- round trips

MOMENTS = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),  # noqa: DTZ001
    max_value=dt.datetime(9998, 12, 30),  # noqa: DTZ001
)
ZONES = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(-dt.timedelta(hours=5, minutes=30))]
)


@given(MOMENTS, ZONES)
def test_every_written_form_reads_back_as_the_same_instant(naive: dt.datetime, zone: dt.tzinfo) -> None:
    aware = naive.replace(tzinfo=zone)
    # the state store's stamp (run times, overlap_at, deletes_at) and the watermark's UTC text
    for text in (stamp(aware), utc_text(aware)):
        back = parse_time(text)
        assert back.tzinfo is not None and back == aware
    # cursor values stored as JSON (records.canonical_json: isoformat), aware and naive
    for value in (aware, naive):
        back = parse_time(json.loads(records.canonical_json(value)))
        assert back == value and (back.tzinfo is None) == (value.tzinfo is None)
    # SQLite text as other writers leave it: space or T, `Z`, `±HH:MM`, `±HHMM`
    iso = aware.isoformat()
    assert parse_time(iso.replace("T", " ")) == aware
    assert parse_time(naive.isoformat(sep=" ")) == naive
    if zone is dt.UTC:
        assert parse_time(naive.isoformat() + "Z") == aware
    assert parse_time(iso[:-3] + iso[-2:]) == aware  # +0200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T10:00:00.123456789Z", dt.datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)),
        ("2026-01-01 10:00:00.5+00:00", dt.datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=dt.UTC)),
        ("2026-01-01 10:00", dt.datetime(2026, 1, 1, 10, 0)),  # noqa: DTZ001
        ("2026-01-01", dt.datetime(2026, 1, 1)),  # noqa: DTZ001
    ],
)
def test_fraction_digits_stop_at_the_zone(text: str, expected: dt.datetime) -> None:
    assert parse_time(text) == expected


# --------------------------------------------------------------------------- end to end

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: {lag}{extra}}}
    deletes: {{policy: hard}}
"""


@dataclasses.dataclass
class World:
    src: str
    dst: str
    folder: Path
    engine: Engine | None = None
    store: StateStore | None = None

    def sheet(self, lag: str, extra: str = "") -> None:
        text = SHEET.format(src=self.src, dst=self.dst, lag=lag, extra=extra)
        (self.folder / "sheet.yaml").write_text(text)
        self.close()

    def run(self, kind: str = "run", **kwargs: Any) -> dict[str, int]:
        if self.engine is None:
            loaded = loader.load(self.folder / "sheet.yaml")
            self.store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
            self.engine = Engine(loaded, self.store)
        report = self.engine.run("items", kind, **kwargs)
        assert report.status == "success", report
        return dataclasses.asdict(report.counts)

    def close(self) -> None:
        if self.engine is not None and self.store is not None:
            self.engine.close()
            self.store.close()
        self.engine = self.store = None

    def add(self, rows: list[tuple[int, str]]) -> None:
        h.execute(
            self.src,
            "INSERT INTO items (id, name, last_modified) VALUES (:i, :n, :t)",
            params=[{"i": i, "n": f"v{i}", "t": t} for i, t in rows],
        )

    def dest(self) -> dict[int, str]:
        return {i: n for i, n in h.query(self.dst, "SELECT id, name FROM items")}


@pytest.fixture
def world(sqlite_database: Callable[[], str], tmp_path: Path) -> Iterator[World]:
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    h.execute(w.src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, last_modified TEXT)")
    h.execute(w.dst, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    yield w
    w.close()


@pytest.mark.parametrize("extra", [", overlap: {every: 1d}", ", deletes_every: 1d"])
def test_three_runs_with_a_periodic_overlap_or_delete_check(world: World, extra: str) -> None:
    """The stored `overlap_at` / `deletes_at` stamp is read back aware: no crash on run 2 or 3."""

    def ago(minutes: int) -> str:
        return f"{dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes):%Y-%m-%d %H:%M:%S}"

    world.sheet(lag="400d", extra=extra)  # the seed's watermark lies before every stamp below
    world.add([(1, ago(20)), (2, ago(19))])
    world.run("seed")
    world.sheet(lag="0s", extra=extra)
    for n in range(3, 6):
        world.add([(n, ago(10 - n))])
        if n == 3:  # before the first run, whose delete check finds it
            h.execute(world.src, "DELETE FROM items WHERE id = 1")
        world.run()
    expected = {n: f"v{n}" for n in range(2, 6)}
    if "deletes_every" not in extra:
        expected[1] = "v1"  # only the key-set check finds the deleted row
    assert world.dest() == expected


STAMPS = {
    10: "2026-01-01T16:07:49",  # T, no zone (UTC on SQLite)
    11: "2026-01-01T16:07:49Z",
    12: "2026-01-01T18:07:50+02:00",  # 16:07:50 UTC
    13: "2026-01-01T11:07:51-05:00",  # 16:07:51 UTC
    14: "2026-01-01 16:07:52",
    15: "2026-01-01 16:07:52.5",
    16: "2026-01-01T16:07:53.000001+00:00",
    17: "2026-01-01 16:07:54 +0000",
}


def test_mixed_sqlite_stamps_are_all_read_and_a_future_row_is_warned_about(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.sheet(lag="400d")  # the seed's watermark lies before every stamp below
    world.run("seed")
    world.sheet(lag="0s")
    world.add([(9, "2026-01-01T16:07:48.5Z")])
    assert world.run()["written"] == 1  # the watermark is now that instant, as UTC text
    # every form after it sorts before it as raw text ("2026-01-01 16…" < "2026-01-01T16…")
    world.add([*STAMPS.items(), (99, "2099-01-01 00:00:00")])
    with caplog.at_level(logging.WARNING, logger="mapsync"):
        counts = world.run()
    assert counts["written"] == len(STAMPS)
    assert world.dest() == {n: f"v{n}" for n in [9, *STAMPS]}
    warned = [r for r in caplog.records if getattr(r, "action", None) == "rows_in_future"]
    assert len(warned) == 1 and warned[0].count == 1, caplog.records  # type: ignore[attr-defined]
    assert "later than the source's clock" in warned[0].getMessage()
    # the watermark is the latest instant read, as fixed-width UTC text
    assert world.store is not None
    assert world.store.cursor("items", "watermark") == "2026-01-01T16:07:54.000000Z"

    # an overlap re-read over the same rows sees every one (all unchanged: skipped, none missed)
    h.execute(world.dst, "DELETE FROM items")
    window = dt.datetime.now(dt.UTC) - dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mapsync"):
        counts = world.run("overlap", window=window)
    assert counts["read"] == len(STAMPS) + 1 and counts["missed"] == 0
    # the same future row again: not warned about on every run (`--follow` runs each poll)
    assert not [r for r in caplog.records if getattr(r, "action", None) == "rows_in_future"]


FORMS: list[Callable[[dt.datetime], str]] = [
    lambda m: m.astimezone(dt.UTC).replace(tzinfo=None).isoformat(),  # T, no zone (UTC)
    lambda m: m.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" "),  # space, no zone
    lambda m: m.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    lambda m: m.isoformat(),  # its own offset, ±HH:MM
    lambda m: f"{m.replace(tzinfo=None).isoformat(sep=' ')} {m.strftime('%z')}",  # ` ±HHMM`
]


@given(st.lists(st.tuples(MOMENTS, ZONES, st.integers(0, len(FORMS) - 1)), min_size=1, max_size=12))
def test_sqlite_orders_and_bounds_mixed_text_as_instants(
    stamps: list[tuple[dt.datetime, dt.tzinfo, int]],
) -> None:
    """Through the sqlite3 driver with mapsync's function registered (as on every SQLite
    connection of mapsync's): `mapsync_utc` orders text of every form by instant, and an
    inclusive bound in `utc_text` form keeps exactly the rows at or after it."""
    moments = [m.replace(tzinfo=z) for m, z, _ in stamps]
    conn = sqlite3.connect(":memory:")
    try:
        register_sqlite(conn)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?)",
            [
                (i, FORMS[form](moment))
                for i, (moment, (_, _, form)) in enumerate(zip(moments, stamps, strict=True))
            ],
        )
        ordered = [r[0] for r in conn.execute("SELECT id FROM t ORDER BY mapsync_utc(ts, 'UTC'), id")]
        pivot = moments[0]
        bound = (utc_text(pivot),)
        kept = {r[0] for r in conn.execute("SELECT id FROM t WHERE mapsync_utc(ts, 'UTC') >= ?", bound)}
    finally:
        conn.close()
    assert ordered == sorted(range(len(moments)), key=lambda i: (moments[i], i))
    assert kept == {i for i, m in enumerate(moments) if m >= pivot}


# --------------------------------------------------------------------------- SQL fast path

FIXED = st.tuples(  # the fixed-width forms `sqlite_utc` converts in SQL, valid or not
    st.sampled_from(["", " "]),
    st.sampled_from(["0000", "0001", "1970", "2024", "2025", "2026", "9999"]),
    st.sampled_from(["00", "01", "02", "04", "12", "13"]),
    st.sampled_from(["00", "01", "28", "29", "30", "31", "32"]),
    st.sampled_from([" ", "T", "t", "_"]),
    st.sampled_from(["00", "12", "23", "24", "25"]),
    st.sampled_from(["00", "30", "59", "60", "99"]),
    st.sampled_from(["00", "30", "59", "60", "99"]),
    st.sampled_from(
        [
            "",
            "Z",
            "z",
            ".",
            ".1",
            ".123",
            ".123Z",
            ".123456",
            ".999999Z",
            ".1234567",
            "+02:00",
            "-0530",
            " UTC",
            "Z ",
            " ",
            ",123",
            ".12a",
            ".123456ZZ",
        ]
    ),
).map(lambda p: f"{p[0]}{p[1]}-{p[2]}-{p[3]}{p[4]}{p[5]}:{p[6]}:{p[7]}{p[8]}")
OTHER = st.one_of(
    st.text(alphabet="0123456789-: TZ.+", max_size=30),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.none(),
    st.binary(max_size=8),
)


@given(
    st.lists(FIXED, min_size=10, max_size=40),
    st.lists(OTHER, max_size=10),
    st.sampled_from(["UTC", "Europe/Berlin", "+05:30", "Nowhere/City"]),
)
def test_the_fast_forms_give_the_general_parses_text(fixed: list[str], other: list[Any], zone: str) -> None:
    """`mapsync_utc`'s sliced fast path gives exactly what the general parse gives, for valid
    and invalid dates, every tail, every type."""
    for value in [*fixed, *other]:
        assert _sqlite_utc(value, zone) == _sqlite_utc_general(value, zone), value


@pytest.mark.parametrize(
    "value",
    [
        "0000-01-01 10:00:00",  # no year 0 in Python: NULL, never a time
        "2026-02-29 10:00:00",  # no such day
        "2026-04-31T10:00:00Z",
        "2026-12-31 24:00:00",
        "2026-12-31 23:59:60",
        "2024-02-29 23:59:59.999999",  # a real leap day
        "9999-12-31T23:59:59.999Z",
        "2026-12-04 10:00:00.123456",
        "２０２６-12-04 10:00:00",  # full-width digits: not ASCII, the general parse says
        "2026-12-04 10:00:00.12345６",
        b"2026-12-04 10:00:00",
        20261204100000,
        1.5,
        None,
    ],
)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "-03:00"])
def test_the_fast_forms_edges(value: Any, zone: str) -> None:
    assert _sqlite_utc(value, zone) == _sqlite_utc_general(value, zone)


_OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
_ROW_FORMS = [  # the text other writers leave, of an aware moment (naive ones in the column's zone)
    lambda m, z: m.astimezone(z).replace(tzinfo=None).isoformat(sep=" "),
    lambda m, z: m.astimezone(z).replace(tzinfo=None).isoformat(),
    lambda m, z: m.astimezone(z).replace(tzinfo=None).isoformat(sep=" ", timespec="minutes"),
    lambda m, z: m.astimezone(z).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds"),
    lambda m, z: m.astimezone(z).replace(tzinfo=None).isoformat(sep=" ").replace(".", ","),
    lambda m, z: m.astimezone(z).date().isoformat(),  # a date: that midnight (kept only if whole)
    lambda m, z: m.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    lambda m, z: m.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ") + " UTC",
    lambda m, z: " " + m.astimezone(z).replace(tzinfo=None).isoformat(sep=" "),  # leading space
    lambda m, z: m.astimezone(z).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds"),
    lambda m, z: re.sub(r"(\.\d*?)0+$", r"\1", m.astimezone(z).replace(tzinfo=None).isoformat(sep=" ")),
]


@given(
    MOMENTS,
    st.lists(
        st.tuples(
            st.one_of(  # days around the bound, or within its second
                st.timedeltas(-dt.timedelta(days=3), dt.timedelta(days=3)),
                st.timedeltas(-dt.timedelta(seconds=1), dt.timedelta(seconds=1)),
            ),
            _OFFSETS,
            st.integers(0, len(_ROW_FORMS) - 1),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["UTC", "+05:30", "-11:00"]),
    st.booleans(),
)
def test_the_since_condition_keeps_every_row_at_or_after_the_bound(
    naive: dt.datetime, rows: list[tuple[dt.timedelta, dt.tzinfo, int]], zone_name: str, whole: bool
) -> None:
    """`ts_since`'s index-friendly condition (the 24-hour floor, the tighter UTC one, the
    offset check): every row whose `mapsync_utc` is at or after the bound passes it, in any
    form and offset; and a UTC row more than a second before the bound is cut when the column's
    zone is UTC (the point of it). Through SQLite with mapsync's function, as a read runs it."""
    zone = named_zone(zone_name)
    bound_at = naive.replace(tzinfo=dt.UTC, microsecond=0 if whole else naive.microsecond)
    if whole:
        bound_at = bound_at.replace(second=0)
    bound = utc_text(bound_at)
    texts = []
    for delta, offset, form in rows:
        texts.append(_ROW_FORMS[form](bound_at + delta, zone))
        texts.append((bound_at + delta).astimezone(offset).isoformat())  # the same, with its offset
    cond = since_text(sa.column("ts"), bound, utc_naive=zone_name == "UTC")
    sql = str(cond.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))
    conn = sqlite3.connect(":memory:")
    try:
        register_sqlite(conn)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(texts)))
        after = {
            i for (i,) in conn.execute("SELECT id FROM t WHERE mapsync_utc(ts, ?) >= ?", (zone_name, bound))
        }
        kept = {i for (i,) in conn.execute(f"SELECT id FROM t WHERE {sql}")}
        utc_before = {
            i
            for (i,) in conn.execute(
                "SELECT id FROM t WHERE ts NOT LIKE ' %' AND substr(ts, 11) NOT GLOB '*[+-]*' "
                "AND substr(ts, 11, 1) != 'T' AND mapsync_utc(ts, 'UTC') < ?",  # `T` sorts after ' '
                (utc_text(bound_at - dt.timedelta(seconds=1)),),
            )
        }
        # the plain form (`YYYY-MM-DD HH:MM:SS.f…`, nothing after): cut from any time before the
        # bound on, the bound's own second too
        plain_before = {
            i
            for (i,) in conn.execute(
                "SELECT id FROM t WHERE ts GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] "
                "[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9]*' AND substr(ts, 21) NOT GLOB '*[^0-9]*' "
                "AND mapsync_utc(ts, 'UTC') < ?",
                (bound,),
            )
        }
    finally:
        conn.close()
    assert after <= kept, [texts[i] for i in after - kept]
    if zone_name == "UTC":
        assert not (kept & utc_before), [texts[i] for i in kept & utc_before]
        assert not (kept & plain_before), [texts[i] for i in kept & plain_before]


@pytest.mark.parametrize(
    ("text", "passes"),
    [
        ("2026-12-04 13:45:10.4", False),  # earlier in the bound's second: cut
        ("2026-12-04 13:45:10.499999", False),
        ("2026-12-04 13:45:10.4999999", False),  # the parse cuts the seventh digit
        ("2026-12-04 13:45:10.4 UTC", False),
        ("2026-12-04 13:45:10.5", True),  # the bound itself, in every spelling
        ("2026-12-04 13:45:10.50", True),
        ("2026-12-04 13:45:10.500000", True),
        ("2026-12-04 13:45:10.5000001", True),
        ("2026-12-04 13:45:10.500", True),
        ("2026-12-04 13:45:10.500001", True),
        ("2026-12-04 13:45:10.6", True),
        ("2026-12-04 13:45:11", True),
        ("2026-12-04 13:45:10,7", True),  # a comma: kept for the exact comparison, as before
        ("2026-12-04 13:45:10", True),  # no fraction (before the bound): the same
        ("2026-12-04T13:45:10.4", True),  # `T` sorts after the space: the same
        ("2026-12-04 13:45:09.9", False),
        ("2026-12-04 14:45:10.4+01:00", True),  # an offset: the 24 hours
    ],
)
def test_the_since_condition_within_the_bounds_second(text: str, passes: bool) -> None:
    """Rows stamped earlier in the bound's own second are cut before `mapsync_utc` runs, in the
    plain form a busy table holds thousands of (`YYYY-MM-DD HH:MM:SS.f…`); the bound's other
    spellings still pass."""
    bound = "2026-12-04T13:45:10.500000Z"
    cond = since_text(sa.column("ts"), bound, utc_naive=True)
    sql = str(cond.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))
    conn = sqlite3.connect(":memory:")
    try:
        register_sqlite(conn)
        (kept,) = conn.execute(f"SELECT {sql} FROM (SELECT ? AS ts)", (text,)).fetchone()
        (after,) = conn.execute("SELECT mapsync_utc(?, 'UTC') >= ?", (text, bound)).fetchone()
    finally:
        conn.close()
    assert bool(kept) is passes
    assert kept or not after  # never a row at or after the bound cut


def test_the_floors() -> None:
    assert text_floor("2026-12-04T00:00:00.000000Z") == "2026-12-03"
    assert text_floor("2026-12-04T00:00:59.999999Z") == "2026-12-03"
    assert text_floor("2026-12-04T13:45:10.5Z") == "2026-12-03 13:45"
    assert text_floor("0001-01-01T05:00:00Z") == "0001-01-01"
    assert utc_floor("2026-12-04T00:00:00.000000Z") == "2026-12-04"
    assert utc_floor("2026-12-04T00:00:00.000001Z") == "2026-12-04 00:00:00"
    assert utc_floor("2026-12-04T13:45:00Z") == "2026-12-04 13:45"
    assert utc_floor("2026-12-04T13:45:10.5Z") == "2026-12-04 13:45:10"
    assert utc_exact("2026-12-04T13:45:10.5Z") == "2026-12-04 13:45:10.5"
    assert utc_exact("2026-12-04T13:45:10.000120Z") == "2026-12-04 13:45:10.00012"
    assert utc_exact("2026-12-04T13:45:10Z") is None
    assert utc_exact("2026-12-04T14:45:10.25+01:00") == "2026-12-04 13:45:10.25"


def test_every_spelling_of_utc_takes_the_utc_path() -> None:
    """SQLite's default zone is `dt.UTC`: its name must be `UTC`, or `mapsync_utc` converts
    every naive row through the general parse and `ts_since` keeps a day of rows."""
    for zone in (dt.UTC, dt.timezone(dt.timedelta(0)), zoneinfo.ZoneInfo("Etc/UTC"), named_zone("+00:00")):
        assert zone_name(zone) == "UTC"
    assert zone_name(zoneinfo.ZoneInfo("Europe/Berlin")) == "Europe/Berlin"
    assert zone_name(dt.timezone(-dt.timedelta(hours=5, minutes=30))) == "-05:30"
