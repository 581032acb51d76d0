"""The in-memory store's reconciliation results (port `Reconciliation`), as state/reconciliation.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from mapsync.state.memory_tables import Memory
from mapsync.state.reconciliation import result_row, shown


class MemoryReconciliation:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def record_result(
        self,
        result: dict[str, Any],
        *,
        run_id: int | None,
        started_at: dt.datetime,
        finished_at: dt.datetime,
    ) -> int:
        row = result_row(result, run_id, started_at, finished_at)
        with self.memory.tx() as t:
            new_id = t.next_id("reconcile_results")
            t.reconcile_results[new_id] = {"id": new_id, **row}
        return new_id

    def results(self, check: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.memory.read() as t:
            rows = [r for r in t.reconcile_results.values() if r["check"] == check]
        return [shown(r) for r in sorted(rows, key=lambda r: -r["id"])[:limit]]

    def latest(self, checks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        newest: dict[str, dict[str, Any]] = {}
        with self.memory.read() as t:
            for r in t.reconcile_results.values():
                if checks is not None and r["check"] not in checks:
                    continue
                if r["check"] not in newest or r["id"] > newest[r["check"]]["id"]:
                    newest[r["check"]] = r
        return {c: shown(r) for c, r in newest.items()}
