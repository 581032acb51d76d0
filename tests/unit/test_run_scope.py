"""The run scope shared by every kind of run: retry is a plan whose keys are forced past the key
ledger's "unchanged" check, and every kind logs, records and finishes its run the same way."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mapsync import records, run_steps
from mapsync.records import RunKind, RunStatus
from mapsync.state import report
from mapsync.state.ledger import LedgerEntry
from mapsync.state.store import Counts
from mapsync.testing import fakes


def _row(i: int, version: int, name: str) -> dict[str, Any]:
    return {"id": i, "name": name, "version": version}


def test_retry_writes_its_keys_even_where_the_ledger_holds_them_unchanged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = fakes.sheet({"c": {"key": {"from": "id", "to": "ref"}, "fields": {"nm": "name"}}}, tmp_path)
    store = fakes.state_store(tmp_path)
    source = fakes.MemorySource([_row(i, 1, f"n{i}") for i in (1, 2, 3)])
    dest = fakes.MemoryDestination()
    engine = fakes.MemoryEngine(loaded, store, {"c": (source, dest)})
    try:
        assert engine.run("c", "seed").counts.written == 3
        source.upsert(_row(2, 2, "changed"))
        dest.reject(2)
        assert engine.run("c").counts.rejected == 1  # an open record error; the ledger keeps n2
        # the source row goes back to what the ledger holds, at the version it had
        source.upsert(_row(2, 1, "n2"))
        dest.heal()
        calls = len(dest.calls)
        with caplog.at_level(logging.INFO, logger="mapsync.engine"):
            out = engine.retry("c")
        # forced: written although its content equals the ledger's (a plain run skips it)
        assert (out.kind, out.status, out.counts.written, out.counts.skipped) == ("retry", "success", 1, 0)
        assert [k for call in dest.calls[calls:] for k in call.keys] == [(2,)]
        assert report.record_errors(store, "c", False, 100) == []  # resolved by the write
        actions = [r.__dict__.get("action") for r in caplog.records]
        assert actions[0] == "run_started" and actions[-1] == "run_finished"
    finally:
        engine.close()
        store.close()


def test_forced_keys_skip_the_unchanged_check_only() -> None:
    same = records.Mapped("upsert", (1,), (1,), 5, {"ref": 1}, {}, "h1")
    other = records.Mapped("upsert", (2,), (2,), 5, {"ref": 2}, {}, "h2")
    ledger = {(1,): LedgerEntry(5, "h1", "1", False), (2,): LedgerEntry(5, "h2", "2", False)}
    counts = Counts()
    send, seen = run_steps.against_ledger("retry", [same, other], ledger, None, None, counts)
    assert (send, seen, counts.skipped) == ([], [], 2)
    forced = frozenset({records.key_text((2,))})
    counts = Counts()
    send, seen = run_steps.against_ledger("retry", [same, other], ledger, None, None, counts, forced)
    assert (send, seen, counts.skipped) == ([other], [], 1)


def test_kinds_and_statuses_keep_their_stored_text() -> None:
    assert [str(k) for k in RunKind] == [
        "seed",
        "run",
        "overlap",
        "retry",
        "reexport",
        "sweep",
        "reconcile",
        "repair",
    ]
    assert [f"{s}" for s in RunStatus] == ["running", "success", "partial", "failed", "skipped", "stopped"]
    assert RunStatus.PARTIAL == "partial" and RunKind("overlap") is RunKind.OVERLAP


def test_an_automatic_retry_buries_what_failed_max_attempts_times_and_skips_the_dead(tmp_path: Path) -> None:
    loaded = fakes.sheet({"c": {"key": {"from": "id", "to": "ref"}, "fields": {"nm": "name"}}}, tmp_path)
    store = fakes.state_store(tmp_path)
    source = fakes.MemorySource([_row(i, 1, f"n{i}") for i in (1, 2, 3)])
    dest = fakes.MemoryDestination()
    engine = fakes.MemoryEngine(loaded, store, {"c": (source, dest)})
    try:
        engine.run("c", "seed")
        source.upsert(_row(2, 2, "changed"))
        dest.reject(2)
        assert engine.run("c").counts.rejected == 1  # attempt 1
        out = engine.retry("c", trigger="schedule", automatic=True, max_attempts=2)
        assert (out.counts.rejected, out.buried) == (1, 1)  # attempt 2: dead
        assert store.history.count_dead("c") == 1
        calls = len(dest.calls)
        again = engine.retry("c", trigger="schedule", automatic=True, max_attempts=2)
        assert (again.counts.read, again.buried, len(dest.calls)) == (0, 0, calls)  # the dead stay out
        dest.heal()
        manual = engine.retry("c")  # the operator's retry sends dead records too
        assert (manual.counts.written, manual.buried) == (1, 0)
        assert store.open_error_keys("c") == [] and store.history.count_dead("c") == 0
        resolved = report.record_errors(store, "c", True, 10)[0]
        assert resolved["resolved_at"] is not None and resolved["dead_at"] is not None  # history
    finally:
        engine.close()
        store.close()
