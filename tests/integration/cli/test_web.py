"""`mapsync web hash-password` and `mapsync web sessions --revoke` (mapsync.cli.web)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.web import passwords
from tests import helpers as h
from tests import web_world as w


def _hash(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapsync", "web", "hash-password", "--stdin"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_hash_password_from_stdin_gives_a_hash_the_sheet_takes(tmp_path: Path) -> None:
    done = _hash("a-long-Passw0rd\n")
    assert done.returncode == 0, done.stderr
    stored = done.stdout.strip()
    assert stored.startswith("scrypt$16384$8$1$") and "a-long-Passw0rd" not in done.stdout + done.stderr
    assert passwords.verify_password("a-long-Passw0rd", stored)
    assert not passwords.verify_password("a-long-Passw0rd\n", stored)


def test_hash_password_refuses_a_short_one() -> None:
    done = _hash("short\n")
    assert done.returncode == 2 and "at least 8" in done.stderr
    assert done.stdout.strip() == ""


def test_sessions_revoke(tmp_path: Path) -> None:
    for world in w.web_world(tmp_path):
        world.login("alice")
        world.login("bob")
    sheet = str(tmp_path / "sheet.yaml")
    needs = h.mapsync("web", "sessions", sheet, cwd=tmp_path, env=w.ENV)
    assert needs.returncode == 2 and "--revoke" in needs.stderr
    one = h.mapsync("web", "sessions", sheet, "--revoke", "--user", "alice", cwd=tmp_path, env=w.ENV)
    assert one.returncode == 0 and "revoked 1 session(s) of alice" in one.stdout
    rest = h.mapsync("web", "sessions", sheet, "--revoke", cwd=tmp_path, env=w.ENV)
    assert rest.returncode == 0 and "revoked 1 session(s)" in rest.stdout
    loaded = loader.load(tmp_path / "sheet.yaml", env=w.ENV)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=False)
    try:
        assert store.sessions.close_sessions(None) == 0  # type: ignore[attr-defined]
        rows = store.audit.actions(None, 10)  # type: ignore[attr-defined]
        details = [
            json.loads(a["detail"]) if isinstance(a["detail"], str) else a["detail"]
            for a in rows
            if a["action"] == "revoke_sessions"
        ]
        assert [(d["user"], d["closed"]) for d in details] in (
            [("alice", 1), (None, 1)],
            [(None, 1), ("alice", 1)],
        )
    finally:
        store.close()
