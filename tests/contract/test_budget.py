"""Contract: the call budgets' storage (rest/budget.py decides; the store records)."""

from __future__ import annotations

from mapsync.state.data import BudgetRow, Recent
from mapsync.state.ports import Store


def test_take_records_calls_and_prunes_old_ones(store: Store) -> None:
    store.budget_ensure("cred")
    store.budget_ensure("cred")  # twice: still one row
    seen: list[tuple[int, BudgetRow, list[int]]] = []

    def allow(now: int, row: BudgetRow, recent: Recent) -> int:
        seen.append((now, row, recent(2, 0)))
        return 0

    for moment in (100, 200, 300):
        assert store.budget_take("cred", lambda m=moment: m, allow, keep_us=150) == 0
    assert [s[2] for s in seen] == [[], [100], [200, 100]]  # newest first, at most 2
    assert seen[0][1] == BudgetRow(None, None, None)
    times, row = store.budget_read("cred", 0)
    assert times == [200, 300] and row == BudgetRow()  # 100 <= 300 - 150: pruned
    assert store.budget_read("cred", 250)[0] == [300]
    assert store.budget_read("other", 0) == ([], None)


def test_a_wait_records_nothing(store: Store) -> None:
    store.budget_ensure("cred")
    assert store.budget_take("cred", lambda: 100, lambda now, row, recent: 42, keep_us=1000) == 42
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
