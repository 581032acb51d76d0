"""The call budget: limit strings, the sliding window (in one process, and two processes sharing a
credential through a SQLite and a PostgreSQL state store, measured at a local HTTP counter), and
the server's rate-limit headers (Retry-After in seconds and HTTP-date, X-RateLimit-*, 429).

Run as a script, this file is the worker process of the two-process tests."""

from __future__ import annotations

import datetime as dt
import email.utils
import http.server
import json
import math
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa

from mapsync.rest.budget import Budget, parse_limit, parse_limits, parse_retry_after
from mapsync.state import schema
from mapsync.state.clock import ManualClock
from mapsync.state.store import StateStore

S = dt.timedelta(seconds=1)


def _cred() -> str:
    return f"test-{uuid.uuid4().hex}"


def _max_in_window(times: list[float], window: float, slack: float = 0.002) -> int:
    """The most calls found in any half-open span [t, t + window) (slack: timer jitter)."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window - slack) for i, t in enumerate(times))


# --------------------------------------------------------------------------- limit strings


def test_limit_strings() -> None:
    assert parse_limit("2/1s") == (2, S)
    assert parse_limit("100/15m") == (100, 15 * 60 * S)
    assert parse_limit("2/s") == (2, S)
    assert parse_limit(" 5 per 1h ") == (5, 3600 * S)
    assert parse_limits("2/1s, 100/15m") == [(2, S), (100, 900 * S)]
    assert parse_limits(["2/1s", "100/15m"]) == [(2, S), (100, 900 * S)]
    for bad in ("x/1s", "0/1s", "2/0s", "2/abc", "2", ""):
        with pytest.raises(ValueError, match=r"call limit|duration"):
            parse_limit(bad)


def test_retry_after_forms() -> None:
    now = time.time()
    assert parse_retry_after("7", now) == 7.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28.5 < (parse_retry_after(date, now) or 0) <= 30
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# --------------------------------------------------------------------------- the window


def test_sliding_window_in_process_two_threads() -> None:
    """20 calls per 1 s, 120 calls from two threads (6 windows): never more than 20 in any 1 s,
    and the whole takes the bound (5 full windows) within 10 %."""
    limit, window, total = 20, 1.0, 120
    budget_a = Budget(None, "shared-in-process", [(limit, window * S)])
    budget_b = Budget(None, "shared-in-process", [(limit, window * S)])  # same credential
    times: list[float] = []
    lock = threading.Lock()

    def work(budget: Budget) -> None:
        for _ in range(total // 2):
            budget.acquire()
            with lock:
                times.append(time.time())

    threads = [threading.Thread(target=work, args=(b,)) for b in (budget_a, budget_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(times) == total
    assert _max_in_window(times, window) == limit  # full, never over
    bound = (math.ceil(total / limit) - 1) * window
    elapsed = max(times) - min(times)
    print(f"in-process, 2 threads: {total} calls in {elapsed:.3f}s (bound {bound:g}s)")
    assert bound - 0.01 <= elapsed <= bound * 1.1, (elapsed, bound)


def test_every_limit_holds_at_once() -> None:
    clock = ManualClock()  # moves only when the budget sleeps: no real waiting
    budget = Budget(None, _cred(), [(2, 0.2 * S), (5, S)], clock=clock.time, sleep=clock.sleep, margin=0)
    times = []
    for _ in range(16):
        budget.acquire()
        times.append(clock.time())
    assert _max_in_window(times, 0.2, slack=1e-9) == 2
    assert _max_in_window(times, 1.0, slack=1e-9) == 5
    assert times[-1] - times[0] == pytest.approx(3.0)  # 16 calls at 5/s: the slower limit rules


def test_fixed_windows_would_allow_double_the_limit_at_a_boundary() -> None:
    """The sliding window refuses the burst a fixed window lets through across its boundary."""
    clock = ManualClock()  # moves only when the budget sleeps: no real waiting
    clock.set(1_800_000_000.9)  # 0.1 s before a fixed 1-second window would start afresh
    budget = Budget(None, _cred(), [(3, S)], clock=clock.time, sleep=clock.sleep, margin=0)
    times = []
    for _ in range(6):
        budget.acquire()
        times.append(clock.time())
    assert _max_in_window(times, 1.0, slack=1e-9) == 3
    assert times[3] - times[0] == pytest.approx(1.0)


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_a_call_counts_until_its_answer(margin: float) -> None:
    """20 per 1 s; the first call was answered 0.3 s after its grant (the server counted it at some
    moment in between): the 21st call waits until that answer + window (+ margin), not grant +
    window. Unsettled, a call counts from its grant (the next test)."""
    clock = ManualClock()  # moves only when the budget sleeps: no real waiting
    budget = Budget(None, _cred(), [(20, S)], clock=clock.time, sleep=clock.sleep, margin=margin)
    start = clock.time()
    first = budget.acquire()
    clock.advance(0.3)
    budget.settle(first)
    for _ in range(19):
        budget.settle(budget.acquire())
    assert clock.slept == []
    budget.acquire()
    assert clock.time() - start == pytest.approx(1.3 + margin)
    assert budget.remaining()["limits"][0]["used"] == 1  # the window now holds only the new call


def test_an_unsettled_call_counts_from_its_grant_and_a_pruned_one_again_when_answered() -> None:
    clock = ManualClock()
    budget = Budget(None, _cred(), [(2, S)], clock=clock.time, sleep=clock.sleep, margin=0)
    slow = budget.acquire()
    clock.advance(0.3)
    budget.acquire()
    budget.acquire()  # the slow call's grant + 1 s
    assert clock.time() - 1_800_000_000 == pytest.approx(1.0)
    clock.advance(2.0)  # the slow call's record is pruned by the next grant
    budget.acquire()
    budget.settle(slow)  # …but its answer only now: it counts from here
    start = clock.time()
    budget.acquire()
    assert clock.time() - start == pytest.approx(1.0)


# --------------------------------------------------------------------------- two processes


class _Counter(http.server.BaseHTTPRequestHandler):
    times: ClassVar[list[float]] = []

    def do_GET(self) -> None:
        self.times.append(time.time())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def counter() -> Iterator[tuple[str, list[float]]]:
    """A local HTTP server that notes the arrival time of every request."""
    times: list[float] = []
    handler = type("Counter", (_Counter,), {"times": times})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/call", times
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make().replace("postgresql://", "postgresql+psycopg://")


def test_two_processes_sharing_a_credential_stay_within_it(
    state_url: str, tmp_path: Path, counter: tuple[str, list[float]]
) -> None:
    url, times = counter
    StateStore.open(state_url, tmp_path, create=True).close()
    limit, window, each = 20, 1.5, 60  # 6 windows
    credential = _cred()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                state_url,
                str(tmp_path),
                credential,
                f"{limit}/{window:g}s",
                str(each),
                url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=90)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    said = [json.loads(out) for out in outputs]
    slowest = max(s["slowest_answer"] for s in said)
    deciding = max(s["slowest_decision"] for s in said)
    assert len(times) == 2 * each
    assert _max_in_window(times, window) == limit
    transitions = math.ceil(2 * each / limit) - 1
    bound = transitions * window
    elapsed = max(times) - min(times)
    # Upper bound: a call counts until its answer, so each new window starts no earlier than the
    # answer of the call it waits on + the margin; then the waiting worker wakes and decides in
    # the store. Per transition at most: margin + the slowest answer + the slowest decision the
    # workers saw (measured, so a loaded machine is allowed for, not guessed), and 10 % for
    # waking up. A budget wasting a whole window (+1.5 s) is over it.
    allowed = bound * 1.1 + transitions * (0.05 + slowest + deciding)
    print(
        f"2 processes, {state_url.split(':')[0]}: {len(times)} calls in {elapsed:.3f}s "
        f"(bound {bound:g}s, allowed {allowed:.3f}s, slowest answer {slowest:.3f}s, "
        f"decision {deciding:.3f}s)"
    )
    assert bound - 0.05 <= elapsed <= allowed, (elapsed, bound, allowed)
    store = StateStore.open(state_url, tmp_path, create=False)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(schema.budget_calls.c.credential)).scalars().all()
        assert 0 < len(rows) <= limit + 1  # older calls pruned
        assert credential not in rows and all(len(r) == 32 for r in rows)  # only its hash is kept
        left = Budget(store, credential, [(limit, window * S)]).remaining()
        assert left["limits"][0]["used"] + left["limits"][0]["remaining"] == limit
    finally:
        store.close()


def _worker(argv: list[str]) -> None:
    state_url, folder, credential, limit, each, url = argv
    import httpx

    store = StateStore.open(state_url, Path(folder), create=False)
    slept = [0.0]

    def sleep(seconds: float) -> None:
        slept[0] += seconds
        time.sleep(seconds)

    budget = Budget(store, credential, parse_limits(limit), sleep=sleep)
    slowest, deciding = 0.0, 0.0  # the longest wait from a grant to its answer; for a decision
    with httpx.Client() as client:
        for _ in range(int(each)):
            asked, slept[0] = time.time(), 0.0
            call = budget.acquire()
            granted = time.time()
            deciding = max(deciding, granted - asked - slept[0])  # the store's transactions
            try:
                client.get(url).raise_for_status()
            finally:
                budget.settle(call)  # the server counted it by now, as HttpClient does
            slowest = max(slowest, time.time() - granted)
    store.close()
    print(json.dumps({"slowest_answer": slowest, "slowest_decision": deciding}))


# --------------------------------------------------------------------------- the server's word


def _timed(clock: ManualClock, budget: Budget) -> float:
    start = clock.time()
    budget.acquire()
    return clock.time() - start


def test_retry_after_seconds_reaches_every_budget_of_the_credential(tmp_path: Path) -> None:
    """Through the store: what one budget heard holds up another of the same credential (the
    clock is a ManualClock: the blocked second passes without real waiting)."""
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, create=True)
    try:
        clock = ManualClock(time.time())  # the store keeps call times: near the real ones
        credential = _cred()
        first, other = (
            Budget(store, credential, [(100, S)], clock=clock.time, sleep=clock.sleep) for _ in range(2)
        )  # `other`: another sync using the same credential
        unrelated = Budget(store, _cred(), [(100, S)], clock=clock.time, sleep=clock.sleep)
        first.acquire()
        clock.advance(0.05)
        first.observe(429, {"Retry-After": "1"})
        clock.advance(0.05)
        # (the store keeps microseconds: a float clock near 1.8e9 s rounds one either way)
        assert other.remaining()["blocked_for"] == pytest.approx(0.95, abs=2e-6)
        assert _timed(clock, unrelated) == 0
        assert _timed(clock, other) == pytest.approx(0.95, abs=2e-6)
        assert clock.slept == [pytest.approx(0.95, abs=2e-6)]
    finally:
        store.close()


def test_retry_after_http_date_is_honoured() -> None:
    clock = ManualClock(1_800_000_000.4)
    budget = Budget(None, _cred(), [(100, S)], clock=clock.time, sleep=clock.sleep)
    budget.observe(503, {"retry-after": email.utils.formatdate(clock.time() + 2, usegmt=True)})
    assert _timed(clock, budget) == pytest.approx(1.6)  # an HTTP-date has whole seconds


def test_rate_limit_headers_tighten_the_budget() -> None:
    clock = ManualClock()  # moves only when the budget sleeps: no real waiting
    budget = Budget(None, _cred(), [(100, 900 * S)], clock=clock.time, sleep=clock.sleep, margin=0)
    budget.observe(200, {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "30"})
    budget.acquire()
    budget.acquire()
    assert clock.slept == []
    assert budget.remaining()["server_remaining"] == 0
    start = clock.time()
    budget.acquire()  # the server said 2 more until its reset: wait for it
    assert clock.time() - start == pytest.approx(30)
    budget.observe(200, {"RateLimit-Remaining": "0", "RateLimit-Reset": "5"})
    start = clock.time()
    budget.acquire()
    assert clock.time() - start == pytest.approx(5)


def test_429_without_headers_waits_the_shortest_window() -> None:
    clock = ManualClock()  # moves only when the budget sleeps: no real waiting
    budget = Budget(None, _cred(), [(2, S), (100, 900 * S)], clock=clock.time, sleep=clock.sleep, margin=0)
    budget.observe(429, {})
    start = clock.time()
    budget.acquire()
    assert clock.time() - start == pytest.approx(1.0)


def test_old_calls_are_pruned(tmp_path: Path) -> None:
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, create=True)
    try:
        clock = ManualClock()  # moves only when the budget sleeps: no real waiting
        budget = Budget(store, _cred(), [(50, 10 * S)], clock=clock.time, sleep=clock.sleep)
        for _ in range(10):
            budget.acquire()
        clock.advance(11)
        budget.acquire()
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(schema.budget_calls)).scalar() == 1
        assert budget.remaining()["limits"] == [
            {"limit": "50/10s", "used": 1, "remaining": 49, "resets_in": 10.0}
        ]
    finally:
        store.close()


def test_bad_limits_are_config_errors() -> None:
    from mapsync import errors

    with pytest.raises(errors.ConfigError, match="positive"):
        Budget(None, "x", [(0, S)])


if __name__ == "__main__":
    _worker(sys.argv[1:])
