"""The daemon's chores (daemon_chores.py): a leased chore runs in one daemon at a time and stays
with it; a failing chore is logged, redacted, and runs again; `wake` runs one at once."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mapsync.daemon_chores import Chore, Chores
from mapsync.state.ports import Store
from mapsync.state.store import StateStore

TTL = dt.timedelta(seconds=30)


def _chores(tmp_path: Path, stop: threading.Event) -> Chores:
    return Chores(
        lambda: StateStore.open("sqlite:///state.db", tmp_path, create=True),
        stop,
        lambda: TTL,
        lambda text: text.replace("s3cret", "***"),
    )


def test_a_leased_chore_runs_in_one_daemon_and_stays_there(tmp_path: Path) -> None:
    stop = threading.Event()
    a, b = _chores(tmp_path, stop), _chores(tmp_path, stop)
    ran: list[str] = []
    one = Chore("monitors", dt.timedelta(minutes=1), lambda s: ran.append("a"))
    two = Chore("monitors", dt.timedelta(minutes=1), lambda s: ran.append("b"))
    a.add(one)
    b.add(two)
    assert a.run(one) and not b.run(two)
    assert a.run(one) and not b.run(two)  # renewed, kept
    stop.set()
    a.join(1)  # gives the lease up
    assert b.run(two)
    assert ran == ["a", "a", "b"]
    b.join(1)


def test_a_failing_chore_is_logged_redacted_and_runs_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    chores = _chores(tmp_path, stop)
    calls: list[int] = []

    def boom(store: Store) -> None:
        calls.append(1)
        raise RuntimeError("smtp password s3cret refused")

    chore = Chore("alerts", dt.timedelta(milliseconds=50), boom, lease=False)
    chores.add(chore)
    with caplog.at_level(logging.WARNING, logger="mapsync.daemon"):
        chores.start()
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        chores.join(2)
    assert len(calls) >= 2
    lines = [r for r in caplog.records if getattr(r, "action", "") == "daemon_chore_failed"]
    assert lines and all("s3cret" not in r.error for r in lines)  # type: ignore[attr-defined]
    assert "***" in lines[0].error  # type: ignore[attr-defined]


def test_wake_runs_a_chore_at_once(tmp_path: Path) -> None:
    stop = threading.Event()
    chores = _chores(tmp_path, stop)
    ran = threading.Event()
    count: list[int] = []

    def note(store: Store) -> None:
        count.append(1)
        if len(count) == 2:
            ran.set()

    chores.add(Chore("purge", dt.timedelta(hours=1), note, lease=False))
    chores.start()
    deadline = time.monotonic() + 5
    while not count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(count) == 1  # ran at start, next in an hour
    chores.wake("purge")
    assert ran.wait(5)
    stop.set()
    chores.join(2)


def test_a_long_chore_does_not_hold_up_another(tmp_path: Path) -> None:
    stop = threading.Event()
    chores = _chores(tmp_path, stop)
    release = threading.Event()
    quick = threading.Event()
    chores.add(Chore("purge", dt.timedelta(hours=24), lambda s: release.wait(10), lease=False))
    chores.add(Chore("alerts", dt.timedelta(seconds=5), lambda s: quick.set(), lease=False))
    chores.start()
    try:
        assert quick.wait(5)  # while the purge still runs
        assert chores.busy()
    finally:
        release.set()
        stop.set()
        chores.join(5)
    assert not chores.busy()


@pytest.mark.postgres
def test_a_leased_chore_keeps_its_lease_while_a_run_outlasts_the_ttl(
    tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    # a monitors pass on a loaded machine can last longer than a short lease TTL: the lease is
    # renewed while it runs, so another daemon does not start the same chore beside it
    url, stop, ttl = pg_database(), threading.Event(), dt.timedelta(seconds=1)

    def chores() -> Chores:
        return Chores(lambda: StateStore.open(url, tmp_path, create=True), stop, lambda: ttl, str)

    a, b = chores(), chores()
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def long(store: Store) -> None:
        started.set()
        release.wait(10)

    one = Chore("monitors", dt.timedelta(minutes=1), long)
    two = Chore("monitors", dt.timedelta(minutes=1), lambda s: ran.append("b"))
    a.add(one)
    b.add(two)
    runner = threading.Thread(target=a.run, args=(one,))
    runner.start()
    try:
        assert started.wait(10)
        time.sleep(2.5 * ttl.total_seconds())  # a's run goes on past its TTL, twice over and more
        assert not b.run(two)
        assert one.held is not None
    finally:
        release.set()
        runner.join(10)
    assert ran == []
    stop.set()
    a.join(2)  # gives the lease up
    assert b.run(two) and ran == ["b"]
    b.join(2)
