"""Helpers of the read functions: plain JSON-ready values with every text redacted."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from typing import Any

from mapsync import keys
from mapsync.monitors.facts import at
from mapsync.redact import redact
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.models import ExportFlagChanges


def clean(loaded: LoadedSheet, value: Any) -> Any:
    """Plain JSON data: datetimes as ISO text, dataclasses as dicts, every text redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value, loaded.secrets) if loaded.secrets else value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return clean(loaded, dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): clean(loaded, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean(loaded, v) for v in value]
    return clean(loaded, str(value))


def iso(value: Any) -> str | None:
    when = at(value)
    return None if when is None else when.isoformat()


def is_export(loaded: LoadedSheet, sync: str) -> bool:
    return isinstance(loaded.sheet.syncs[sync].changes, ExportFlagChanges)


def run_row(row: dict[str, Any]) -> dict[str, Any]:
    """A run as the dashboard shows it."""
    start, end = at(row.get("started_at")), at(row.get("finished_at"))
    return {
        "id": row["id"],
        "sync": row.get("sync"),
        "kind": row.get("kind"),
        "trigger": row.get("trigger"),
        "status": row.get("status"),
        "started_at": iso(start),
        "finished_at": iso(end),
        "duration_s": round((end - start).total_seconds(), 3) if start and end else None,
        "read": int(row.get("read") or 0),
        "written": int(row.get("written") or 0),
        "failed": int(row.get("rejected") or 0),
        "deleted": int(row.get("deleted") or 0),
        "failure_class": row.get("failure_class"),
        "message": row.get("message"),
    }


def arg_key(loaded: LoadedSheet, sync: str, text: Any) -> Any:
    """A stored key text (`records.key_text`, a JSON list) in its command-line form (`1001`,
    `col=value,col=value`): the one form the pages and the API show and their actions take back.
    A text that is not a stored key is returned as it is."""
    if not isinstance(text, str):
        return text
    with contextlib.suppress(ValueError, TypeError, json.JSONDecodeError):
        return keys.to_arg(keys.from_text(text), keys.columns_of(loaded.sheet, sync))
    return text


def with_arg_keys(loaded: LoadedSheet, sync: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with each `key` in its command-line form (`arg_key`)."""
    return [{**r, "key": arg_key(loaded, sync, r.get("key"))} if "key" in r else r for r in rows]
