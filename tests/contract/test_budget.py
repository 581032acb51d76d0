"""Contract: the call budgets' storage (rest/budget.py decides; the store records), and the
budget deciding through each store: a call counts until its answer came back."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from mapsync.rest.budget import Budget
from mapsync.state.clock import ManualClock
from mapsync.state.data import BudgetRow, Recent
from mapsync.state.ports import Store


def test_take_records_calls_and_prunes_old_ones(store: Store) -> None:
    store.budget_ensure("cred")
    store.budget_ensure("cred")  # twice: still one row
    seen: list[tuple[int, BudgetRow, list[int]]] = []

    def allow(now: int, row: BudgetRow, recent: Recent) -> int:
        seen.append((now, row, recent(2, 0)))
        return 0

    calls = [store.budget_take("cred", lambda m=moment: m, allow, keep_us=150) for moment in (100, 200, 300)]
    assert [wait for wait, _ in calls] == [0, 0, 0]
    assert len({call for _, call in calls}) == 3  # one id per call, for `budget_settle`
    assert [s[2] for s in seen] == [[], [100], [200, 100]]  # newest first, at most 2
    assert seen[0][1] == BudgetRow(None, None, None)
    times, row = store.budget_read("cred", 0)
    assert times == [200, 300] and row == BudgetRow()  # 100 <= 300 - 150: pruned
    assert store.budget_read("cred", 250)[0] == [300]
    assert store.budget_read("other", 0) == ([], None)


def test_a_wait_records_nothing(store: Store) -> None:
    store.budget_ensure("cred")
    assert store.budget_take("cred", lambda: 100, lambda now, row, recent: 42, keep_us=1000) == (42, 0)
    assert store.budget_read("cred", 0)[0] == []


def test_tighten_keeps_the_later_block_and_the_servers_count_goes_down(store: Store) -> None:
    store.budget_ensure("cred")
    store.budget_tighten("cred", 5_000, (10, 9_000))
    store.budget_tighten("cred", 4_000, None)  # an earlier block does not shorten it
    assert store.budget_read("cred", 0)[1] == BudgetRow(5_000, 10, 9_000)
    store.budget_tighten("cred", 6_000, None)
    rows: list[BudgetRow] = []

    def allow(now: int, row: BudgetRow, recent: Recent) -> int:
        rows.append(row)
        return 0

    store.budget_take("cred", lambda: 7_000, allow, keep_us=10_000)
    assert rows == [BudgetRow(6_000, 10, 9_000)]
    assert store.budget_read("cred", 0) == ([7_000], BudgetRow(6_000, 9, 9_000))
    store.budget_tighten("nobody", 1, (1, 1))  # no row: nothing happens
    assert store.budget_read("nobody", 0) == ([], None)


def _allow(now: int, row: BudgetRow, recent: Recent) -> int:
    return 0


def test_settle_moves_a_call_to_its_answer(store: Store) -> None:
    store.budget_ensure("cred")
    _, first = store.budget_take("cred", lambda: 100, _allow, keep_us=1_000)
    _, second = store.budget_take("cred", lambda: 200, _allow, keep_us=1_000)
    store.budget_settle("cred", first, lambda: 450)  # the first call's answer came late
    assert store.budget_read("cred", 0)[0] == [200, 450]
    seen: list[list[int]] = []

    def look(now: int, row: BudgetRow, recent: Recent) -> int:
        seen.append(recent(5, 0))
        return 0

    store.budget_take("cred", lambda: 500, look, keep_us=1_000)
    assert seen == [[450, 200]]  # the next decision counts it from its answer, newest first
    store.budget_settle("cred", second, lambda: 150)  # never earlier than it was recorded
    assert store.budget_read("cred", 0)[0] == [200, 450, 500]


def test_settle_records_again_a_call_pruned_while_in_flight(store: Store) -> None:
    store.budget_ensure("cred")
    _, slow = store.budget_take("cred", lambda: 100, _allow, keep_us=150)
    store.budget_take("cred", lambda: 300, _allow, keep_us=150)  # prunes the slow call's record
    assert store.budget_read("cred", 0)[0] == [300]
    store.budget_settle("cred", slow, lambda: 320)  # its answer: it counts from now
    assert store.budget_read("cred", 0)[0] == [300, 320]


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_a_late_answer_pushes_the_next_grant_to_answer_plus_window(store: Store, margin: float) -> None:
    """20 calls per 1 s; the first call's answer came 0.3 s after its grant (the server counted it
    somewhere in between): the 21st call waits for answer + window (+ margin), not grant + window.
    A ManualClock near the real time (the SQL store keeps the times): no real waiting."""
    clock = ManualClock()
    limits = [(20, dt.timedelta(seconds=1))]
    budget = Budget(store, uuid.uuid4().hex, limits, margin=margin, clock=clock.time, sleep=clock.sleep)
    start = clock.time()
    first = budget.acquire()
    clock.advance(0.3)
    budget.settle(first)  # answered at +0.3 s
    for _ in range(19):
        budget.settle(budget.acquire())  # answered at once
    assert clock.slept == []
    budget.acquire()
    assert clock.time() - start == pytest.approx(0.3 + 1.0 + margin)
