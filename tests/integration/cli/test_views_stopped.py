"""`mapsync status` shows why the last run was stopped (a graceful stop of the daemon)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mapsync.records import RunStatus
from mapsync.state.store import StateStore
from tests.helpers import mapsync
from tests.integration.cli.test_control import sheet_file


def test_status_shows_a_stopped_run_and_its_message(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    message = "stopped by a shutdown request after 2 batch(es); the next run goes on from there"
    try:
        lease = store.leases.acquire("items", dt.timedelta(minutes=5))
        run_id = store.start_run("items", "run", "daemon", lease.token)
        store.finish_run(run_id, RunStatus.STOPPED, None, message)
    finally:
        store.close()
    shown = mapsync("status", str(sheet), cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"items: stopped: {message}" in " ".join(shown.stdout.split())
