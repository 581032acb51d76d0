"""The crash matrix (RELIABILITY.md §3.2 A1–A3, A6, CP1–CP9) on real SQLite, PostgreSQL, MariaDB.

Every test runs `mapsync seed|run` that dies at one named crash point in the 2nd batch, proves
the point fired (marker file, exit as by SIGKILL), reruns without the crash (the dead run's lease
is taken over at once) and then checks the oracles:

- O1 convergence: the destination holds exactly the mapped source rows, every column;
- O2 no loss: every source key is at the destination or an open record error, never both;
- O3 bounded redelivery: destination row writes ≤ the crash-free count + one batch per crash,
  and none at all for points where nothing uncommitted was delivered;
- O6 watermark history never goes back; the crashed run is recorded as failed, the lease freed.

Both paths: `seed` (key-order keyset reads, `seed.after` resume) and the incremental watermark
`run` (`(ts, key)` keyset reads, `position` resume) after a clean seed and changed rows.

How the run dies. Every case dies in-process (`mapsync.crash` in raise mode, tests/cli_runner.py):
the point raises `Crashed`, which nothing catches; its open transactions roll back, every later
statement or commit of the dead run is refused, and its lease names a pid that has exited, so it
leaves what a killed process leaves. The real-SIGKILL subset (cases `…-sigkill`: `python -m
mapsync` as a process that SIGKILLs itself) kills every point of CRASH_POINTS for real once on
each backend, on the seed path or the incremental one in turn (`_real_kill`):

| point               | sqlite | postgresql | mariadb |
| ------------------- | ------ | ---------- | ------- |
| after_read          | seed   | run        | seed    |
| after_write         | run    | seed       | run     |
| after_ack           | seed   | seed       | seed    |
| after_commit        | run    | seed       | run     |
| during_write        | seed   | run        | seed    |
| during_state_write  | run    | seed       | run     |
| during_error_record | seed   | seed       | seed    |

(after_ack and during_error_record are seed-only: see RUN_SKIPS.) The asynchronous points
(crash.ASYNC_POINTS) are killed for real in tests/integration/rest/test_async_delivery.py.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync.connectors.sql_source import parse_time
from mapsync.engine import CRASH_POINTS, Engine
from mapsync.sheet import loader
from mapsync.state import values
from mapsync.state.store import StateStore, stamp
from tests import helpers as h

N = 45  # source rows
BATCH = 10
NTH = 2  # crash in the 2nd batch
SYNC = "items"
STATE_MAP = {"A": "active", "I": "inactive"}  # "X" is unmapped: `on_unknown: reject`
REJECTED = {i for i in range(1, N + 1) if i % 7 == 3}  # 3, 10, 17, 24, 31, 38, 45: one in every batch
CHANGED = [i for i in range(1, N + 1) if i % 4 != 0]  # 34 rows changed before the incremental run
BASE = dt.datetime(2024, 1, 1, 8, 0, 0)  # noqa: DTZ001  (naive UTC, like the columns)

# Points where the crashed batch was confirmed by the destination but its state commit never
# happened: the rerun re-sends that batch (bounded by one batch). At every other point nothing
# uncommitted reached the destination, so a rerun must not write a single extra row.
REPLAYING = {"after_write", "after_ack", "during_state_write", "during_error_record"}

pytestmark = pytest.mark.slow


def test_crash_points_are_the_documented_ones() -> None:
    """The matrix below is parametrised over CRASH_POINTS: it must list CP1–CP5, CP8, CP9."""
    assert set(CRASH_POINTS) >= {
        "after_read",
        "after_write",
        "after_ack",
        "after_commit",
        "during_write",
        "during_state_write",
        "during_error_record",
    }


# --------------------------------------------------------------------------- the world


def _status(i: int) -> str:
    return "X" if i in REJECTED else ("A" if i % 2 else "I")


def _ts(d: str, moment: dt.datetime) -> Any:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if d == "sqlite" else moment


def _amount(d: str, value: decimal.Decimal) -> Any:
    return str(value) if d == "sqlite" else value


def _build(src: str, dst: str) -> None:
    ts = h.TS[h.dialect(src)]
    h.execute(
        src,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(60) NOT NULL, "
        "status VARCHAR(2) NOT NULL, amount NUMERIC(10,2), note VARCHAR(40), "
        f"updated_at {ts} NOT NULL)",
    )
    d = h.dialect(src)
    rows = [
        {
            "id": i,
            "name": f"item {i:02d} Müller-{'ß' * (i % 3)}",
            "status": _status(i),
            "amount": _amount(d, decimal.Decimal(i * 137) / 100),
            "note": None if i % 5 == 0 else f"note {i}",
            # distinct, with microseconds, in key order, long before the seed's watermark
            "updated_at": _ts(d, BASE + dt.timedelta(minutes=i, microseconds=i * 1001)),
        }
        for i in range(1, N + 1)
    ]
    h.execute(
        src,
        "INSERT INTO items (id, name, status, amount, note, updated_at) "
        "VALUES (:id, :name, :status, :amount, :note, :updated_at)",
        params=rows,
    )
    h.execute(
        dst,
        "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title VARCHAR(60) NOT NULL, "
        "state VARCHAR(20) NOT NULL, amount NUMERIC(10,2), note VARCHAR(40) NOT NULL, "
        f"changed_at {h.TS[h.dialect(dst)]} NOT NULL)",
    )
    h.install_write_counter(dst, "items_dst")


def _change_rows(src: str) -> None:
    """Change CHANGED rows after the seed: new name, amount, note and status A↔I (X stays X);
    `updated_at` is now (after the seed's watermark), one microsecond apart in key order."""
    d = h.dialect(src)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        {
            "id": i,
            "name": f"item {i:02d} v2 ✓",
            "status": {"A": "I", "I": "A", "X": "X"}[_status(i)],
            "amount": _amount(d, decimal.Decimal(i * 211) / 100 + 1),
            "note": f"changed {i}" if i % 3 else None,
            "updated_at": _ts(d, now + dt.timedelta(microseconds=n)),
        }
        for n, i in enumerate(CHANGED)
    ]
    h.execute(
        src,
        "UPDATE items SET name = :name, status = :status, amount = :amount, note = :note, "
        "updated_at = :updated_at WHERE id = :id",
        params=rows,
    )


def _sheet(folder: Path, src: str, dst: str) -> Path:
    sheet = {
        "version": 1,
        "connections": {"erp": {"url": src, "timezone": "UTC"}, "shop": {"url": dst, "timezone": "UTC"}},
        "syncs": {
            SYNC: {
                "from": {"connection": "erp", "table": "items"},
                "to": {"connection": "shop", "table": "items_dst"},
                "key": {"from": "id", "to": "item_id"},
                "fields": {
                    "title": "name",
                    "state": {"from": "status", "map": STATE_MAP, "on_unknown": "reject"},
                    "amount": "amount",
                    "note": {"from": "note", "default": "-"},
                    "changed_at": "updated_at",
                },
                "changes": {"method": "watermark", "column": "updated_at", "lag": "0s"},
                "delivery": {"batch": BATCH},
            }
        },
    }
    path = folder / "sheet.yaml"
    path.write_text(json.dumps(sheet, indent=2), encoding="utf-8")  # JSON is YAML
    return path


# --------------------------------------------------------------------------- the oracles


def _amount_norm(v: Any) -> Any:
    return None if v is None else decimal.Decimal(str(v)).quantize(decimal.Decimal("0.01"))


def _expected(src: str) -> dict[int, tuple[Any, ...]]:
    """The source after the mapping: the destination row every mappable source row must become."""
    out = {}
    for id_, name, status, amount, note, updated_at in h.query(
        src, "SELECT id, name, status, amount, note, updated_at FROM items"
    ):
        if status in STATE_MAP:
            out[id_] = (id_, name, STATE_MAP[status], _amount_norm(amount), note or "-", updated_at)
    return out


def _actual(dst: str) -> dict[int, tuple[Any, ...]]:
    rows = h.query(dst, "SELECT item_id, title, state, amount, note, changed_at FROM items_dst")
    out = {r[0]: (r[0], r[1], r[2], _amount_norm(r[3]), r[4], r[5]) for r in rows}
    assert len(out) == len(rows), "duplicate keys at the destination"
    return out


def _state(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(folder / ".mapsync" / "state.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_seed(sheet: Path) -> None:
    """A crash-free seed in this process (setup for the incremental path; faster than a CLI run)."""
    loaded = loader.load(sheet)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)
    try:
        report = engine.run(SYNC, "seed")
    finally:
        engine.close()
        store.close()
    assert report.status == "partial", report
    assert report.counts.rejected == len(REJECTED)


# --------------------------------------------------------------------------- the matrix


# The incremental path skips two points whose code and state are the seed's exactly: the
# watermark capture's `acknowledge` is a no-op (after_ack ≡ after_write), and the record-error
# insert sits in the same state transaction for both paths (during_state_write covers the run).
RUN_SKIPS = {"after_ack", "during_error_record"}
BACKENDS = {"sqlite": (), "postgresql": (pytest.mark.postgres,), "mariadb": (pytest.mark.mariadb,)}


def _real_kill(kind: str, point: str, backend: str) -> bool:
    """The real-SIGKILL subset: each point once per backend, seed and run paths in turn."""
    if point in RUN_SKIPS:
        return kind == "seed"
    turn = (list(CRASH_POINTS).index(point) + list(BACKENDS).index(backend)) % 2
    return kind == ("seed" if turn == 0 else "run")


CASES = [
    pytest.param(backend, kind, point, how, id=f"{backend}-{kind}-{point}-{how}", marks=marks)
    for backend, marks in BACKENDS.items()
    for kind in ("seed", "run")
    for point in CRASH_POINTS
    if not (kind == "run" and point in RUN_SKIPS)
    for how in ("inprocess", "sigkill")
    if how == "inprocess" or _real_kill(kind, point, backend)
]


def test_every_point_is_killed_for_real_on_every_backend() -> None:
    """The real-SIGKILL subset covers every crash point on every backend; every case runs in-process."""
    real = {(c.values[0], c.values[2]) for c in CASES if c.values[3] == "sigkill"}
    assert real == {(b, p) for b in BACKENDS for p in CRASH_POINTS}
    inprocess = {(c.values[0], c.values[1], c.values[2]) for c in CASES if c.values[3] == "inprocess"}
    assert len(inprocess) == len(BACKENDS) * (2 * len(CRASH_POINTS) - len(RUN_SKIPS))


@pytest.mark.parametrize(("database", "kind", "point", "how"), CASES, indirect=["database"])
def test_crash_then_rerun_converges(
    database: Callable[[], str], tmp_path: Path, kind: str, point: str, how: str
) -> None:
    src, dst = database(), database()
    _build(src, dst)
    sheet = _sheet(tmp_path, src, dst)
    first_run = 1
    baseline = N - len(REJECTED)  # rows a crash-free seed writes
    if kind == "run":
        _clean_seed(sheet)
        assert h.writes(dst) == baseline, "the write counter must count each row of a clean seed once"
        _change_rows(src)
        baseline += len([i for i in CHANGED if i not in REJECTED])  # rows the clean run writes
        first_run = 2

    # 1. the crashed run: the point fired, in the 2nd batch, and the run died as by SIGKILL (a
    #    real one for the `sigkill` cases)
    marker = tmp_path / "crash.marker"
    env = {"MAPSYNC_CRASH_AT": f"{point}:{NTH}", "MAPSYNC_CRASH_MARKER": str(marker)}
    crashed = h.mapsync(kind, str(sheet), "--sync", SYNC, cwd=tmp_path, env=env, process=how == "sigkill")
    assert crashed.returncode == -signal.SIGKILL, (point, crashed.returncode, crashed.stdout, crashed.stderr)
    assert marker.read_text(encoding="utf-8") == f"{point}:{NTH}\n"
    # it died holding its lease, its run still says `running`: nothing cleaned up behind it
    ((holder_pid, expires_at),) = _state(tmp_path, "SELECT pid, expires_at FROM mapsync_leases")
    assert not _alive(holder_pid)
    assert expires_at > stamp(), "the lease had not expired: a takeover can only be by the dead pid"
    assert _state(tmp_path, f"SELECT status FROM mapsync_runs WHERE id = {first_run}") == [("running",)]
    assert _actual(dst) != _expected(src), "the crash must leave work undone, or the rerun proves nothing"

    # 2. rerun without the crash: the dead holder's lease (TTL 10 min) is taken over at once,
    #    and one run finishes the work
    rerun = h.mapsync(kind, str(sheet), "--sync", SYNC, "--json", cwd=tmp_path)
    assert rerun.returncode == 1, rerun.stderr  # 1: partial (the X rows are record errors)
    reports = json.loads(rerun.stdout)
    assert len(reports) == 1, rerun.stderr
    report = reports[0]
    assert report["status"] == "partial", report
    assert report["run_id"] == first_run + 1
    # it resumed after the last committed batch: it did not start over
    committed = NTH if point == "after_commit" else NTH - 1
    total = N if kind == "seed" else len(CHANGED)
    assert report["counts"]["read"] == total - committed * BATCH, report["counts"]

    # O1 convergence: every column of every row, after the mapping
    expected = _expected(src)
    assert _actual(dst) == expected

    # O2 no loss: each key is delivered or an open record error naming the unmapped value
    errors = _state(
        tmp_path, "SELECT key, field, rule, message FROM mapsync_record_errors WHERE resolved_at IS NULL"
    )
    assert {json.loads(k)[0] for k, *_ in errors} == REJECTED
    assert all(f == "state" and r == "map" and "'X'" in m for _, f, r, m in errors), errors
    assert set(expected) | REJECTED == set(range(1, N + 1))
    ledger = _state(tmp_path, "SELECT key FROM mapsync_ledger WHERE deleted = 0")
    assert {json.loads(k)[0] for (k,) in ledger} == set(expected)

    # O3 redelivery bounded: at most one batch per crash, none where nothing uncommitted landed
    written = h.writes(dst)
    assert written >= baseline
    assert written <= baseline + (BATCH if point in REPLAYING else 0), (written, baseline)

    # the crashed run is recorded as failed by the takeover; the rerun succeeded; lease released
    runs = _state(tmp_path, "SELECT id, kind, status, failure_class, message FROM mapsync_runs ORDER BY id")
    assert [r[:3] for r in runs[first_run - 1 :]] == [
        (first_run, kind, "failed"),
        (first_run + 1, kind, "partial"),
    ]
    assert runs[first_run - 1][3] == "tool" and "died" in runs[first_run - 1][4]
    assert _state(tmp_path, "SELECT COUNT(*) FROM mapsync_leases") == [(0,)]

    # the cursors are final: the seed is done / the run's position is cleared
    cursors = {n: values.decode(v) for n, v in _state(tmp_path, "SELECT name, value FROM mapsync_cursors")}
    assert cursors["seed"]["status"] == "done"
    assert cursors.get("position") is None

    # O6 the watermark history never goes back
    history = [
        values.decode(v)
        for (v,) in _state(
            tmp_path, "SELECT new_value FROM mapsync_cursor_audit WHERE name = 'watermark' ORDER BY id"
        )
    ]
    times = [parse_time(t) for t in history if t is not None]
    assert times == sorted(times) and times
