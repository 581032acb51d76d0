"""The columnar seed (run_columnar.py) against the per-record path, its reference: a SQLite
table with hostile rows seeded into PostgreSQL (binary COPY), MariaDB (DATETIME and TIMESTAMP)
and SQLite (both written as rows) both ways (`delivery.columnar: true` and `false`) gives the
same destination rows, the same key ledger (versions, content hashes, drift
digests), the same record errors and the same counts; most batches really take the columnar
step; a crash at any point of a columnar batch, then the seed again, loses and doubles nothing."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from mapsync import crash, run_columnar
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  erp: {{url: "sqlite:///{src}"}}
  crm: {{url: "{dst}"}}
state: {{url: "sqlite:///{state}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: crm, table: clients}}
    key: {{from: id, to: client_id}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 7, columnar: {columnar}}}
    fields:
      name: name
      status: {{from: status, map: {{A: active, I: inactive}}}}
      notes: {{from: notes, truncate: 10}}
      origin: {{value: erp}}
      created_at: created
      last_modified: last_modified
"""

DEST = """CREATE TABLE clients (
    client_id BIGINT PRIMARY KEY,
    name VARCHAR(12) NOT NULL,
    status VARCHAR(10),
    notes VARCHAR(10),
    origin TEXT,
    created_at {timestamp},
    last_modified {version}
)"""
# MariaDB: DATETIME keeps no fraction (the mapping cuts it and counts a truncation); its
# TIMESTAMP is read in the session's zone (UTC), and the equality tests take it too
TIMESTAMP = {"postgresql": "TIMESTAMP", "mariadb": "DATETIME", "sqlite": "TIMESTAMP"}
DESTINATIONS = {"postgresql": "pg_database", "mariadb": "mariadb_database", "sqlite": "sqlite_database"}


@pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
        pytest.param("sqlite"),
    ]
)
def destination(request: pytest.FixtureRequest) -> Callable[[], str]:
    """A factory of fresh destination databases, each kind in turn: PostgreSQL is written by
    binary COPY, MariaDB and SQLite as rows (the same upsert as the per-record write)."""
    make: Callable[[], str] = request.getfixturevalue(DESTINATIONS[request.param])
    return make


@pytest.fixture(
    params=[
        pytest.param(("postgresql", None), marks=pytest.mark.postgres, id="postgresql"),
        pytest.param(("mariadb", None), marks=pytest.mark.mariadb, id="mariadb"),
        pytest.param(("mariadb", "TIMESTAMP NULL"), marks=pytest.mark.mariadb, id="mariadb-timestamp"),
        pytest.param(("sqlite", None), id="sqlite"),
    ]
)
def destination_time(request: pytest.FixtureRequest) -> tuple[Callable[[], str], str | None]:
    """`destination`, and the type of its `created_at` and `last_modified` columns (None: the
    kind's own TIMESTAMP and TEXT); MariaDB also with TIMESTAMP, which the session reads in UTC,
    for both: `last_modified` then holds the version, and the version guard's upsert is sent."""
    kind, timestamp = request.param
    make: Callable[[], str] = request.getfixturevalue(DESTINATIONS[kind])
    return make, timestamp


NAMES = ["Ann", 'Quo"te', "back\\slash", "tab\there", "Zoë", "😀 emoji", "", "x" * 12, "ünï cödé"]
TIMES = [
    "2024-01-02 03:04:05",
    "2024-01-02T03:04:05",
    "2024-01-02 03:04:05.123456",
    "2024-01-02T03:04:05.5",
    "2024-01-02 03:04:05+02:00",
    "2024-02-30 00:00:00",
    "not a time",
    None,
]


def _rows() -> list[tuple[Any, ...]]:
    rows = []
    for i in range(1, 71):
        name: Any = NAMES[i % len(NAMES)] + str(i % 5)
        status = "AI"[i % 2]
        notes: Any = "n" * (i % 15) if i % 6 else None
        created = TIMES[i % len(TIMES)] if i > 14 else TIMES[0]  # the first two batches plain
        if i == 20:
            status = "X"  # not in the map: a record error
        if i == 21:
            name = "y" * 13  # longer than VARCHAR(12)
        if i == 22:
            name = None  # NOT NULL
        if i == 23:
            notes = "nul\x00byte"  # PostgreSQL text cannot hold NUL (cut to 10 first: still holds it)
        if i == 40:
            name = 12345  # an int in a TEXT column: that batch has no exact Arrow form
        rows.append((i, name, status, notes, created, f"2024-03-01 00:00:{i % 60:02d}"))
    return rows


def _source(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, status TEXT, notes TEXT, "
        "created TEXT, last_modified TEXT)"
    )
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", _rows())
    # text that is not UTF-8 (batch 8): a record error naming the key, as on the per-record path
    conn.execute("UPDATE customers SET notes = CAST(X'6869FF' AS TEXT) WHERE id = 52")
    conn.commit()
    conn.close()


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each Arrow batch's columnar step answered (True: taken, False: given back)."""
    taken: list[bool] = []
    real = run_columnar.step

    def spy(*args: Any) -> bool:
        taken.append(real(*args))
        return taken[-1]

    monkeypatch.setattr(run_columnar, "step", spy)
    return taken


def _side(tmp_path: Path, name: str, dst: str, columnar: bool, timestamp: str | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    _source(folder / "erp.db")
    # a typed `last_modified` (the `timestamp` case) holds the version: the version guard is on
    h.execute(dst, DEST.format(timestamp=timestamp or TIMESTAMP[_kind(dst)], version=timestamp or "TEXT"))
    sheet = SHEET.format(
        src=folder / "erp.db", dst=dst, state=folder / "state.db", columnar=str(columnar).lower()
    )
    (folder / "sheet.yaml").write_text(sheet)
    return folder


def _kind(url: str) -> str:
    return (
        "postgresql" if url.startswith("postgresql") else "mariadb" if url.startswith("mysql") else "sqlite"
    )


@contextlib.contextmanager
def _engine(folder: Path) -> Iterator[Engine]:
    """The engine of the folder's sheet and state store, closed after."""
    store = StateStore.open(f"sqlite:///{folder / 'state.db'}", folder, create=True)
    engine = Engine(loader.load(folder / "sheet.yaml", env={}), store)
    try:
        yield engine
    finally:
        engine.close()
        store.close()


def _seed(folder: Path) -> Any:
    with _engine(folder) as engine:
        return engine.run("customers", "seed")


def _outcome(folder: Path, dst: str) -> dict[str, Any]:
    state = f"sqlite:///{folder / 'state.db'}"
    return {
        "rows": h.query(dst, "SELECT * FROM clients ORDER BY client_id"),
        "ledger": h.query(
            state,
            "SELECT key, version, hash, dest_id, deleted, dkey, digest FROM mapsync_ledger ORDER BY key",
        ),
        "errors": h.query(
            state,
            "SELECT key, field, rule, message, attempts FROM mapsync_record_errors "
            "WHERE resolved_at IS NULL ORDER BY key",
        ),
    }


def test_a_columnar_seed_equals_the_per_record_seed(
    tmp_path: Path, destination_time: tuple[Callable[[], str], str | None], steps: list[bool]
) -> None:
    destination, timestamp = destination_time
    dst_on, dst_off = destination(), destination()
    on = _side(tmp_path, "on", dst_on, True, timestamp)
    off = _side(tmp_path, "off", dst_off, False, timestamp)

    reference = _seed(off)
    assert steps == []  # `columnar: false`: no Arrow batch at all
    report = _seed(on)

    # batch 6 (an int among names) has no Arrow form; every other batch took the step
    assert steps == [True] * 9
    fields = ("read", "written", "rejected", "truncated", "skipped")
    assert [getattr(report.counts, f) for f in fields] == [getattr(reference.counts, f) for f in fields]
    assert report.counts.written > 40 and report.counts.rejected >= 6
    got, want = _outcome(on, dst_on), _outcome(off, dst_off)
    assert got["rows"] == want["rows"]
    assert got["ledger"] == want["ledger"]
    assert all(row[5] and row[6] for row in got["ledger"])  # every written row has its digest
    assert got["errors"] == want["errors"]
    nul = {"[23]"} if _kind(dst_on) == "postgresql" else set()  # only PostgreSQL refuses a NUL
    assert {e[0] for e in got["errors"]} >= {"[20]", "[21]", "[22]", "[52]", *nul}


def _run(folder: Path) -> Any:
    with _engine(folder) as engine:
        return engine.run("customers")


def _guard(folder: Path) -> Any:
    with _engine(folder) as engine:
        return cast(Any, engine.parts("customers").dest).guard


CHANGES = [  # :t: after both seeds' watermarks (`lag: 0s`), the same on both sides
    "UPDATE customers SET name = 'Changed ' || id, last_modified = :t WHERE id % 4 = 0",
    "UPDATE customers SET status = 'X', last_modified = :t WHERE id = 5",  # unmapped now
    "UPDATE customers SET status = 'A', last_modified = :t WHERE id = 20",  # fixed
    # touched only: written again (the sheet maps `last_modified`)
    "UPDATE customers SET last_modified = :t WHERE id IN (1, 2, 3)",
]


def test_a_columnar_run_equals_the_per_record_run(
    tmp_path: Path, destination_time: tuple[Callable[[], str], str | None], steps: list[bool]
) -> None:
    """The incremental run after the seed: changed rows (one now unmapped, one fixed), rows
    touched with unchanged content; the same destination, ledger, errors and delivery attempts."""
    destination, timestamp = destination_time
    dst_on, dst_off = destination(), destination()
    on = _side(tmp_path, "on", dst_on, True, timestamp)
    off = _side(tmp_path, "off", dst_off, False, timestamp)
    _seed(on), _seed(off)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    for folder in (on, off):
        for change in CHANGES:
            h.execute(f"sqlite:///{folder / 'erp.db'}", change, params={"t": stamp})
    steps.clear()
    reference, report = _run(off), _run(on)
    assert _guard(on) == ("last_modified" if timestamp else None)  # the version guard's upsert
    assert steps and all(steps[:-1])  # the run's batches took the columnar step
    fields = ("read", "written", "rejected", "skipped", "truncated")
    assert [getattr(report.counts, f) for f in fields] == [getattr(reference.counts, f) for f in fields]
    assert report.counts.written >= 10 and report.counts.rejected >= 2
    got, want = _outcome(on, dst_on), _outcome(off, dst_off)
    assert got["rows"] == want["rows"]
    assert got["ledger"] == want["ledger"] and got["errors"] == want["errors"]
    attempts = "SELECT key, outcome, version, hash, dest_id, message FROM mapsync_attempts ORDER BY key, id"
    assert h.query(f"sqlite:///{on / 'state.db'}", attempts) == h.query(
        f"sqlite:///{off / 'state.db'}", attempts
    )
    assert ("[8]", "delivered") in {r[:2] for r in h.query(f"sqlite:///{on / 'state.db'}", attempts)}


@pytest.mark.postgres
def test_a_resumed_columnar_seed_looks_up_the_ledger(
    tmp_path: Path, pg_database: Callable[[], str], steps: list[bool]
) -> None:
    """`seed --again` over a seeded table: every row is in the ledger unchanged (skipped); a
    changed row is written; the columnar step took the batches."""
    dst = pg_database()
    folder = _side(tmp_path, "again", dst, True)
    first = _seed(folder)
    h.execute(f"sqlite:///{folder / 'erp.db'}", "UPDATE customers SET name = 'Renamed' WHERE id = 3")
    with _engine(folder) as engine:
        steps.clear()
        again = engine.run("customers", "seed", again=True)
    assert steps.count(True) == 9
    assert again.counts.written == 1
    assert again.counts.skipped == first.counts.written - 1
    assert h.query(dst, "SELECT name FROM clients WHERE client_id = 3") == [("Renamed",)]


CRASH_POINTS = [
    "after_read",
    "during_write",
    "after_write",
    "after_ack",
    "during_state_write",
    "after_commit",
]


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    def arm(point: str) -> None:
        monkeypatch.setenv("MAPSYNC_CRASH_AT", f"{point}:3")  # in the 3rd batch (columnar)
        monkeypatch.setenv("MAPSYNC_CRASH_MARKER", str(tmp_path / "marker"))
        monkeypatch.setenv("MAPSYNC_CRASH_MODE", "raise")
        crash.reset()

    yield arm
    crash.reset()


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_in_a_columnar_batch_loses_and_doubles_nothing(
    tmp_path: Path,
    destination: Callable[[], str],
    steps: list[bool],
    crash_at: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    dst = destination()
    folder = _side(tmp_path, "crash", dst, True)
    crash_at(point)
    with pytest.raises(crash.Crashed):
        _seed(folder)
    assert steps[:2] == [True, True]  # the batches before the crash took the columnar step
    assert os.path.exists(tmp_path / "marker") and crash.dead()
    for name in ("MAPSYNC_CRASH_AT", "MAPSYNC_CRASH_MODE", "MAPSYNC_CRASH_MARKER"):
        monkeypatch.delenv(name)
    crash.reset()  # (no statement runs in this process while the crash is in force)
    # the crashed (3rd) batch, ids 15-21, is in the destination exactly when the crash came
    # after its write: the crash points sit where they sit on the per-record path
    held = {r[0] for r in h.query(dst, "SELECT client_id FROM clients")}
    assert bool(held & set(range(15, 22))) == (point not in ("after_read", "during_write")), held
    h.execute(
        f"sqlite:///{folder / 'state.db'}", "UPDATE mapsync_leases SET expires_at = '2000-01-01T00:00:00Z'"
    )
    report = _seed(folder)  # resumes after the last committed batch
    assert report.status == "partial"
    rows = h.query(dst, "SELECT client_id FROM clients ORDER BY client_id")
    ledger = h.query(f"sqlite:///{folder / 'state.db'}", "SELECT key FROM mapsync_ledger")
    errors = h.query(f"sqlite:///{folder / 'state.db'}", "SELECT key FROM mapsync_record_errors")
    written = {r[0] for r in rows}
    assert len(rows) == len(written)  # nothing doubled (the key is the primary key anyway)
    assert {f"[{k}]" for k in written} == {r[0] for r in ledger}
    assert written | {int(e[0].strip("[]")) for e in errors} == set(range(1, 71))  # nothing lost


DUPLICATE_SHEET = """
version: 1
connections:
  erp: {{url: "sqlite:///{src}"}}
  crm: {{url: "{dst}"}}
state: {{url: "sqlite:///{state}"}}
syncs:
  parts:
    from: {{connection: erp, table: parts}}
    to: {{connection: crm, table: parts}}
    key: {{from: code, to: id}}
    changes: {{method: full}}
    delivery: {{batch: 10, columnar: {columnar}}}
    fields: {{name: name}}
"""


def _parts_both_ways(
    tmp_path: Path,
    destination: Callable[[], str],
    source: tuple[str, list[tuple[Any, ...]]],
    dest_ddl: str,
    queries: tuple[str, str],
) -> list[tuple[Any, ...]]:
    """Seed the `parts` sync columnar, then per record (each into its own database): per side
    its (written, rejected) counts, the destination rows and the state's rows of `queries`."""
    outcomes = []
    for columnar in (True, False):
        folder, dst = tmp_path / str(columnar), destination()
        folder.mkdir()
        conn = sqlite3.connect(folder / "erp.db")
        conn.execute(source[0])
        conn.executemany("INSERT INTO parts VALUES (?, ?)", source[1])
        conn.commit()
        conn.close()
        h.execute(dst, dest_ddl)
        sheet = DUPLICATE_SHEET.format(
            src=folder / "erp.db", dst=dst, state=folder / "state.db", columnar=str(columnar).lower()
        )
        (folder / "sheet.yaml").write_text(sheet)
        with _engine(folder) as engine:
            report = engine.run("parts", "seed")
        state = f"sqlite:///{folder / 'state.db'}"
        name = Path(dst).name if _kind(dst) == "sqlite" else dst.rsplit("/", 1)[-1]

        def same(rows: list[tuple[Any, ...]], name: str = name) -> list[tuple[Any, ...]]:
            """The database's name (MariaDB's messages say it) as `<db>`: each side has its own."""
            return [tuple(v.replace(name, "<db>") if isinstance(v, str) else v for v in r) for r in rows]

        outcomes.append(
            (
                (report.counts.written, report.counts.rejected),
                h.query(dst, "SELECT id, name FROM parts ORDER BY id"),
                *(same(h.query(state, q)) for q in queries),
            )
        )
    return outcomes


def test_two_keys_for_one_destination_row_go_per_record(
    tmp_path: Path, destination: Callable[[], str], steps: list[bool]
) -> None:
    """Source keys "7" and "007" both become destination key 7: the batch is given back to the
    per-record step, which settles it as always (the same rows, errors and counts both ways)."""
    outcomes = _parts_both_ways(
        tmp_path,
        destination,
        (
            "CREATE TABLE parts (code TEXT PRIMARY KEY, name TEXT)",
            [("007", "a"), ("1", "b"), ("7", "c"), ("8", "d")],
        ),
        "CREATE TABLE parts (id BIGINT PRIMARY KEY, name VARCHAR(20))",
        (
            "SELECT key, hash, dest_id FROM mapsync_ledger ORDER BY key",
            "SELECT key, rule, message FROM mapsync_record_errors ORDER BY key",
        ),
    )
    assert steps == [False]  # the columnar side's one batch was given back
    assert outcomes[0] == outcomes[1]


def test_a_row_the_database_refuses_is_isolated_with_its_attempt(
    tmp_path: Path, destination: Callable[[], str], steps: list[bool]
) -> None:
    """A CHECK the catalog does not show refuses one row of a columnar batch: the batch is
    written per record, which isolates that row; its record error and its attempt (with the
    payload and hash it was sent with) are the per-record path's."""
    outcomes = _parts_both_ways(
        tmp_path,
        destination,
        ("CREATE TABLE parts (code INTEGER PRIMARY KEY, name TEXT)", [(1, "a"), (2, "bad"), (3, "c")]),
        "CREATE TABLE parts (id BIGINT PRIMARY KEY, name VARCHAR(20) CHECK (name <> 'bad'))",
        (
            "SELECT key, rule, message FROM mapsync_record_errors ORDER BY key",
            "SELECT key, outcome, hash, payload FROM mapsync_attempts ORDER BY key",
        ),
    )
    assert steps == [True]  # the columnar side took the batch, then wrote it per record
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == (2, 1) and outcomes[0][3][0][3] is not None  # the payload is kept


@pytest.mark.postgres
def test_only_captures_that_read_through_capture_base_get_a_plan(
    tmp_path: Path, pg_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot sync (its seed versions rows by their hash, per record) and the same sync by
    watermark: only the watermark one is planned (and gets a plan), so a snapshot run never
    loads pyarrow for nothing (the plan imports it: about 37 MB and 0.1 s a run)."""
    folder = _side(tmp_path, "plans", pg_database(), True)
    planned: list[str] = []
    real = run_columnar.plan

    def spy(cfg: Any, *args: Any) -> Any:
        planned.append(cfg.changes.method)
        return real(cfg, *args)

    monkeypatch.setattr(run_columnar, "plan", spy)
    plans = {}
    for method in ("watermark", "snapshot"):
        text = (folder / "sheet.yaml").read_text()
        if method == "snapshot":
            text = text.replace(
                "{method: watermark, column: last_modified, lag: 0s}",
                "{method: snapshot}\n    deletes: {policy: ignore}",
            )
        (folder / "sheet.yaml").write_text(text)
        with _engine(folder) as engine:
            plans[method] = engine.parts("customers").columnar
    assert plans["watermark"] is not None and plans["snapshot"] is None
    assert planned == ["watermark"]
