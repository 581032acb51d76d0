"""State schema v5 (the daemon's columns and tables): a v4 store on SQLite and PostgreSQL
upgrades in place, keeping its runs and record errors; the slot index then holds; two processes
taking run requests at once never get the same one."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync import errors
from mapsync.state import schema
from mapsync.state.store import StateStore

_V4 = sa.MetaData()
V4_RUNS = sa.Table(  # the v4 shape, as released
    "mapsync_runs",
    _V4,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sync", sa.String(128), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("scheduled_at", sa.String(40), nullable=True),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("failure_class", sa.String(16), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("lease_token", sa.String(64), nullable=False),
    *(
        sa.Column(name, sa.Integer, nullable=False, default=0)
        for name in ("read", "written", "skipped", "rejected", "deleted", "missed", "truncated", "defaulted")
    ),
)
V4_ERRORS = sa.Table(
    "mapsync_record_errors",
    _V4,
    sa.Column("sync", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("version", sa.Text, nullable=True),
    sa.Column("field", sa.String(128), nullable=True),
    sa.Column("rule", sa.String(64), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.String(40), nullable=False),
    sa.Column("last_seen", sa.String(40), nullable=False),
    sa.Column("resolved_at", sa.String(40), nullable=True),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("value", sa.Text, nullable=True),
)
AT = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make().replace("postgresql://", "postgresql+psycopg://")


def _v4_store(state_url: str, tmp_path: Path) -> None:
    """A store as v4 left it: two runs (one scheduled) and a record error tried 5 times."""
    store = StateStore.open(state_url, tmp_path, create=True)
    with store.engine.begin() as conn:
        for table in (schema.run_requests, schema.controls, schema.runs, schema.record_errors):
            table.drop(conn)
        _V4.create_all(conn)
        run = {"kind": "run", "trigger": "cli", "started_at": "t", "status": "success", "lease_token": "x"}
        conn.execute(
            sa.insert(V4_RUNS),
            [{**run, "sync": "s"}, {**run, "sync": "s", "scheduled_at": "2026-05-01T08:00:00.000000Z"}],
        )
        conn.execute(
            sa.insert(V4_ERRORS).values(
                sync="s", key="[1]", message="m", attempts=5, first_seen="t", last_seen="t", run_id=1
            )
        )
        m = schema.meta
        conn.execute(sa.update(m).where(m.c.name == "schema_version").values(value="4"))
    store.close()


def test_a_v4_store_upgrades_in_place(state_url: str, tmp_path: Path) -> None:
    assert schema.SCHEMA_VERSION >= 5
    _v4_store(state_url, tmp_path)
    store = StateStore.open(state_url, tmp_path, create=False)
    try:
        with store.engine.connect() as conn:
            version = conn.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.name == "schema_version")
            )
            assert version.scalar() == str(schema.SCHEMA_VERSION)
        old = store.run(2)
        assert (old["status"], old["slot"], old["worker"], old["coalesced"], old["lateness_ms"]) == (
            "success",
            None,
            None,
            0,
            None,
        )
        assert store.open_error_keys("s", live_only=True) == [(1,)]  # kept, alive
        assert store.bury("s", 3) == 1 and store.open_error_keys("s", live_only=True) == []
        # the slot index holds on the migrated table; unscheduled runs do not collide
        first = store.start_run("s", "run", "schedule", "tok", AT, slot="run")
        with pytest.raises(errors.SlotTaken):
            store.start_run("s", "run", "schedule", "other", AT, slot="run")
        assert first > 2 and store.last_slot("s", "run") == AT
        store.pause("s", "al@host")
        assert store.request_run("s", "run", "al@host") == 1 and set(store.paused()) == {"s"}
    finally:
        store.close()
    StateStore.open(state_url, tmp_path, create=False).close()  # opening again changes nothing


def test_two_takers_never_get_the_same_request(state_url: str, tmp_path: Path) -> None:
    stores = [StateStore.open(state_url, tmp_path, create=True) for _ in range(2)]
    try:
        ids = {stores[0].request_run(f"s{i % 3}", "run", "al@host") for i in range(30)}
        got: dict[str, list[int]] = {}
        start = threading.Barrier(2)

        def take(name: str, store: StateStore) -> None:
            start.wait()
            mine = got.setdefault(name, [])
            for _ in range(10):
                mine += [r.id for r in store.take_requests(["s0", "s1", "s2"], name)]

        threads = [threading.Thread(target=take, args=(f"w{i}", s)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got["w0"] + got["w1"]) == sorted(ids)  # each once, none lost
        taken_by = {r.id: r.taken_by for r in stores[1].requests(limit=100)}
        assert all(taken_by[i] == "w0" for i in got["w0"]) and all(taken_by[i] == "w1" for i in got["w1"])
    finally:
        for s in stores:
            s.close()
