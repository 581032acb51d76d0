"""`mapsync pause`, `resume` and `request`: stored in the state store (every process sees them),
shown by `status`, written to the audit log; a retry or reexport of chosen keys; an unknown sync
is exit 2, a missing store the usual clear error."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
from pathlib import Path

from mapsync import records
from mapsync.state.data import Counts
from mapsync.state.store import StateStore
from tests.helpers import mapsync

TTL = dt.timedelta(minutes=5)

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
    assert json.loads(made.stdout) == {"id": 1, "sync": "items", "kind": "retry", "keys": None, "note": None}
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


def open_errors(tmp_path: Path, *ids: int) -> None:
    """Open record errors of `items` for these ids, as a run that rejected them leaves."""
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        lease = store.leases.acquire("items", TTL)
        run_id = store.start_run("items", "run", "test", lease.token)
        rejected = [records.Rejection((i,), "too long", "name", "length", 1, None) for i in ids]
        store.commit(
            sync="items",
            token=lease.token,
            run_id=run_id,
            delivered=[],
            rejected=rejected,
            cursors={},
            counts=Counts(),
            lease_ttl=TTL,
        )
        store.finish_run(run_id, "partial")
        store.leases.release(lease)
    finally:
        store.close()


def test_a_retry_of_chosen_keys_and_the_audit_of_every_control(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    open_errors(tmp_path, 1, 2)
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    made = mapsync(
        "request", str(sheet), "-s", "items", "--kind", "retry", "--key", "2", "-k", "id=1", "--key", "2",
        "--note", "fixed the names", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {
        "id": 1, "sync": "items", "kind": "retry", "keys": ["2", "1"], "note": "fixed the names"
    }  # fmt: skip
    plain = mapsync("request", str(sheet), "-s", "items", "--kind", "retry", "--key", "1", cwd=tmp_path)
    assert plain.stdout.strip() == "request 2: retry of items (1 keys)"
    for bad, says in (
        (["--kind", "retry", "--key", "3"], "--key 3: no open record error of items has this key"),
        (["--kind", "run", "--key", "1"], "--key goes with --kind retry or reexport, not run"),
        (["--kind", "reexport"], "sync items is no export"),
    ):
        refused = mapsync("request", str(sheet), "-s", "items", *bad, cwd=tmp_path)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert mapsync("pause", str(sheet), "-s", "items", "--note", "ERP upgrade", cwd=tmp_path).returncode == 0
    assert mapsync("resume", str(sheet), "-s", "items", cwd=tmp_path).returncode == 0
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        taken = {r.id: r for r in store.take_requests(["items"], "w")}
        assert (taken[1].keys, taken[1].note, taken[2].keys) == (("2", "1"), "fixed the names", ("1",))
        logged = [(a["user"], a["action"], a["sync"], a["detail"]) for a in store.audit.actions("items", 10)]
    finally:
        store.close()
    assert logged == [
        (me, "resume", "items", {"was_paused": True, "via": "cli"}),
        (me, "pause", "items", {"note": "ERP upgrade", "via": "cli"}),
        (me, "retry", "items", {"request": 2, "kind": "retry", "keys": ["1"], "note": None, "via": "cli"}),
        (me, "retry", "items", {"request": 1, "kind": "retry", "keys": ["2", "1"], "note": "fixed the names", "via": "cli"}),
    ]  # fmt: skip
