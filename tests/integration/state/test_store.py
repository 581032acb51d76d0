"""The state store on SQLite (default) and PostgreSQL: migrations, refusal to start from zero,
cursor audit, reset and retention."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync import errors, records
from mapsync.state import lease, report, schema
from mapsync.state.retention import purge
from mapsync.state.store import Counts, StateStore, resolve_url
from tests import helpers as h


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///state/state.db"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make().replace("postgresql://", "postgresql+psycopg://")


def test_relative_sqlite_path_belongs_to_the_sheet_folder(tmp_path: Path) -> None:
    url = resolve_url("sqlite:///.mapsync/state.db", tmp_path / "sheets")
    assert url == f"sqlite:///{(tmp_path / 'sheets' / '.mapsync' / 'state.db').resolve()}"


def test_missing_store_is_an_error_never_a_fresh_start(tmp_path: Path) -> None:
    with pytest.raises(errors.StateError, match="does not exist"):
        StateStore.open("sqlite:///nope/state.db", tmp_path, create=False)
    assert not (tmp_path / "nope").exists()


def test_garbage_file_is_unreadable_not_empty(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"\x00garbage, not a database\xff" * 100)
    with pytest.raises(errors.StateError, match="unreadable"):
        StateStore.open("sqlite:///state.db", tmp_path, create=False)


def test_newer_schema_is_refused(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    with store.engine.begin() as conn:
        conn.execute(sa.update(schema.meta).values(value=str(schema.SCHEMA_VERSION + 1)))
    store.close()
    with pytest.raises(errors.StateError, match="newer"):
        StateStore.open(state_url, tmp_path, create=False)


def test_store_without_tables_is_refused_unless_created(state_url: str, tmp_path: Path) -> None:
    if state_url.startswith("sqlite"):
        (tmp_path / "state").mkdir()
        sa.create_engine(resolve_url(state_url, tmp_path)).connect().close()  # an empty database file
    with pytest.raises(errors.StateError, match="no mapsync tables"):
        StateStore.open(state_url, tmp_path, create=False)
    StateStore.open(state_url, tmp_path, create=True).close()
    StateStore.open(state_url, tmp_path, create=False).close()


def test_commit_keeps_ledger_errors_cursor_and_audit(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    held = lease.acquire(store, "s", dt.timedelta(minutes=1))
    run_id = store.start_run("s", "run", "test", held.token)
    version = dt.datetime(2026, 1, 1, 10, 0, 2, 123456)  # noqa: DTZ001 (a naive source column)
    store.commit(
        sync="s",
        token=held.token,
        run_id=run_id,
        delivered=[records.Delivered(("a", 1), version, "h1", '["a",1]')],
        rejected=[records.Rejection(("b", 2), "field `nm` length 212 > 150", "nm", "length", version)],
        cursors={"watermark": version},
        counts=Counts(read=2, written=1, rejected=1),
        lease_ttl=held.ttl,
    )
    assert store.cursor("s", "watermark") == version  # exact, microseconds kept
    entry = store.ledger("s", [("a", 1), ("b", 2)])
    assert set(entry) == {("a", 1)} and entry[("a", 1)].version == version and entry[("a", 1)].hash == "h1"
    open_errors = report.record_errors(store, "s", False, 10)
    assert [(e["key"], e["field"], e["rule"], e["attempts"]) for e in open_errors] == [
        ('["b",2]', "nm", "length", 1)
    ]
    run = store.run(run_id)
    assert (run["read"], run["written"], run["rejected"]) == (2, 1, 1)

    # the rejected key delivered later: its error resolves by itself; the cursor move is audited
    store.commit(
        sync="s",
        token=held.token,
        run_id=run_id,
        delivered=[records.Delivered(("b", 2), version, "h2", '["b",2]')],
        rejected=[],
        cursors={"watermark": version + dt.timedelta(seconds=1)},
        counts=Counts(written=1),
        lease_ttl=held.ttl,
    )
    assert report.record_errors(store, "s", False, 10) == []
    assert [a["name"] for a in report.audit(store, "s", 10)] == ["watermark", "watermark"]

    # a stolen lease fences the commit: nothing of it lands
    with store.engine.begin() as conn:
        conn.execute(sa.update(schema.leases).values(token="someone-else"))
    with pytest.raises(errors.LeaseLost):
        store.commit(
            sync="s",
            token=held.token,
            run_id=run_id,
            delivered=[],
            rejected=[],
            cursors={"watermark": version + dt.timedelta(hours=1)},
            counts=Counts(),
            lease_ttl=held.ttl,
        )
    assert store.cursor("s", "watermark") == version + dt.timedelta(seconds=1)
    store.close()


def test_reset_and_retention(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    held = lease.acquire(store, "s", dt.timedelta(minutes=1))
    old = store.start_run("s", "run", "test", held.token)
    store.finish_run(old, "success")
    new = store.start_run("s", "run", "test", held.token)
    store.finish_run(new, "success")
    store.set_cursors("s", {"watermark": "2026-01-01 10:00:00"}, new)
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(schema.runs)
            .where(schema.runs.c.id == old)
            .values(finished_at="2000-01-01T00:00:00.000000Z")
        )
        conn.execute(
            sa.update(schema.runs)
            .where(schema.runs.c.id == new)
            .values(finished_at="2000-01-02T00:00:00.000000Z")
        )
    removed = purge(store, "s", dt.timedelta(days=1))
    assert removed["runs"] == 1  # the latest run is kept however old
    assert [r["id"] for r in report.runs(store, "s", 10)] == [new]
    lease.release(store, held)
    report.reset(store, "s")
    assert store.cursors("s") == {}
    store.close()


def test_state_on_postgresql_drives_a_real_sync(pg_database: Callable[[], str], tmp_path: Path) -> None:
    src, dst, state = pg_database(), pg_database(), pg_database()
    h.execute(src, "CREATE TABLE items (sku VARCHAR(10) PRIMARY KEY, descr TEXT, last_modified TIMESTAMPTZ)")
    h.execute(dst, "CREATE TABLE products (sku VARCHAR(10) PRIMARY KEY, nm VARCHAR(20))")
    h.execute(
        src,
        "INSERT INTO items VALUES (:s, :d, now() - interval '1 hour')",
        params=[{"s": f"S{i}", "d": f"item {i}"} for i in range(25)],
    )
    (tmp_path / "sheet.yaml").write_text(f"""
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
state: {{url: "{state}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    fields: {{nm: descr}}
""")
    assert h.mapsync("run", "sheet.yaml", cwd=tmp_path).returncode == 2  # no state yet: refuse
    seeded = h.mapsync("seed", "sheet.yaml", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert h.query(state, "SELECT COUNT(*) FROM mapsync_ledger")[0][0] == 25
    assert h.query(dst, "SELECT COUNT(*) FROM products")[0][0] == 25
    assert not (tmp_path / ".mapsync").exists()


def test_two_processes_create_a_fresh_postgresql_store_at_once(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """Both opens succeed and the schema is created once (an advisory lock serialises them)."""
    import threading

    url = pg_database()
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            StateStore.open(url, tmp_path, create=True).close()
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert h.query(url, "SELECT value FROM mapsync_meta WHERE name = 'schema_version'") == [
        (str(schema.SCHEMA_VERSION),)
    ]
