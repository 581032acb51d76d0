"""Crash points in-process (`mapsync.crash` raise mode) and the in-process CLI runner
(tests/cli_runner.py) give what a real `python -m mapsync` process gives."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapsync import crash
from mapsync.state.runs import alive
from tests import helpers as h


@pytest.fixture
def raise_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    marker = tmp_path / "marker"
    monkeypatch.setenv("MAPSYNC_CRASH_AT", "after_write:2")
    monkeypatch.setenv("MAPSYNC_CRASH_MARKER", str(marker))
    monkeypatch.setenv("MAPSYNC_CRASH_MODE", "raise")
    crash.reset()
    yield marker
    crash.reset()


def test_a_point_in_raise_mode_raises_what_except_exception_does_not_catch(raise_mode: Path) -> None:
    crash.point("after_write")  # the 1st pass: not yet
    crash.point("after_read")  # another point: never
    assert not crash.dead()
    with pytest.raises(crash.Crashed):
        try:
            crash.point("after_write")
        except Exception:  # what a handler of the product catches
            pytest.fail("Crashed must pass every `except Exception`")
    assert crash.dead()
    assert raise_mode.read_text() == "after_write:2\n"
    crash.reset()
    assert not crash.dead()


def test_pid_is_the_stand_in_only_while_one_is_set() -> None:
    assert crash.pid() == os.getpid()
    crash.reset(stand_in=1234567)
    try:
        assert crash.pid() == 1234567
    finally:
        crash.reset()
    assert crash.pid() == os.getpid()


SHEET = """
version: 1
connections:
  erp: {{url: "sqlite:///{src}"}}
  shop: {{url: "sqlite:///{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
    delivery: {{batch: 5}}
"""


def _world(folder: Path) -> None:
    h.execute(f"sqlite:///{folder / 'src.db'}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    h.execute(
        f"sqlite:///{folder / 'src.db'}",
        "INSERT INTO items (id, name) VALUES (:i, :n)",
        params=[{"i": i, "n": f"n{i}"} for i in range(1, 13)],
    )
    h.execute(f"sqlite:///{folder / 'dst.db'}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    (folder / "sheet.yaml").write_text(SHEET.format(src=folder / "src.db", dst=folder / "dst.db"))


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["seed", "--help"],
        ["validate", "sheet.yaml"],
        ["validate", "sheet.yaml", "--json"],
        ["validate", "missing.yaml"],
        ["status", "sheet.yaml"],
        ["--log-level", "loud", "status", "sheet.yaml"],
        ["nosuchcommand"],
    ],
)
def test_in_process_and_process_give_the_same_result(tmp_path: Path, args: list[str]) -> None:
    _world(tmp_path)
    inproc = h.mapsync(*args, cwd=tmp_path, process=False)
    proc = h.mapsync(*args, cwd=tmp_path, process=True)
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (proc.returncode, proc.stdout, proc.stderr)


def test_a_seed_gives_the_same_report_both_ways(tmp_path: Path) -> None:
    reports = []
    for process in (False, True):
        folder = tmp_path / str(process)
        folder.mkdir()
        _world(folder)
        done = h.mapsync("seed", "sheet.yaml", "--json", cwd=folder, process=process)
        assert done.returncode == 0, done.stderr
        (report,) = json.loads(done.stdout)
        reports.append({k: report[k] for k in ("sync", "kind", "status", "counts", "run_id")})
    assert reports[0] == reports[1]


def test_an_uncaught_exception_is_exit_1_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mapsync.sheet import loader

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(loader, "load", broken)
    monkeypatch.delenv("MAPSYNC_TEST_CLI", raising=False)  # about the in-process runner itself
    _world(tmp_path)
    done = h.mapsync("validate", "sheet.yaml", cwd=tmp_path, process=False)
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.rstrip().endswith("RuntimeError: a bug")


def test_the_call_leaves_the_test_process_as_it_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAPSYNC_TEST_CLI", raising=False)  # about the in-process runner itself
    _world(tmp_path)
    cwd, env = os.getcwd(), dict(os.environ)
    root, log = logging.getLogger(), logging.getLogger("mapsync")
    before = (root.handlers[:], log.handlers[:], log.level, log.propagate)
    sigterm = signal.getsignal(signal.SIGTERM)
    done = h.mapsync(
        "--log-level", "debug", "seed", "sheet.yaml", cwd=tmp_path, env={"MAPSYNC_X": "1"}, process=False
    )
    assert done.returncode == 0, done.stderr
    assert "run_started" in done.stderr  # the debug log went to the call's stderr
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert (root.handlers, log.handlers, log.level, log.propagate) == before
    assert signal.getsignal(signal.SIGTERM) == sigterm
    assert not crash.dead() and crash.pid() == os.getpid()


def test_an_in_process_crash_leaves_what_a_sigkill_leaves(tmp_path: Path) -> None:
    """The crashed run stays `running`, its lease held by a pid that is gone, the 2nd batch not
    delivered, nothing printed after the point; the next run takes over at once and finishes."""
    _world(tmp_path)
    marker = tmp_path / "marker"
    env = {"MAPSYNC_CRASH_AT": "during_state_write:2", "MAPSYNC_CRASH_MARKER": str(marker)}
    crashed = h.mapsync("seed", "sheet.yaml", "--json", cwd=tmp_path, env=env, process=False)
    assert crashed.returncode == -signal.SIGKILL
    assert crashed.stdout == ""  # the report is never printed
    assert marker.read_text() == "during_state_write:2\n"
    state = sqlite3.connect(tmp_path / ".mapsync" / "state.db")
    try:
        ((pid,),) = state.execute("SELECT pid FROM mapsync_leases").fetchall()
        assert pid != os.getpid() and not alive(pid)
        assert state.execute("SELECT status FROM mapsync_runs").fetchall() == [("running",)]
        assert state.execute("SELECT COUNT(*) FROM mapsync_ledger").fetchall() == [(5,)]  # batch 1 only
    finally:
        state.close()
    assert not crash.dead()  # the runner reset it
    rerun = h.mapsync("seed", "sheet.yaml", "--json", cwd=tmp_path, process=False)
    assert rerun.returncode == 0, rerun.stderr
    (report,) = json.loads(rerun.stdout)
    assert report["status"] == "success" and report["counts"]["read"] == 7
    assert h.query(f"sqlite:///{tmp_path / 'dst.db'}", "SELECT COUNT(*) FROM items") == [(12,)]
