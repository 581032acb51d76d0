"""The MemoryStore's call budgets (port `Budget`), as `state/budget.py` is the SQL store's: a call
is recorded when it is granted and moved to its answer's time when settled."""

from __future__ import annotations

from collections.abc import Callable

from mapsync.state.clock import stamp
from mapsync.state.data import BudgetRow, Recent
from mapsync.state.memory_tables import Memory


class MemoryBudgetMixin:
    memory: Memory

    def budget_ensure(self, credential: str) -> None:
        with self.memory.tx() as t:
            if credential not in t.budgets:
                t.budgets[credential] = {
                    "blocked_until_us": None,
                    "server_remaining": None,
                    "server_reset_us": None,
                    "updated_at": stamp(),
                }

    def budget_take(
        self,
        credential: str,
        now: Callable[[], int],
        decide: Callable[[int, BudgetRow, Recent], int],
        keep_us: int,
    ) -> tuple[int, int]:
        with self.memory.tx() as t:
            row = t.budgets.get(credential)
            if row is None:
                raise LookupError("no call budget for this credential: budget_ensure first")
            row = t.budgets[credential] = {**row, "updated_at": stamp()}
            moment = now()
            calls = t.calls.get(credential, ())

            def recent(count: int, after: int) -> list[int]:
                return sorted((at for _, at in calls if at > after), reverse=True)[:count]

            budget = BudgetRow(row["blocked_until_us"], row["server_remaining"], row["server_reset_us"])
            wait = decide(moment, budget, recent)
            if wait > 0:
                return wait, 0
            if row["server_remaining"] is not None:
                t.budgets[credential] = {**row, "server_remaining": row["server_remaining"] - 1}
            call = t.next_id("budget_calls")
            kept = tuple(c for c in calls if c[1] > moment - keep_us)
            t.calls[credential] = (*kept, (call, moment))
            return 0, call

    def budget_settle(self, credential: str, call: int, now: Callable[[], int]) -> None:
        with self.memory.tx() as t:
            moment = now()
            calls = t.calls.get(credential, ())
            if any(c == call for c, _ in calls):
                t.calls[credential] = tuple((c, max(at, moment) if c == call else at) for c, at in calls)
            else:  # pruned meanwhile (or never seen): recorded again, as the SQL store does
                t.calls[credential] = (*calls, (t.next_id("budget_calls"), moment))

    def budget_tighten(
        self, credential: str, blocked: int | None, server: tuple[int, int | None] | None
    ) -> None:
        with self.memory.tx() as t:
            row = t.budgets.get(credential)
            if row is None:
                return
            row = {**row, "updated_at": stamp()}
            if blocked is not None and (row["blocked_until_us"] is None or row["blocked_until_us"] < blocked):
                row["blocked_until_us"] = blocked
            if server is not None:
                row["server_remaining"], row["server_reset_us"] = server
            t.budgets[credential] = row

    def budget_read(self, credential: str, after: int) -> tuple[list[int], BudgetRow | None]:
        with self.memory.read() as t:
            times = sorted(at for _, at in t.calls.get(credential, ()) if at > after)
            row = t.budgets.get(credential)
        if row is None:
            return times, None
        return times, BudgetRow(row["blocked_until_us"], row["server_remaining"], row["server_reset_us"])
