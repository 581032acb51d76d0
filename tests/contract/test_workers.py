"""Contract: the daemons sharing a store (port `Workers`, `store.workers`): register and beat, the
syncs split by claims, `leave`, a silent worker removed by another's beat and its syncs taken, the
one-daemon rule of `alone`, `overview`; on the SQL stores a newer schema stops a worker before it
writes; on PostgreSQL every time is the database's clock."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors
from mapsync.state import clock, schema
from mapsync.state.data import WorkerInfo
from mapsync.state.ports import Store
from mapsync.state.store import StateStore
from tests import helpers as h
from tests.contract.conftest import _emptied

TTL = dt.timedelta(minutes=5)
SHORT = dt.timedelta(seconds=0.3)  # a registration that expires while the test waits
TWELVE = tuple(f"s{i:02d}" for i in range(12))


def worker(
    name: str, syncs: tuple[str, ...] = TWELVE, *, host: str | None = None, pid: int = 100
) -> WorkerInfo:
    """A worker on another host (its pid is never checked here) unless `host` is given."""
    host = host or f"{name}.test"
    return WorkerInfo(id=f"{host}:{pid}", host=host, pid=pid, syncs=syncs, version="test")


def entry(store: Store, me: WorkerInfo) -> dict[str, Any] | None:
    return next((w for w in store.workers.overview()["workers"] if w["id"] == me.id), None)


def expired(store: Store, me: WorkerInfo) -> bool:
    row = entry(store, me)
    return row is not None and row["alive"] is False


# ----------------------------------------------------------------------------- every store


def test_one_worker_registers_then_its_beat_claims_every_sync(store: Store) -> None:
    a = worker("a")
    token = store.workers.register(a, TTL)
    assert isinstance(token, str) and token
    assert store.workers.overview()["claims"] == {}  # registering claims nothing
    beat = store.workers.beat(a, token, TTL, set())
    assert (beat.token, beat.owns, beat.live, beat.rejoined, beat.gone) == (
        token,
        frozenset(TWELVE),
        1,
        False,
        (),
    )
    assert beat.now.tzinfo is not None and abs((beat.now - clock.utcnow()).total_seconds()) < 5
    again = store.workers.beat(a, token, TTL, set())
    assert (again.token, again.owns, again.rejoined) == (token, frozenset(TWELVE), False)


def test_two_workers_split_the_syncs(store: Store) -> None:
    a, b = worker("a"), worker("b")
    ta = store.workers.register(a, TTL)
    assert len(store.workers.beat(a, ta, TTL, set()).owns) == 12
    tb = store.workers.register(b, TTL)
    first_b = store.workers.beat(b, tb, TTL, set())
    assert (first_b.owns, first_b.live) == (frozenset(), 2)  # all claimed: a releases at its beat
    beat_a = store.workers.beat(a, ta, TTL, set())
    assert len(beat_a.owns) == 6 and beat_a.live == 2
    beat_b = store.workers.beat(b, tb, TTL, set())
    assert len(beat_b.owns) == 6 and not beat_a.owns & beat_b.owns
    assert beat_a.owns | beat_b.owns == set(TWELVE)
    # settled: more beats move nothing
    assert store.workers.beat(a, ta, TTL, set()).owns == beat_a.owns
    assert store.workers.beat(b, tb, TTL, set()).owns == beat_b.owns


def test_busy_syncs_stay_with_their_worker(store: Store) -> None:
    a, b = worker("a"), worker("b")
    ta = store.workers.register(a, TTL)
    store.workers.beat(a, ta, TTL, set())
    tb = store.workers.register(b, TTL)
    store.workers.beat(b, tb, TTL, set())
    busy = set(TWELVE[:9])
    kept = store.workers.beat(a, ta, TTL, busy).owns
    assert kept == busy  # only the 3 idle ones went: a keeps 9, above its share
    assert store.workers.beat(b, tb, TTL, set()).owns == set(TWELVE[9:])


def test_leave_frees_the_claims_at_once(store: Store) -> None:
    a, b = worker("a"), worker("b")
    ta, tb = store.workers.register(a, TTL), store.workers.register(b, TTL)
    store.workers.beat(a, ta, TTL, set())
    store.workers.beat(b, tb, TTL, set())
    store.workers.beat(a, ta, TTL, set())
    owns_b = store.workers.beat(b, tb, TTL, set()).owns
    assert len(owns_b) == 6
    store.workers.leave(b, "not-its-token")  # a stale token removes nothing
    assert entry(store, b) is not None
    store.workers.leave(b, tb)
    view = store.workers.overview()
    assert [w["id"] for w in view["workers"]] == [a.id]
    assert not owns_b & set(view["claims"]) and set(view["claims"].values()) == {a.id}
    beat = store.workers.beat(a, ta, TTL, set())
    assert (beat.owns, beat.live, beat.gone) == (frozenset(TWELVE), 1, ())


def test_an_expired_worker_is_removed_by_anothers_beat_and_rejoins_owning_nothing(store: Store) -> None:
    a, b = worker("a"), worker("b")
    ta = store.workers.register(a, SHORT)
    assert len(store.workers.beat(a, ta, SHORT, set()).owns) == 12
    tb = store.workers.register(b, TTL)
    assert store.workers.beat(b, tb, TTL, set()).owns == frozenset()  # a is alive: its claims hold
    assert h.wait_for(lambda: expired(store, a), timeout=5)
    beat_b = store.workers.beat(b, tb, TTL, set())
    assert (beat_b.gone, beat_b.live, beat_b.owns) == ((a.id,), 1, frozenset(TWELVE))
    assert entry(store, a) is None
    # a comes back: its registration is gone, it joins again with a new token and owns nothing
    back = store.workers.beat(a, ta, TTL, set())
    assert back.rejoined is True and back.token != ta and back.token
    assert (back.owns, back.live, back.gone) == (frozenset(), 2, ())
    row = entry(store, a)
    assert row is not None and row["alive"] is True and row["owns"] == []
    # it gets a share again the usual way: b releases, a claims with its new token
    assert len(store.workers.beat(b, tb, TTL, set()).owns) == 6
    again = store.workers.beat(a, back.token, TTL, set())
    assert (again.rejoined, again.token, len(again.owns)) == (False, back.token, 6)
    # its old token is no longer its registration: a beat with it joins again (its claims are
    # dropped, so free, and it claims its share of them again under the newest token)
    stale = store.workers.beat(a, ta, TTL, set())
    assert stale.rejoined is True and stale.token not in (ta, back.token)
    assert stale.owns == again.owns and store.workers.overview()["claims"].keys() == set(TWELVE)


def test_an_expired_worker_that_beats_before_anyone_removes_it_keeps_its_claims(store: Store) -> None:
    a = worker("a")
    ta = store.workers.register(a, SHORT)
    store.workers.beat(a, ta, SHORT, set())
    assert h.wait_for(lambda: expired(store, a), timeout=5)
    beat = store.workers.beat(a, ta, TTL, set())
    assert (beat.rejoined, beat.token, beat.owns) == (False, ta, frozenset(TWELVE))
    row = entry(store, a)
    assert row is not None and row["alive"] is True


def test_a_worker_of_this_host_whose_process_is_gone_is_removed_at_once(store: Store) -> None:
    me = worker("me", host=socket.gethostname(), pid=os.getpid())
    tm = store.workers.register(me, TTL)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = worker("dead", host=socket.gethostname(), pid=int(done.stdout))
    store.workers.register(dead, TTL)  # its registration is still valid for 5 minutes
    assert entry(store, dead) is not None
    beat = store.workers.beat(me, tm, TTL, set())
    assert (beat.gone, beat.owns, beat.live) == ((dead.id,), frozenset(TWELVE), 1)
    assert entry(store, dead) is None


def test_alone_refuses_a_second_live_worker_and_allows_one_whose_row_expired(store: Store) -> None:
    a, b = worker("a"), worker("b")
    ta = store.workers.register(a, SHORT, alone=True)
    store.workers.beat(a, ta, SHORT, set())
    with pytest.raises(errors.StateError, match=f"allows one daemon, and {a.id} runs it") as refused:
        store.workers.register(b, TTL, alone=True)
    assert refused.value.reason == "one_daemon"
    assert entry(store, b) is None  # refused: nothing written
    assert store.workers.register(a, SHORT, alone=True) != ta  # its own id again: replaced, not refused
    assert h.wait_for(lambda: expired(store, a), timeout=5)
    tb = store.workers.register(b, TTL, alone=True)
    view = store.workers.overview()
    assert [w["id"] for w in view["workers"]] == [b.id] and view["claims"] == {}
    assert store.workers.beat(b, tb, TTL, set()).owns == frozenset(TWELVE)


def test_a_fenced_slot_row_needs_the_claim_and_a_live_registration(store: Store) -> None:
    """A daemon's store writes a slot row without a lease (skipped, failed before its run) only
    while the sync is its claim and its registration lives: once presumed dead (here: it left),
    such a row is SlotGone, and the worker that took over counts the slot."""
    at = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
    a = worker("a", ("s00",))
    ta = store.workers.register(a, TTL)
    store.workers.beat(a, ta, TTL, set())
    store.set_fence(lambda: (a.id, ta))
    try:
        assert store.record_skipped_run("s00", "run", "schedule", at, "run", "paused", "by al") is not None
        store.workers.leave(a, ta)
        later = at + dt.timedelta(minutes=1)
        assert store.record_skipped_run("s00", "run", "schedule", later, "run", "paused", "by al") is None
        with pytest.raises(errors.SlotGone):
            store.record_failed_run("s00", "run", "schedule", "source", "down", later, slot="run")
        assert store.last_slot("s00", "run") == at  # nothing recorded after it left
        unslotted = store.record_skipped_run("s00", "run", "request", None, None, "paused", "by al")
        assert unslotted is not None  # a row that is no slot is not fenced
    finally:
        store.set_fence(None)


def test_overview_lists_workers_with_alive_owns_running_and_the_claims(store: Store) -> None:
    a, b = worker("a", TWELVE[:4]), worker("b", TWELVE[:4])
    ta, tb = store.workers.register(a, TTL), store.workers.register(b, TTL)
    store.workers.beat(a, ta, TTL, set())
    store.workers.beat(b, tb, TTL, set())
    store.workers.beat(a, ta, TTL, set())
    store.workers.beat(b, tb, TTL, set())
    late = worker("late", ("x",))
    store.workers.register(late, -TTL)  # registered already expired; no beat has removed it yet
    store.set_identity(a.id, None)
    lease = store.leases.acquire("s00", TTL)
    run_id = store.start_run("s00", "run", "test", lease.token)

    view = store.workers.overview()
    assert set(view) == {"now", "workers", "claims"}
    clock.unstamp(view["now"])
    assert [w["id"] for w in view["workers"]] == [a.id, b.id, late.id]  # by start
    by_id = {w["id"]: w for w in view["workers"]}
    for w in view["workers"]:
        assert {"id", "host", "pid", "version", "syncs", "started_at", "heartbeat_at", "expires_at"} <= set(w)
        assert {"heartbeat_age_s", "alive", "owns", "running"} <= set(w)
        assert "token" not in w
    assert (by_id[a.id]["alive"], by_id[b.id]["alive"], by_id[late.id]["alive"]) == (True, True, False)
    assert (by_id[a.id]["host"], by_id[a.id]["pid"], by_id[a.id]["syncs"]) == (
        "a.test",
        100,
        list(TWELVE[:4]),
    )
    owns_a, owns_b = by_id[a.id]["owns"], by_id[b.id]["owns"]
    assert len(owns_a) == len(owns_b) == 2 and sorted(owns_a + owns_b) == list(TWELVE[:4])  # 2 live: 2 each
    assert owns_a == sorted(owns_a) and owns_b == sorted(owns_b)
    assert by_id[late.id]["owns"] == [] and by_id[late.id]["heartbeat_age_s"] >= 0
    assert view["claims"] == {**dict.fromkeys(owns_a, a.id), **dict.fromkeys(owns_b, b.id)}
    running = by_id[a.id]["running"]
    assert [(r["sync"], r["run_id"]) for r in running] == [("s00", run_id)]
    clock.unstamp(running[0]["started_at"])
    assert by_id[b.id]["running"] == []


# ----------------------------------------------------------------------------- SQL stores


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[StateStore, str]]:
    """A SQL store and its URL; on PostgreSQL the module's database, its schema version put back."""
    url = "sqlite:///state.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    made = StateStore.open(url, tmp_path, create=True)
    if request.param == "postgresql":
        _emptied(made)
    try:
        yield made, url
    finally:
        set_version(made, schema.SCHEMA_VERSION)
        made.close()


def set_version(store: StateStore, version: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE mapsync_meta SET value = :v WHERE name = 'schema_version'"), {"v": str(version)}
        )


def snapshot(store: StateStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store (and which tables there are)."""
    with store.engine.connect() as conn:
        names = sorted(sa.inspect(conn).get_table_names())
        out = {"": [(n,) for n in names]}
        for name in names:
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            out[name] = sorted(
                (tuple(r) for r in conn.execute(sa.select(table))), key=lambda r: tuple(map(repr, r))
            )
    return out


def test_a_newer_schema_stops_beat_register_and_open_before_they_write(
    sql: tuple[StateStore, str], tmp_path: Path
) -> None:
    store, url = sql
    a = worker("a")
    ta = store.workers.register(a, TTL)
    store.workers.beat(a, ta, TTL, set())
    set_version(store, 99)
    before = snapshot(store)
    assert before["mapsync_workers"] and before["mapsync_claims"]
    with pytest.raises(errors.StateError, match="schema version 99 is newer than this mapsync") as stopped:
        store.workers.beat(a, ta, TTL, set())
    assert stopped.value.reason == "newer_schema"
    with pytest.raises(errors.StateError) as refused:
        store.workers.register(worker("b"), TTL)
    assert refused.value.reason == "newer_schema"
    for create in (True, False):
        with pytest.raises(errors.StateError, match="schema version 99 is newer") as opened:
            StateStore.open(url, tmp_path, create=create)
        assert opened.value.reason == "newer_schema"
    assert snapshot(store) == before


# ----------------------------------------------------------------------------- PostgreSQL


class Ahead:
    """The machine's clock, 120 s fast."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)

    def time(self) -> float:
        return self.now().timestamp()

    def monotonic(self) -> float:
        return clock.SystemClock().monotonic()

    def sleep(self, seconds: float) -> None:
        clock.SystemClock().sleep(seconds)

    def wait(self, event: Any, seconds: float) -> bool:
        return clock.SystemClock().wait(event, seconds)


def database_now(store: StateStore) -> dt.datetime:
    with store.engine.connect() as conn:
        found: dt.datetime = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    return found.astimezone(dt.UTC)


@pytest.fixture
def pg_store(pg_url: str, tmp_path: Path) -> Iterator[StateStore]:
    made = _emptied(StateStore.open(pg_url, tmp_path, create=True))
    try:
        yield made
    finally:
        made.close()
        clock.set_offset(0)


def skew(store: StateStore) -> float:
    """Seconds from this process's `clock.utcnow()` to the database's clock, read around it."""
    before = database_now(store)
    ours = clock.utcnow()
    after = database_now(store)
    return (ours - (before + (after - before) / 2)).total_seconds()


@pytest.mark.postgres
def test_now_is_postgresqls_clock_and_sets_the_offset(pg_store: StateStore) -> None:
    before = database_now(pg_store)
    now = pg_store.workers.now()
    after = database_now(pg_store)
    assert now.tzinfo is not None and before <= now <= after
    assert abs(skew(pg_store)) < 0.05


@pytest.mark.postgres
def test_now_corrects_a_machine_clock_120_s_ahead(
    pg_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clock, "SYSTEM", Ahead())
    assert skew(pg_store) > 100  # without a measure, 120 s ahead
    pg_store.workers.now()
    assert abs(skew(pg_store)) < 0.05, f"clock.utcnow() is {skew(pg_store):.3f} s off the database's"
