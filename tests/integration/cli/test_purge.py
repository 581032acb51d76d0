"""`mapsync purge SHEET`: per-table counts of the retention purge; `--dry-run` deletes nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mapsync.sheet.models import RETENTION_TABLES
from mapsync.state.store import StateStore
from tests.contract.test_retention import days_ago
from tests.helpers import mapsync
from tests.integration.cli.test_control import sheet_file


def _old_history(tmp_path: Path) -> None:
    """100 days ago (the sheet keeps 90): two finished runs of `items`, a processed and a new
    inbox item."""
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        with days_ago(100):
            lease = store.leases.acquire("items", dt.timedelta(minutes=5))
            for _ in range(2):
                store.finish_run(store.start_run("items", "run", "test", lease.token), "success")
            store.leases.release(lease)
            done = store.inbox.append("items", "e1", "{}")
            store.inbox.append("items", "e2", "{}")
            store.inbox.finish([done] if done else [], {})
    finally:
        store.close()


def _left(tmp_path: Path) -> tuple[int, dict[str, int], int]:
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=200)
        return (
            len(store.history.runs(None, 10)),
            store.inbox.counts(),
            len(store.rollups.rollups(None, since)),
        )
    finally:
        store.close()


def test_a_dry_run_counts_per_table_and_deletes_nothing_then_a_purge_deletes(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    _old_history(tmp_path)
    dry = mapsync("purge", str(sheet), "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    shown = json.loads(dry.stdout)
    assert shown["dry_run"] is True and list(shown["tables"]) == list(RETENTION_TABLES)
    rows = {t: v["rows"] for t, v in shown["tables"].items()}
    assert rows == {**dict.fromkeys(RETENTION_TABLES, 0), "runs": 1, "inbox": 1}
    assert shown["tables"]["runs"]["retention_s"] == 90 * 86400
    assert shown["tables"]["rollups"]["retention_s"] == 400 * 86400
    assert _left(tmp_path) == (2, {"processed": 1, "new": 1}, 0)
    done = mapsync("purge", str(sheet), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "deleted 2 row(s)" in text and "runs │ 90d │ 1" in text, text
    assert _left(tmp_path) == (1, {"new": 1}, 1)  # the latest run and the new item stay; rolled up
    again = mapsync("purge", str(sheet), "--json", cwd=tmp_path)
    assert {v["rows"] for v in json.loads(again.stdout)["tables"].values()} == {0}


def test_an_unknown_sync_is_a_config_error(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    bad = mapsync("purge", str(sheet), "--sync", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown sync 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
