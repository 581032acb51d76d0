"""The retention purge on a real PostgreSQL state store, beside the work it must not disturb: a
purge (another process's store, small batches) during a run leaves the run's row, its lease and
its commits alone, and a real seed purged between its batches ends as if nothing happened; two
purgers at once fold every run into the rollups exactly once."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mapsync import records
from mapsync.engine import Engine
from mapsync.records import RunStatus
from mapsync.sheet import loader
from mapsync.sheet.models import RETENTION_TABLES
from mapsync.state.clock import utcnow
from mapsync.state.data import Counts
from mapsync.state.store import StateStore
from tests import helpers as h
from tests.contract.test_retention import days_ago

pytestmark = pytest.mark.postgres
TTL = dt.timedelta(minutes=5)
OLD_RUNS = 40


@pytest.fixture
def stores(pg_database: Callable[[], str], tmp_path: Path) -> Iterator[tuple[StateStore, StateStore]]:
    """Two stores on one fresh PostgreSQL database: the run's and the purger's (own pools)."""
    url = pg_database().replace("postgresql://", "postgresql+psycopg://")
    a = StateStore.open(url, tmp_path, create=True)
    b = StateStore.open(url, tmp_path, create=False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _old_runs(store: StateStore, sync: str, n: int) -> None:
    with days_ago(100):
        lease = store.leases.acquire(sync, TTL)
        for _ in range(n):
            store.finish_run(store.start_run(sync, "run", "test", lease.token), "success")
        store.leases.release(lease)


def _commit(store: StateStore, lease_token: str, run_id: int, keys: range) -> None:
    store.commit(
        sync="s",
        token=lease_token,
        run_id=run_id,
        delivered=[records.Delivered((k,), 1, "h", str(k), "upsert") for k in keys],
        rejected=[],
        cursors={"watermark": keys[-1]},
        counts=Counts(read=len(keys), written=len(keys)),
        lease_ttl=TTL,
    )


def test_a_purge_during_a_run_leaves_the_run_its_lease_and_its_commits(
    stores: tuple[StateStore, StateStore],
) -> None:
    runner, purger = stores
    _old_runs(runner, "s", OLD_RUNS)
    lease = runner.leases.acquire("s", TTL)
    run_id = runner.start_run("s", "run", "test", lease.token)
    _commit(runner, lease.token, run_id, range(1, 11))
    with runner.engine.begin() as conn:  # the run holds a row lock on its lease, as a commit does
        conn.exec_driver_sql("SELECT 1 FROM mapsync_leases WHERE sync = 's' FOR UPDATE")
        ages = {**dict.fromkeys(RETENTION_TABLES, dt.timedelta(days=30)), "rollups": dt.timedelta(days=400)}
        purged = purger.history.purge_tables(ages, batch=7)  # 6 transactions of runs
    assert purged["runs"] == OLD_RUNS - 1  # all but the newest old success (the sync's last success)
    runner.leases.renew(lease)  # still the run's
    _commit(runner, lease.token, run_id, range(11, 21))
    runner.finish_run(run_id, "success")
    row, _last_old = runner.history.runs("s", 10)
    assert (row["id"], row["status"], row["written"]) == (run_id, "success", 20)
    assert runner.ledger_count("s") == 20 and runner.cursors("s") == {"watermark": 20}
    (day,) = runner.rollups.rollups("s", utcnow() - dt.timedelta(days=200))
    assert (day["runs"], day["success"]) == (OLD_RUNS - 1, OLD_RUNS - 1)


def test_two_purgers_at_once_roll_every_run_up_exactly_once(stores: tuple[StateStore, StateStore]) -> None:
    a, b = stores
    for sync in ("s", "t"):
        _old_runs(a, sync, OLD_RUNS + 1)  # + each sync's latest, which stays
    got: list[int] = []
    go = threading.Barrier(2)

    def purge(store: StateStore) -> None:
        go.wait()
        got.append(store.history.purge_tables({"runs": dt.timedelta(days=30)}, batch=3)["runs"])

    threads = [threading.Thread(target=purge, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(got) == 2 * OLD_RUNS  # each row deleted by one of them
    days = a.rollups.rollups(None, utcnow() - dt.timedelta(days=200))
    assert [(d["sync"], d["runs"]) for d in days] == [("s", OLD_RUNS), ("t", OLD_RUNS)]
    assert len(a.history.runs(None, 100)) == 2


SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
state: {{url: "{state}", retention: {{default: 30d, rollups: 400d}}}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 10}}
"""


class PurgeAt:
    """An observer that runs a whole purge from another store after the run's `n`th batch."""

    def __init__(self, purger: StateStore, n: int) -> None:
        self.purger, self.n, self.batches = purger, n, 0
        self.purged: dict[str, int] = {}

    def started(self, sync: str, kind: str, total: int | None) -> None:
        return None

    def batch(self, sync: str, counts: Counts) -> None:
        self.batches += 1
        if self.batches == self.n:
            ages = {
                **dict.fromkeys(RETENTION_TABLES, dt.timedelta(days=30)),
                "rollups": dt.timedelta(days=400),
            }
            self.purged = self.purger.history.purge_tables(ages, batch=4)


def test_a_real_seed_runs_through_a_purge_between_its_batches(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = sqlite_database(), sqlite_database()
    state = pg_database().replace("postgresql://", "postgresql+psycopg://")
    for url in (src, dst):
        h.execute(
            url,
            f"CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {h.TS['sqlite']})",
        )
    h.execute(
        src,
        "INSERT INTO items (id, name, last_modified) VALUES (:i, :n, '2026-01-01 10:00:00')",
        params=[{"i": i, "n": f"n{i}"} for i in range(1, 51)],
    )
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst, state=state))
    loaded = loader.load(tmp_path / "sheet.yaml")
    store = StateStore.open(state, tmp_path, create=True)
    purger = StateStore.open(state, tmp_path, create=False)
    try:
        _old_runs(store, "items", OLD_RUNS)
        observer = PurgeAt(purger, 2)
        report = Engine(loaded, store, observer).run("items", "seed")
        assert report.status == RunStatus.SUCCESS and report.counts.written == 50
        assert observer.purged["runs"] == OLD_RUNS - 1  # the newest old success stays, until
        (row,) = store.history.runs("items", 10)  # the seed's success: the engine's purge after it
        assert (row["id"], row["status"], row["written"]) == (report.run_id, "success", 50)
        assert store.ledger_count("items") == 50
        assert h.query(dst, "SELECT COUNT(*) FROM items")[0][0] == 50
        (day,) = store.rollups.rollups("items", utcnow() - dt.timedelta(days=200))
        assert day["runs"] == OLD_RUNS
    finally:
        purger.close()
        store.close()
