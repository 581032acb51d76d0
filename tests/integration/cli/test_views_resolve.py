"""`mapsync errors SHEET --resolve --sync S KEY... --note TEXT` (cli/views.py): resolves the named
open record errors (or every open one with `--all-open`) with who and why, shown by `errors
--all` and written to the audit log; bad combinations are usage errors, nothing resolved."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

from mapsync.state.store import StateStore
from tests.helpers import mapsync
from tests.integration.cli.test_control import open_errors, sheet_file


def test_resolve_named_keys_then_all_open(tmp_path: Path) -> None:
    sheet = sheet_file(tmp_path)
    open_errors(tmp_path, 1, 2, 3)
    me = f"{getpass.getuser()}@{socket.gethostname()}"

    def run(*args: str) -> tuple[int, str, str]:
        done = mapsync("errors", str(sheet), *args, cwd=tmp_path)
        return done.returncode, done.stdout, done.stderr

    for bad, says in (
        (["--resolve", "--sync", "items", "1"], "--resolve needs --sync and a --note"),
        (["--resolve", "1", "--note", "n"], "--resolve needs --sync"),
        (["--resolve", "--sync", "items", "--note", "n"], "name the keys to resolve, or --all-open"),
        (["--resolve", "--sync", "items", "1", "--all-open", "--note", "n"], "(not both)"),
        (["--resolve", "--sync", "items", "9", "--note", "n"], "KEY 9: no open record error of items"),
        (["--resolve", "--sync", "nope", "--all-open", "--note", "n"], "unknown sync 'nope'"),
    ):
        code, _, stderr = run(*bad)
        assert code == 2 and says in stderr and "Traceback" not in stderr, stderr
    code, stdout, stderr = run("--resolve", "--sync", "items", "1", "3", "--note", "fixed in the ERP")
    assert (code, stdout.strip()) == (0, f"resolved 2 record error(s) of items (by {me})"), stderr
    code, stdout, _ = run("--sync", "items", "--json")
    assert [e["key"] for e in json.loads(stdout)] == [{"id": 2}]
    code, stdout, _ = run("--sync", "items", "--all", "--json")
    done = {e["key"]["id"]: e for e in json.loads(stdout)}
    assert (done[1]["resolved_by"], done[1]["resolved_note"]) == (me, "fixed in the ERP")
    assert done[2]["resolved_by"] is None
    code, stdout, _ = run("--resolve", "--sync", "items", "--all-open", "--note", "obsolete items", "--json")
    assert json.loads(stdout) == {
        "sync": "items",
        "resolved": 1,
        "keys": None,
        "note": "obsolete items",
        "by": me,
    }
    assert run("--sync", "items")[0] == 0  # nothing open any more
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        logged = [(a["action"], a["detail"]) for a in store.audit.actions("items", 10)]
    finally:
        store.close()
    assert logged == [
        ("resolve", {"keys": None, "note": "obsolete items", "resolved": 1, "via": "cli"}),
        ("resolve", {"keys": ["1", "3"], "note": "fixed in the ERP", "resolved": 2, "via": "cli"}),
    ]
