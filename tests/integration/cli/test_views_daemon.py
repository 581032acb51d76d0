"""`mapsync errors` marks dead record errors and counts them; `state show` and `status` show a
scheduled run's slot, lateness and worker, and a skipped run's reason."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mapsync import records
from mapsync.state.data import Counts
from mapsync.state.store import StateStore
from tests.helpers import mapsync
from tests.integration.cli.test_control import sheet_file

AT = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


def _rejected(key: int) -> records.Rejection:
    return records.Rejection((key,), "too long", "name", "length", 1, None)


def test_errors_marks_and_counts_the_dead_ones(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        lease = store.leases.acquire("items", dt.timedelta(minutes=5))
        run_id = store.start_run("items", "run", "test", lease.token)
        for rejected in ([_rejected(1), _rejected(2)], [_rejected(1)]):
            store.commit(
                sync="items",
                token=lease.token,
                run_id=run_id,
                delivered=[],
                rejected=rejected,
                cursors={},
                counts=Counts(),
                lease_ttl=lease.ttl,
            )
        assert store.bury("items", 2) == 1
    finally:
        store.close()
    shown = mapsync("errors", str(sheet), cwd=tmp_path)
    assert shown.returncode == 1
    assert "2 dead" in shown.stdout and "1 dead" not in shown.stdout
    assert "1 of the open record errors are dead (tried max_attempts times)" in shown.stdout
    assert f"`mapsync retry {sheet}` sends them" in shown.stdout
    rows = {
        e["key"]["id"]: e for e in json.loads(mapsync("errors", str(sheet), "--json", cwd=tmp_path).stdout)
    }
    assert rows[1]["dead_at"] is not None and rows[2]["dead_at"] is None
    (status,) = json.loads(mapsync("status", str(sheet), "--json", cwd=tmp_path).stdout)
    assert (status["open_errors"], status["dead_errors"]) == (2, 1)


def test_state_show_and_status_show_the_schedule_of_runs(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        store.set_identity("box:42", "f" * 64)
        lease = store.leases.acquire("items", dt.timedelta(minutes=5))
        run_id = store.start_run("items", "run", "schedule", lease.token, AT, slot="run", coalesced=3)
        store.finish_run(run_id, "success")
        store.record_skipped_run(
            "items",
            "run",
            "schedule",
            AT + dt.timedelta(hours=1),
            "run",
            "overlap",
            "the previous run was running",
        )
    finally:
        store.close()
    text = mapsync("state", "show", str(sheet), cwd=tmp_path).stdout
    assert f"run #{run_id} run " in text and "; run slot scheduled 2026-05-01T08:00:00.000000Z, " in text
    assert " s late, 3 missed slot(s) with it; worker box:42" in text
    assert "skipped read 0 written 0; run slot scheduled 2026-05-01T09:00:00.000000Z" in text
    assert "; overlap: the previous run was running" in text
    status = mapsync("status", str(sheet), cwd=tmp_path).stdout
    # the last run is the one that ran; the skipped slot after it is counted beside it
    assert f"items: last run #{run_id}; run slot scheduled 2026-05-01T08:00:00.000000Z" in status
    assert "items: 1 slot(s) skipped since; the latest (2026-05-01T09:00:00.000000Z): overlap: the " in status
    (row,) = json.loads(mapsync("status", str(sheet), "--json", cwd=tmp_path).stdout)
    assert row["last_run"]["status"] == "success" and row["skipped_since"]["count"] == 1
    (shown,) = json.loads(mapsync("state", "show", str(sheet), "--json", cwd=tmp_path).stdout)
    assert [(r["status"], r["slot"], r["worker"]) for r in shown["runs"]] == [
        ("skipped", "run", "box:42"),
        ("success", "run", "box:42"),
    ]
    assert shown["runs"][1]["lateness_ms"] > 0 and shown["runs"][1]["sheet_fingerprint"] == "f" * 64
