"""The in-memory store's operator controls (port `Controls`): the semantics of
state/controls.py over the tables of state/memory_tables.py."""

from __future__ import annotations

import json
from collections.abc import Sequence

from mapsync.state.clock import stamp, unstamp
from mapsync.state.controls import check_final, check_kind, request_of
from mapsync.state.data import PauseInfo, RunRequest
from mapsync.state.memory_tables import Memory


class MemoryControlsMixin:
    memory: Memory

    def pause(self, sync: str, by: str, note: str | None = None) -> None:
        with self.memory.tx() as t:
            t.controls[sync] = {
                "sync": sync,
                "paused": True,
                "paused_by": by,
                "paused_at": stamp(),
                "note": note,
            }

    def resume(self, sync: str) -> bool:
        with self.memory.tx() as t:
            row = t.controls.get(sync)
            if row is None or not row["paused"]:
                return False
            t.controls[sync] = {**row, "paused": False, "paused_by": None, "paused_at": None, "note": None}
            return True

    def paused(self) -> dict[str, PauseInfo]:
        with self.memory.read() as t:
            return {
                s: PauseInfo(r["paused_by"] or "", unstamp(r["paused_at"]), r["note"])
                for s, r in t.controls.items()
                if r["paused"]
            }

    def request_run(
        self, sync: str, kind: str, by: str, keys: Sequence[str] | None = None, note: str | None = None
    ) -> int:
        check_kind(kind)
        with self.memory.tx() as t:
            request_id = t.next_id("requests")
            t.requests[request_id] = {
                "id": request_id,
                "sync": sync,
                "kind": kind,
                "requested_by": by,
                "requested_at": stamp(),
                "taken_at": None,
                "taken_by": None,
                "run_id": None,
                "status": "new",
                "message": None,
                "keys": None if keys is None else json.dumps(list(keys)),
                "note": note,
            }
        return request_id

    def take_requests(self, syncs: list[str], worker: str) -> list[RunRequest]:
        now = stamp()
        wanted = set(syncs)
        with self.memory.tx() as t:
            mine = sorted(i for i, r in t.requests.items() if r["sync"] in wanted and r["status"] == "new")
            for i in mine:
                t.requests[i] = {**t.requests[i], "status": "taken", "taken_at": now, "taken_by": worker}
            return [request_of(t.requests[i]) for i in mine]

    def finish_request(
        self, request_id: int, status: str, run_id: int | None = None, message: str | None = None
    ) -> None:
        check_final(status)
        with self.memory.tx() as t:
            row = t.requests.get(request_id)
            if row is not None:
                change = {"status": status, "run_id": run_id, "message": message[:2000] if message else None}
                t.requests[request_id] = {**row, **change}

    def requests(
        self, sync: str | None = None, limit: int = 100, *, pending: bool = False
    ) -> list[RunRequest]:
        with self.memory.read() as t:
            rows = [
                r
                for r in t.requests.values()
                if (sync is None or r["sync"] == sync) and (not pending or r["status"] in ("new", "taken"))
            ]
        rows.sort(key=lambda r: -int(r["id"]))
        return [request_of(r) for r in rows[:limit]]
