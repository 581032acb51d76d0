"""`mapsync pause`, `resume` and `request`: stored in the state store (every process sees them),
shown by `status`; an unknown sync is exit 2, a missing store the usual clear error."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

from mapsync.state.store import StateStore
from tests.helpers import mapsync

SHEET = """
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  shop: {url: "sqlite:///shop.db"}
state: {url: "sqlite:///state.db"}
syncs:
  items:
    from: {connection: erp, table: items}
    to: {connection: shop, table: items}
    key: {from: id, to: id}
    changes: {method: full}
    fields: {name: name}
"""


def sheet_file(tmp_path: Path, store: bool = True) -> Path:
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(SHEET)
    if store:
        StateStore.open("sqlite:///state.db", tmp_path, create=True).close()
    return sheet


def test_pause_resume_and_request_are_stored_and_shown(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    paused = mapsync("pause", str(sheet), "--sync", "items", "--note", "disk full", cwd=tmp_path)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"paused items (by {me})"
    made = mapsync("request", str(sheet), "-s", "items", "--kind", "retry", "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"id": 1, "sync": "items", "kind": "retry"}
    second = mapsync("request", str(sheet), "-s", "items", cwd=tmp_path)
    assert second.stdout.strip() == "request 2: run of items"
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)  # another process sees them
    try:
        assert (store.paused()["items"].by, store.paused()["items"].note) == (me, "disk full")
        assert [(r.kind, r.requested_by, r.status) for r in store.requests("items")] == [
            ("run", me, "new"),
            ("retry", me, "new"),
        ]
    finally:
        store.close()
    status = mapsync("status", str(sheet), cwd=tmp_path)
    assert f"items: paused by {me} at " in status.stdout and ": disk full" in status.stdout
    assert f"items: request 1 (retry) by {me} at " in status.stdout
    assert status.stdout.index("request 1 ") < status.stdout.index("request 2 ")
    (row,) = json.loads(mapsync("status", str(sheet), "--json", cwd=tmp_path).stdout)
    assert row["paused"]["by"] == me and row["paused"]["note"] == "disk full"
    assert [r["id"] for r in row["requests"]] == [2, 1] and row["requests"][0]["status"] == "new"
    resumed = mapsync("resume", str(sheet), "--sync", "items", cwd=tmp_path)
    assert (resumed.returncode, resumed.stdout.strip()) == (0, "resumed items")
    again = mapsync("resume", str(sheet), "--sync", "items", "--json", cwd=tmp_path)
    assert json.loads(again.stdout) == {"sync": "items", "paused": False, "was_paused": False}
    assert "paused by" not in mapsync("status", str(sheet), cwd=tmp_path).stdout


def test_an_unknown_sync_or_kind_is_a_usage_error_and_a_missing_store_is_named(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path, store=False)
    missing = mapsync("pause", str(sheet), "--sync", "items", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist: run `mapsync seed` first" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "state.db").exists()
    StateStore.open("sqlite:///state.db", tmp_path, create=True).close()
    for command in ("pause", "resume", "request"):
        unknown = mapsync(command, str(sheet), "--sync", "nope", cwd=tmp_path)
        assert unknown.returncode == 2 and "unknown sync 'nope' (known: items)" in unknown.stderr
    bad = mapsync("request", str(sheet), "--sync", "items", "--kind", "seed", cwd=tmp_path)
    assert bad.returncode == 2 and "seed" in bad.stderr
    assert mapsync("request", str(sheet), cwd=tmp_path).returncode == 2  # --sync is required


def test_run_leaves_a_paused_sync_out_unless_told_to_ignore_the_pause(tmp_path: Path) -> None:
    import sqlalchemy as sa

    sheet = sheet_file(tmp_path, store=False)
    for db in ("erp", "shop"):
        with sa.create_engine(f"sqlite:///{tmp_path / db}.db").begin() as conn:
            conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
    with sa.create_engine(f"sqlite:///{tmp_path / 'erp.db'}").begin() as conn:
        conn.execute(sa.text("INSERT INTO items VALUES (1, 'one')"))
    assert mapsync("seed", str(sheet), cwd=tmp_path).returncode == 0
    with sa.create_engine(f"sqlite:///{tmp_path / 'erp.db'}").begin() as conn:
        conn.execute(sa.text("INSERT INTO items VALUES (2, 'two')"))
    assert (
        mapsync("pause", str(sheet), "--sync", "items", "--note", "ERP upgrade", cwd=tmp_path).returncode == 0
    )
    left = mapsync("run", str(sheet), cwd=tmp_path)
    assert left.returncode == 1
    assert "sync items is paused (by " in left.stderr and "ERP upgrade" in left.stderr
    assert "--ignore-pause" in left.stderr
    shop = sa.create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    with shop.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM items")).scalar() == 1
    run = mapsync("run", str(sheet), "--ignore-pause", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with shop.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM items")).scalar() == 2
    shop.dispose()
