"""The records one run touched (port `History.run_records`, the dashboard's run drill-down), from
its delivery attempts (state/attempts.py: the last few per key are kept) and the record errors it
left (a record error names the last run that rejected it). Messages are as stored: the engine
redacts them before they are written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def merge(
    attempts: Iterable[Mapping[str, Any]], errors: Iterable[Mapping[str, Any]], limit: int
) -> list[dict[str, Any]]:
    """Attempt rows (key, outcome, message, at) and record error rows (key, message, last_seen)
    as dicts of key, outcome, message, at, oldest first; an error whose key has an attempt of the
    run is that attempt (the attempt says more), else it is outcome `rejected` at its last_seen."""
    out = [
        {"key": a["key"], "outcome": a["outcome"], "message": a["message"], "at": a["at"]} for a in attempts
    ]
    seen = {row["key"] for row in out}
    out += [
        {"key": e["key"], "outcome": "rejected", "message": e["message"], "at": e["last_seen"]}
        for e in errors
        if e["key"] not in seen
    ]
    out.sort(key=lambda row: (row["at"], row["key"]))
    return out[:limit]
