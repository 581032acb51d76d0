"""Failures of the state store itself, and failures before a run row exists (issue 9, items 15, 16).

Real services: the state store on SQLite and PostgreSQL. SQLite is locked by a second connection
holding `BEGIN IMMEDIATE`, filled with `PRAGMA max_page_count`, made read-only with
`PRAGMA query_only`; PostgreSQL is cut with `pg_terminate_backend`, shut with `ALLOW_CONNECTIONS
false`, and unreachable on a closed port. Each failure is one clear line (which store, what
happened, what to do), transient ones are retried, and no run stays `running`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import cli, crash, errors, records
from mapsync.state import faults, lease, ledger, report, schema
from mapsync.state.store import Counts, StateStore
from tests import helpers as h

N = 30


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "DELAYS", (0.05, 0.1, 0.2, 0.4))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite:///.mapsync/state.db"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make().replace("postgresql://", "postgresql+psycopg://")


def _sheet(folder: Path, state: str, src: str, dst: str, lock_timeout: str = "10s") -> Path:
    sheet = {
        "version": 1,
        "state": {"url": state, "lock_timeout": lock_timeout},
        "connections": {"erp": {"url": src}, "shop": {"url": dst}},
        "syncs": {
            "items": {
                "from": {"connection": "erp", "table": "items"},
                "to": {"connection": "shop", "table": "items_dst"},
                "key": {"from": "id", "to": "id"},
                "fields": {"title": "name"},
                "changes": {"method": "full"},
                "delivery": {"batch": 10},
            }
        },
    }
    path = folder / "sheet.yaml"
    path.write_text(json.dumps(sheet), encoding="utf-8")  # JSON is YAML
    return path


def _world(folder: Path, state: str, n: int = N) -> tuple[str, str, Path]:
    """SQLite source and destination files, `n` rows to sync, and a sheet."""
    src, dst = f"sqlite:///{folder / 'erp.db'}", f"sqlite:///{folder / 'shop.db'}"
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    if n:
        h.execute(
            src,
            "INSERT INTO items VALUES (:id, :name)",
            params=[{"id": i, "name": f"item {i}"} for i in range(1, n + 1)],
        )
    h.execute(dst, "CREATE TABLE items_dst (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
    return src, dst, _sheet(folder, state, src, dst)


def _cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`mapsync ARGS` in this process (so a test can reach into it); exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["mapsync", *args])
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_clear_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err and "sqlalchemy" not in err.lower(), err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err


def _store(sheet: Path) -> Iterator[StateStore]:
    from mapsync.sheet import loader

    loaded = loader.load(sheet)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=False)
    try:
        yield store
    finally:
        store.close()


def _runs(sheet: Path) -> list[dict[str, Any]]:
    for store in _store(sheet):
        return list(reversed(report.runs(store, "items", 100)))
    return []


# --------------------------------------------------------------------------- item 15: SQLite


@pytest.fixture
def sqlite_state(tmp_path: Path) -> Path:
    return tmp_path / ".mapsync" / "state.db"


def test_locked_sqlite_store_is_retried_then_named(
    tmp_path: Path, sqlite_state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _src, dst, sheet = _world(tmp_path, "sqlite:///.mapsync/state.db", n=5)
    sheet.write_text(sheet.read_text().replace('"10s"', '"100ms"'), encoding="utf-8")
    assert _cli(monkeypatch, capsys, "seed", str(sheet))[0] == 0
    locker = sqlite3.connect(sqlite_state, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another process's write lock
        t0 = time.monotonic()
        code, _out, err = _cli(monkeypatch, capsys, "run", str(sheet))
        elapsed = time.monotonic() - t0
    finally:
        locker.rollback()
        locker.close()
    assert code == 1
    _one_clear_line(
        err, f"state store {sqlite_state}", "is locked by another process", "tried 5 times", "lock_timeout"
    )
    assert elapsed < 5, elapsed  # bounded: 5 tries of 100 ms plus the pauses
    # a lock released during the retries is waited out: the run goes through
    locker = sqlite3.connect(sqlite_state, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: (locker.rollback(), locker.close())).start()
    code, out, err = _cli(monkeypatch, capsys, "run", str(sheet))
    assert code == 0, err
    assert "success" in out
    assert [r["status"] for r in _runs(sheet)] == ["success", "success"]
    assert h.query(dst, "SELECT COUNT(*) FROM items_dst") == [(5,)]


def test_full_sqlite_store_stops_the_run_with_one_line_and_loses_nothing(
    tmp_path: Path, sqlite_state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst, sheet = _world(tmp_path, "sqlite:///.mapsync/state.db", n=0)
    assert _cli(monkeypatch, capsys, "seed", str(sheet))[0] == 0
    rows = [{"id": i, "name": f"item {i} " + "x" * 400} for i in range(1, 401)]
    h.execute(src, "INSERT INTO items VALUES (:id, :name)", params=rows)
    opened = StateStore.open

    def full(url: str, folder: Path, *, create: bool, **options: Any) -> StateStore:
        store = opened(url, folder, create=create, **options)

        @sa.event.listens_for(store.engine, "connect")
        def no_growth(dbapi_conn: Any, _record: Any) -> None:
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count={pages + 2}")  # the disk is (nearly) full

        store.engine.dispose()
        return store

    monkeypatch.setattr(StateStore, "open", full)
    code, out, err = _cli(monkeypatch, capsys, "run", str(sheet))
    assert code == 1
    assert "Traceback" not in out + err
    text = out + err
    assert "is full" in text and "free space" in text, text
    monkeypatch.setattr(StateStore, "open", opened)
    # nothing lost: with space again, the next run delivers every row
    code, out, err = _cli(monkeypatch, capsys, "run", str(sheet))
    assert code == 0, err
    assert h.query(dst, "SELECT COUNT(*) FROM items_dst") == [(400,)]
    assert all(r["status"] != "running" for r in _runs(sheet))


def test_read_only_sqlite_store_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _src, _dst, sheet = _world(tmp_path, "sqlite:///.mapsync/state.db", n=3)
    assert _cli(monkeypatch, capsys, "seed", str(sheet))[0] == 0
    opened = StateStore.open

    def read_only(url: str, folder: Path, *, create: bool, **options: Any) -> StateStore:
        store = opened(url, folder, create=create, **options)
        sa.event.listen(store.engine, "connect", lambda c, _r: c.execute("PRAGMA query_only=1"))
        store.engine.dispose()
        return store

    monkeypatch.setattr(StateStore, "open", read_only)
    code, _out, err = _cli(monkeypatch, capsys, "run", str(sheet))
    assert code == 2
    _one_clear_line(err, "state store", "is read-only", "writable")


def test_corrupt_sqlite_store_is_named(
    tmp_path: Path, sqlite_state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _world(tmp_path, "sqlite:///.mapsync/state.db", n=1)
    sqlite_state.parent.mkdir()
    sqlite_state.write_bytes(b"\x00not a database\xff" * 512)
    code, _out, err = _cli(monkeypatch, capsys, "status", str(tmp_path / "sheet.yaml"))
    assert code == 2
    _one_clear_line(err, f"state store {sqlite_state}", "is unreadable", "backup")


# --------------------------------------------------------------------------- item 15: PostgreSQL


def test_unreachable_postgresql_store_is_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = "postgresql+psycopg://mapsync:s3cret-Pw@127.0.0.1:1/state"  # nothing listens on port 1
    _world(tmp_path, state, n=1)
    code, _out, err = _cli(monkeypatch, capsys, "run", str(tmp_path / "sheet.yaml"))
    assert code == 1
    _one_clear_line(
        err,
        "state store postgresql+psycopg://mapsync:***@127.0.0.1:1/state",
        "cannot be reached",
        "tried 5 times",
    )
    assert "s3cret" not in err


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def _terminate(url: str) -> None:
    """Cut every connection to the database of `url` (as a server restart would)."""
    name = sa.make_url(url).database
    with _admin(url).connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        )


@pytest.mark.postgres
def test_postgresql_store_cut_inside_the_state_commit_is_retried_once_not_doubled(
    tmp_path: Path,
    pg_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = pg_database().replace("postgresql://", "postgresql+psycopg://")
    _src, dst, sheet = _world(tmp_path, state)
    assert _cli(monkeypatch, capsys, "seed", str(sheet))[0] == 0
    h.execute(_src, "UPDATE items SET name = name || ' v2'")
    cuts = []
    point = crash.point

    def cut_once(name: str) -> None:
        if name == "during_state_write" and not cuts:
            cuts.append(name)
            _terminate(state)  # the state transaction is open: its COMMIT hits a dead connection
        point(name)

    monkeypatch.setattr(crash, "point", cut_once)
    code, out, err = _cli(monkeypatch, capsys, "--log-level", "info", "run", str(sheet), "--json")
    assert code == 0, err
    assert cuts and "state_retry reason=cut try=1 what=commit" in err, err
    (run,) = json.loads(out)
    assert run["status"] == "success"
    assert (run["counts"]["read"], run["counts"]["written"]) == (N, N)
    stored = _runs(sheet)[-1]
    assert (stored["status"], stored["read"], stored["written"]) == ("success", N, N)  # not doubled
    assert h.query(dst, "SELECT COUNT(*) FROM items_dst WHERE title LIKE '% v2'") == [(N,)]


BOOT = """
import sys
import sqlalchemy as sa
from mapsync import cli, crash
from mapsync.state import faults

faults.DELAYS = (0.05, 0.1)
admin, name = sys.argv[1], sys.argv[2]
point = crash.point


def shut(at):
    if at == "after_write":  # the destination has the batch; the state store goes away for good
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
        engine.dispose()
    point(at)


crash.point = shut
sys.argv = ["mapsync", *sys.argv[3:]]
cli.main()
"""


@pytest.mark.postgres
def test_a_run_whose_postgresql_store_goes_away_never_stays_running(
    tmp_path: Path,
    pg_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = pg_database().replace("postgresql://", "postgresql+psycopg://")
    name = sa.make_url(state).database
    assert name
    _src, dst, sheet = _world(tmp_path, state)
    assert _cli(monkeypatch, capsys, "seed", str(sheet))[0] == 0
    h.execute(_src, "UPDATE items SET name = name || ' v2'")
    boot = tmp_path / "boot.py"
    boot.write_text(BOOT, encoding="utf-8")
    admin = sa.make_url(state).set(database="postgres").render_as_string(hide_password=False)
    try:
        done = subprocess.run(
            [sys.executable, str(boot), admin, name, "run", str(sheet)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        with _admin(state).connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    assert done.returncode == 1, done.stderr
    _one_clear_line(done.stderr, "state store postgresql+psycopg://", "cannot be reached")
    # the next open (here: `status`) marks the run failed: it never stays `running`
    code, out, err = _cli(monkeypatch, capsys, "status", str(sheet), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    last = row["last_run"]
    assert (last["kind"], last["status"], last["failure_class"]) == ("run", "failed", "tool")
    assert "died or lost the state store" in last["message"]
    # and the batch that reached the destination but not the state is simply re-sent
    code, out, err = _cli(monkeypatch, capsys, "run", str(sheet))
    assert code == 0, err
    assert h.query(dst, "SELECT COUNT(*) FROM items_dst WHERE title LIKE '% v2'") == [(N,)]


# --------------------------------------------------------------------------- item 16


def _last(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sheet: Path) -> dict[str, Any]:
    code, out, err = _cli(monkeypatch, capsys, "status", str(sheet), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    return dict(row["last_run"])


def test_failures_before_the_run_row_are_recorded_with_their_class(
    tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst, sheet = _world(tmp_path, state_url, n=3)
    good = sheet.read_text()

    # unseeded: not the previous success, nothing at all before: a failed run of class `unseeded`
    h.execute(dst, "SELECT 1")
    code, _out, err = _cli(monkeypatch, capsys, "seed", str(sheet))
    assert code == 0, err
    for store in _store(sheet):
        report.reset(store, "items")
    code, _out, err = _cli(monkeypatch, capsys, "run", str(sheet))
    assert code == 2 and "has not been seeded" in err
    last = _last(monkeypatch, capsys, sheet)
    assert (last["status"], last["failure_class"]) == ("failed", "unseeded")
    assert _cli(monkeypatch, capsys, "seed", str(sheet))[0] == 0
    assert _last(monkeypatch, capsys, sheet)["status"] == "success"

    # unreachable source, then destination (nothing listens on port 1): classes source, destination
    for end, cls in (("erp", "source"), ("shop", "destination")):
        url = src if end == "erp" else dst
        sheet.write_text(good.replace(json.dumps(url), json.dumps("postgresql://u:pw@127.0.0.1:1/x")))
        code, _out, err = _cli(monkeypatch, capsys, "run", str(sheet))
        assert code == 1, err
        last = _last(monkeypatch, capsys, sheet)
        assert (last["kind"], last["status"], last["failure_class"]) == ("run", "failed", cls), last
        assert "cannot connect" in last["message"] and "pw" not in last["message"]
    sheet.write_text(good)

    # a dropped source column, then table: class config, named
    h.execute(src, "ALTER TABLE items DROP COLUMN name")
    code, _out, err = _cli(monkeypatch, capsys, "run", str(sheet))
    assert code == 2
    last = _last(monkeypatch, capsys, sheet)
    assert (last["status"], last["failure_class"]) == ("failed", "config") and "name" in last["message"]
    h.execute(src, "DROP TABLE items")
    _cli(monkeypatch, capsys, "run", str(sheet))
    last = _last(monkeypatch, capsys, sheet)
    assert (last["status"], last["failure_class"]) == ("failed", "config") and "items" in last["message"]

    # all of them are in the run history with their class (`state show --json` lists them)
    code, out, _err = _cli(monkeypatch, capsys, "state", "show", str(sheet), "--json")
    (shown,) = json.loads(out)
    assert [r["failure_class"] for r in shown["runs"]] == ["config", "config", "destination", "source", None]
    code, out, _err = _cli(monkeypatch, capsys, "state", "show", str(sheet))
    assert "failed (destination)" in out and "failed (source)" in out


def test_an_already_seeded_seed_is_a_usage_error_not_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _world(tmp_path, "sqlite:///.mapsync/state.db", n=2)
    sheet = tmp_path / "sheet.yaml"
    assert _cli(monkeypatch, capsys, "seed", str(sheet))[0] == 0
    code, _out, err = _cli(monkeypatch, capsys, "seed", str(sheet))
    assert code == 2 and "--again" in err
    assert [r["status"] for r in _runs(sheet)] == ["success"]


def test_state_error_reasons_name_the_failure_class() -> None:
    assert errors.StateError("x", reason="locked").failure_class == "state"
    assert errors.StateError("x", reason="unseeded").failure_class == "unseeded"


@pytest.mark.postgres
def test_direct_users_of_the_store_engine_get_the_same_named_error(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    state = pg_database().replace("postgresql://", "postgresql+psycopg://")
    name = sa.make_url(state).database
    store = StateStore.open(state, tmp_path, create=True)
    try:
        report.runs(store, "items", 5)  # a pooled connection, then the server goes away
        with _admin(state).connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        _terminate(state)
        with pytest.raises(errors.StateError, match="cannot be reached") as caught:
            report.runs(store, "items", 5)  # `state.report` uses `store.engine` itself
        assert caught.value.reason == "unreachable"
    finally:
        with _admin(state).connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        store.close()


@pytest.mark.postgres
def test_ledger_reads_on_a_connection_cut_mid_statement_are_retried_then_named(
    pg_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger's lookups run the driver's SQL (`ledger._fetch`). A connection that dies after
    the pool handed it out (the server restarted, or the lease deadline cut it) fails inside the
    statement: that is retried on a new connection, and a store that stays away is a named
    `StateError`, never the driver's own exception (a daemon's run crashed with a traceback
    when it was). The backend is terminated for real, right before the statement."""
    state = pg_database().replace("postgresql://", "postgresql+psycopg://")
    name = sa.make_url(state).database
    store = StateStore.open(state, tmp_path, create=True)
    real = ledger._fetch
    cuts: list[int] = []

    def cut_first(conn: sa.Connection, sql: str, params: Any) -> list[Any]:
        if len(cuts) < cuts_wanted[0]:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with _admin(state).connect() as admin:  # and wait until it is gone: the signal is async
                admin.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
            cuts.append(int(pid))  # type: ignore[arg-type]
        return real(conn, sql, params)

    cuts_wanted = [1]
    monkeypatch.setattr(ledger, "_fetch", cut_first)
    keys = [("a", 1), ("b", 2)]
    try:
        assert store.ledger("items", keys) == {}  # cut once, retried on a new connection
        assert len(cuts) == 1
        cuts_wanted[0] = 2
        assert store.ledger_page("items", ["x"]) == {}
        assert len(cuts) == 2
        cuts_wanted[0] = 100  # every try cut, and no new connection allowed: named
        with _admin(state).connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        with pytest.raises(errors.StateError) as caught:
            store.ledger("items", keys)
        assert caught.value.reason in ("unreachable", "cut"), caught.value.reason
    finally:
        with _admin(state).connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        store.close()


def test_the_ledgers_driver_sql_fails_as_sqlalchemy_errors(state_url: str, tmp_path: Path) -> None:
    """`ledger._fetch` runs the driver's SQL through SQLAlchemy, so any driver failure reaches the
    store's fault handling as a `DBAPIError` (classified, retried or named, the connection
    invalidated when dead). A raw driver cursor raised the driver's own exception: a connection
    the lease deadline cut mid-statement crashed a daemon's run with a traceback."""
    store = StateStore.open(state_url, tmp_path, create=True)
    try:
        with store.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
            ledger._fetch(conn, "SELECT nothing FROM no_such_table", ())
    finally:
        store.close()


def test_a_batch_commit_whose_answer_was_lost_is_not_applied_twice(
    state_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try committed, then the connection broke before the answer (a cut after
    COMMIT): the retry finds its own mark on the lease and adds nothing."""
    store = StateStore.open(state_url, tmp_path, create=True)
    try:
        held = lease.acquire(store, "s", dt.timedelta(minutes=1))
        run_id = store.start_run("s", "run", "test", held.token)
        first_try = StateStore._commit
        lost: list[int] = []

        def answer_lost(self: StateStore, *args: Any) -> list[dict[str, Any]]:
            result = first_try(self, *args)
            if not lost:
                lost.append(1)
                raise faults.StoreFault("cut", "cut", RuntimeError("server closed the connection"))
            return result

        monkeypatch.setattr(StateStore, "_commit", answer_lost)
        store.commit(
            sync="s",
            token=held.token,
            run_id=run_id,
            delivered=[records.Delivered(("a", 1), 1, "h1", None)],
            rejected=[records.Rejection(("b", 2), "too long", "nm", "length", 1)],
            cursors={"watermark": 5},
            counts=Counts(read=2, written=1, rejected=1),
            lease_ttl=held.ttl,
        )
        assert lost
        run = store.run(run_id)
        assert (run["read"], run["written"], run["rejected"]) == (2, 1, 1)  # not doubled
        with store.engine.connect() as conn:
            attempts = conn.execute(sa.select(schema.record_errors.c.attempts)).scalars().all()
        assert attempts == [1]
        assert store.cursor("s", "watermark") == 5
    finally:
        store.close()
