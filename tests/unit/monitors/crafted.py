"""Crafted histories for the monitors' unit tests: run rows as the stores give them (stamps as
text), and SyncFacts over a sheet built in memory."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from mapsync.monitors.facts import SyncFacts
from mapsync.sheet import models
from mapsync.sheet.monitor_models import MonitorsConfig, resolve
from mapsync.state.clock import stamp

NOW = dt.datetime(2026, 12, 3, 12, 0, 30, tzinfo=dt.UTC)
_ids = itertools.count(1)


def run(
    status: str = "success",
    *,
    ago: float = 60.0,
    took: float | None = 5.0,
    read: int = 10,
    written: int = 10,
    skipped: int = 0,
    rejected: int = 0,
    deleted: int = 0,
    missed: int = 0,
    slot_at: dt.datetime | None = None,
    late_s: float | None = None,
    **more: Any,
) -> dict[str, Any]:
    """A run row that started `ago` seconds before NOW and took `took` seconds (None: no end)."""
    started = NOW - dt.timedelta(seconds=ago)
    ended = None if took is None or status == "running" else started + dt.timedelta(seconds=took)
    row: dict[str, Any] = {
        "id": next(_ids),
        "sync": "orders",
        "kind": "run",
        "trigger": "schedule" if slot_at else "cli",
        "status": status,
        "failure_class": None,
        "reason": None,
        "message": None,
        "lease_token": "t1",
        "started_at": stamp(started),
        "finished_at": stamp(ended) if ended else None,
        "scheduled_at": stamp(slot_at) if slot_at else None,
        "slot": "run" if slot_at else None,
        "lateness_ms": int(late_s * 1000) if late_s is not None else None,
        "read": read,
        "written": written,
        "skipped": skipped,
        "rejected": rejected,
        "deleted": deleted,
        "missed": missed,
        "truncated": 0,
        "defaulted": 0,
        "coalesced": 0,
        "worker": "host:1",
    }
    row.update(more)
    return row


def sheet(
    schedule: dict[str, Any] | None = None, sync: dict[str, Any] | None = None, **top: Any
) -> models.Sheet:
    """A sheet of one sync `orders` from connection `erp` to `shop` (`sync`: more of its keys)."""
    return models.Sheet.model_validate(
        {
            "version": 1,
            "connections": {"erp": {"url": "sqlite:///erp.db"}, "shop": {"url": "sqlite:///shop.db"}},
            "syncs": {
                "orders": {
                    "from": {"connection": "erp", "table": "orders"},
                    "to": {"connection": "shop", "table": "orders"},
                    "key": {"from": "id", "to": "id"},
                    "changes": {"method": "watermark", "column": "version"},
                    "fields": {"nm": "name"},
                    **({"schedule": schedule} if schedule else {}),
                    **(sync or {}),
                }
            },
            **top,
        }
    )


def facts(
    runs: list[dict[str, Any]] | None = None,
    *,
    schedule: dict[str, Any] | None = None,
    monitors: dict[str, Any] | None = None,
    sheet_monitors: dict[str, Any] | None = None,
    now: dt.datetime = NOW,
    **kw: Any,
) -> SyncFacts:
    """The facts of sync `orders` (runs newest first, as `History.runs` gives them)."""
    cfg = sheet(schedule).syncs["orders"]
    layers = [MonitorsConfig.model_validate(m) for m in (sheet_monitors, monitors) if m is not None]
    return SyncFacts(
        sync="orders",
        cfg=cfg,
        thresholds=resolve(*layers),
        now=now,
        runs=sorted(runs or [], key=lambda r: -int(r["id"])),
        **kw,
    )
