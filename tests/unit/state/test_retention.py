"""The retention policy from the sheet (ages per table, the late threshold per sync), the engine's
purge after a run (its sync, its three tables) and the daemon's daily purge chore."""

from __future__ import annotations

import datetime as dt
import logging
import types
from pathlib import Path

import pytest

from mapsync.daemon import Daemon
from mapsync.sheet import loader
from mapsync.sheet.models import RETENTION_TABLES, Sheet
from mapsync.state import retention
from mapsync.state.memory import MemoryStore
from tests.contract.test_retention import days_ago

SHEET = """
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
state: {{url: "sqlite:///state.db", retention: {retention}}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: erp, table: copy}}
    key: {{from: id, to: id}}
    changes: {{method: full}}
    fields: {{name: name}}
    schedule: {{every: 5m, start_within: 2m}}
  other:
    from: {{connection: erp, table: items}}
    to: {{connection: erp, table: copy2}}
    key: {{from: id, to: id}}
    changes: {{method: full}}
    fields: {{name: name}}
"""


def sheet(tmp_path: Path, given: str = "90d") -> Sheet:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.format(retention=given))
    return loader.load(path).sheet


def test_one_duration_is_every_tables_age_but_rollups_keep_400_days(tmp_path: Path) -> None:
    ages = retention.ages(sheet(tmp_path, "30d").state)
    assert list(ages) == list(RETENTION_TABLES)
    assert {t: a.days for t, a in ages.items()} == {**dict.fromkeys(RETENTION_TABLES, 30), "rollups": 400}


def test_a_per_table_map_falls_back_to_its_default(tmp_path: Path) -> None:
    ages = retention.ages(sheet(tmp_path, "{default: 500d, runs: 7d, rollups: 30d}").state)
    assert (ages["runs"].days, ages["inbox"].days, ages["rollups"].days) == (7, 500, 30)


def test_late_is_start_within_or_a_minute(tmp_path: Path) -> None:
    assert retention.late_after(sheet(tmp_path)) == {"items": 120_000, "other": 60_000}


def _old_runs(store: MemoryStore, sync: str, n: int) -> None:
    with days_ago(100):
        lease = store.leases.acquire(sync, dt.timedelta(minutes=5))
        for _ in range(n):
            store.finish_run(store.start_run(sync, "run", "test", lease.token), "success")
        store.leases.release(lease)
        item = store.inbox.append(sync, "e", "{}")
        store.inbox.finish([item] if item else [], {})


def test_the_purge_after_a_run_touches_its_sync_and_its_three_tables(tmp_path: Path) -> None:
    store = MemoryStore()
    _old_runs(store, "items", 3)
    _old_runs(store, "other", 3)
    done = retention.purge_after_run(store, sheet(tmp_path), "items")
    assert done == {"runs": 2, "record_errors": 0, "cursor_audit": 0}
    assert len(store.history.runs("other", 10)) == 3 and store.inbox.counts() == {"processed": 2}


def test_the_daemons_daily_chore_purges_everything_under_a_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = types.SimpleNamespace(loaded=types.SimpleNamespace(sheet=sheet(tmp_path)))
    (chore,) = [c for c in Daemon._chores(daemon) if c.name == "purge"]  # type: ignore[arg-type]
    assert (chore.every, chore.lease) == (dt.timedelta(days=1), True)
    store = MemoryStore()
    _old_runs(store, "items", 3)
    _old_runs(store, "gone", 2)  # a sync no longer in the sheet is purged too
    with caplog.at_level(logging.INFO, logger="mapsync.retention"):
        chore.do(store)
    (record,) = [r for r in caplog.records if r.getMessage() == "retention_purged"]
    assert (record.rows, record.runs, record.inbox) == (5, 3, 2)  # type: ignore[attr-defined]
    assert [d["runs"] for d in store.rollups.rollups(None, dt.date(2000, 1, 1))] == [1, 2]
