"""The results of reconciliation checks (schema v8, port `Reconciliation`), as
`store.reconciliation`: one row per check run (`mapsync reconcile`, the daemon's scheduled checks),
its counts and its whole result as JSON (`reconcile.results.CheckResult.to_json`, lists capped), so
`latest` tells the monitor `reconcile_mismatch` what each check found last and `results` gives the
trend. Purged by retention (`state.retention.reconcile`), each check's latest row kept."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync.state import schema
from mapsync.state.clock import stamp, unstamp
from mapsync.state.faults import guarded

STATUSES = ("ok", "differs", "incomplete", "error", "repaired")  # incomplete: drift entries not digested


def result_row(
    result: dict[str, Any], run_id: int | None, started_at: dt.datetime, finished_at: dt.datetime
) -> dict[str, Any]:
    """The columns of a new result row (not its id) from a `CheckResult.to_json()` dict; its
    `status` (ok | differs | incomplete | error | repaired) is the dict's."""
    status = str(result.get("status") or "error")
    if status not in STATUSES:
        raise ValueError(f"check {result.get('check')}: unknown result status {status!r}")
    return {
        "check": str(result["check"]),
        "kind": str(result["kind"]),
        "sync": result.get("sync"),
        "run_id": run_id,
        "started_at": stamp(started_at),
        "finished_at": stamp(finished_at),
        "status": status,
        "compared": int(result.get("compared") or 0),
        "differences": int(result.get("differences") or 0),
        "detail": json.dumps(result, default=str, separators=(",", ":")),
    }


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the port hands it out: times as aware datetimes, `detail` parsed."""
    out = dict(row)
    out["started_at"] = unstamp(row["started_at"])
    out["finished_at"] = unstamp(row["finished_at"])
    out["detail"] = json.loads(row["detail"])
    return out


class SqlReconciliation:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @guarded
    def record_result(
        self,
        result: dict[str, Any],
        *,
        run_id: int | None,
        started_at: dt.datetime,
        finished_at: dt.datetime,
    ) -> int:
        """Keep one check run's result; its id."""
        row = result_row(result, run_id, started_at, finished_at)
        with self.engine.begin() as conn:
            inserted = conn.execute(sa.insert(schema.reconcile_results).values(**row)).inserted_primary_key
            return int(inserted[0])  # type: ignore[index]

    @guarded
    def results(self, check: str, limit: int = 100) -> list[dict[str, Any]]:
        """The check's results, newest first."""
        t = schema.reconcile_results
        query = sa.select(t).where(t.c.check == check).order_by(t.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [shown(dict(r)) for r in conn.execute(query).mappings()]

    @guarded
    def latest(self, checks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Check → its newest result (of `checks`, or every check ever recorded)."""
        t = schema.reconcile_results
        newest = sa.select(sa.func.max(t.c.id)).group_by(t.c.check)
        if checks is not None:
            if not checks:
                return {}
            newest = newest.where(t.c.check.in_(list(checks)))
        query = sa.select(t).where(t.c.id.in_(newest))
        with self.engine.connect() as conn:
            return {r["check"]: shown(dict(r)) for r in conn.execute(query).mappings()}
