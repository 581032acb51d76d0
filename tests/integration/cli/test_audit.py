"""`mapsync audit SHEET [--sync S] [--limit N] [--json]` (cli/audit.py): the operator audit log,
newest first, by sync; an operator's note is printed as text, never as markup."""

from __future__ import annotations

import json
from pathlib import Path

from mapsync.state.store import StateStore
from tests.helpers import mapsync
from tests.integration.cli.test_control import sheet_file


def test_the_audit_log_newest_first_by_sync(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    empty = mapsync("audit", str(sheet), cwd=tmp_path)
    assert (empty.returncode, empty.stdout.strip()) == (0, "no operator actions recorded")
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        store.audit.record_action("alice", "pause", "items", {"note": "[bold]disk[/bold] full"})
        store.audit.record_action("bob", "ack", None, {"incident": 3})
    finally:
        store.close()
    listed = mapsync("audit", str(sheet), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.index("bob") < listed.stdout.index("alice")
    assert "[bold]disk[/bold] full" in listed.stdout
    rows = json.loads(mapsync("audit", str(sheet), "--json", cwd=tmp_path).stdout)
    assert [(r["user"], r["action"], r["sync"]) for r in rows] == [
        ("bob", "ack", None),
        ("alice", "pause", "items"),
    ]
    assert rows[1]["detail"] == {"note": "[bold]disk[/bold] full"} and rows[1]["at"].endswith("Z")
    by_sync = json.loads(mapsync("audit", str(sheet), "-s", "items", "--json", cwd=tmp_path).stdout)
    assert [r["user"] for r in by_sync] == ["alice"]
    newest = json.loads(mapsync("audit", str(sheet), "--limit", "1", "--json", cwd=tmp_path).stdout)
    assert [r["user"] for r in newest] == ["bob"]
    unknown = mapsync("audit", str(sheet), "-s", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown sync 'nope'" in unknown.stderr
