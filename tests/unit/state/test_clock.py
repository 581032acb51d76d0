"""The Clock seam: the system clock reads and waits for real, the ManualClock only moves when told
or slept on (so tests of backoffs, budgets and token renewal take no real waiting)."""

from __future__ import annotations

import datetime as dt
import threading
import time

from mapsync.state.clock import SYSTEM, Clock, ManualClock, SystemClock, stamp, unstamp


def test_system_clock_is_the_machine_clock() -> None:
    clock: Clock = SYSTEM
    assert isinstance(clock, SystemClock)
    assert abs(clock.time() - time.time()) < 1.0
    assert abs((clock.now() - dt.datetime.now(dt.UTC)).total_seconds()) < 1.0
    assert clock.now().tzinfo is dt.UTC
    event = threading.Event()
    event.set()
    start = time.monotonic()
    assert clock.wait(event, 5.0) is True  # set: returns at once
    assert time.monotonic() - start < 1.0
    assert clock.wait(threading.Event(), 0.01) is False


def test_manual_clock_moves_only_when_told_or_slept_on() -> None:
    clock: Clock = ManualClock(1_800_000_000.0)
    assert isinstance(clock, ManualClock)
    start = time.monotonic()
    assert clock.time() == clock.monotonic() == 1_800_000_000.0
    clock.sleep(300)  # a 5-minute backoff
    assert clock.time() == 1_800_000_300.0 and clock.slept == [300]
    clock.advance(0.5)
    clock.set(1_800_000_000.0)  # never back
    assert clock.time() == 1_800_000_300.5
    clock.set(1_800_000_400.0)
    assert clock.now() == dt.datetime(2027, 1, 15, 8, 6, 40, tzinfo=dt.UTC)
    assert stamp(clock.now()) == "2027-01-15T08:06:40.000000Z"
    stop = threading.Event()
    assert clock.wait(stop, 60) is False and clock.time() == 1_800_000_460.0
    stop.set()
    assert clock.wait(stop, 60) is True and clock.time() == 1_800_000_460.0  # set: no time passes
    assert time.monotonic() - start < 1.0  # none of it was real waiting


def test_unstamp_reads_a_stamp_back() -> None:
    moment = dt.datetime(2026, 5, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)
    assert unstamp(stamp(moment)) == moment
    assert unstamp("2026-05-01T08:00:00.000000Z").tzinfo == dt.UTC
