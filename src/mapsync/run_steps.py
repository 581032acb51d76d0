"""Steps of one run that need nothing of the engine but their arguments: which kind of run a
request becomes, how a mapped batch sorts against the key ledger, and how a batch's tallies add
up into the run report."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync import errors, records, transforms
from mapsync.run_types import RunReport
from mapsync.sheet import models
from mapsync.sql_time import parse_time
from mapsync.state.store import Counts, LedgerEntry


def effective_kind(sheet: models.Sheet, name: str, kind: str, cursors: dict[str, Any], again: bool) -> str:
    """`seed`, `run` or `overlap` (a `run` whose `changes.overlap.every` is due); refuses a second
    seed without `again` and any run before the seed has finished."""
    seed = cursors.get("seed") or {}
    if kind == "seed":
        if seed.get("status") == "done" and not again:
            raise errors.UsageError(
                f"sync {name} was seeded at {seed.get('at')}: use `mapsync seed --again` to re-read "
                "every row (unchanged rows are skipped), or `mapsync run` for changes"
            )
        return kind
    if seed.get("status") != "done":
        state = (
            "has an unfinished seed: rerun `mapsync seed` to resume it"
            if seed
            else "has not been seeded: run `mapsync seed` first"
        )
        raise errors.StateError(f"sync {name} {state}", reason="unseeded")
    changes = sheet.syncs[name].changes
    every = getattr(getattr(changes, "overlap", None), "every", None)
    if kind == "run" and every is not None:
        last = cursors.get("overlap_at")
        if last is None or parse_time(last) + every <= dt.datetime.now(dt.UTC):
            return "overlap"
    return kind


def against_ledger(
    kind: str,
    mapped: list[records.Mapped],
    ledger: dict[Any, LedgerEntry],
    low: Any,
    zone: dt.tzinfo | None,
    counts: Counts,
) -> tuple[list[records.Mapped], list[records.Delivered]]:
    """What to send (new or changed since the ledger's entry) and what was only seen again (same
    content under a newer version: the ledger moves, the destination is not written). An
    overlap run counts the rows the incremental runs had missed."""
    send: list[records.Mapped] = []
    seen: list[records.Delivered] = []
    for m in mapped:
        entry = ledger.get(m.key)
        if kind == "overlap" and missed(entry, m, low, zone):
            counts.missed += 1
        if entry is not None and entry.hash == m.hash and not entry.deleted and m.op == "upsert":
            counts.skipped += 1
            if not same_version(entry.version, m.version):
                seen.append(records.Delivered(m.key, m.version, m.hash, entry.dest_id))
            continue
        send.append(m)
    return send, seen


def add_tallies(report: RunReport, tally: transforms.Tally) -> None:
    """Add one batch's per-field translation counts to the run's."""
    for target, source in (
        (report.truncated, tally.truncated),
        (report.defaulted, tally.defaulted),
        (report.kept, tally.kept),
        (report.corrected, tally.corrected),
        (report.dst_ambiguous, tally.dst_ambiguous),
        (report.expired, tally.expired),
    ):
        for field, n in source.items():
            target[field] = target.get(field, 0) + n


def same_version(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:
        return parse_time(a) == parse_time(b)
    except (errors.MapsyncError, TypeError, ValueError):
        return False


def missed(entry: LedgerEntry | None, m: records.Mapped, low: Any, zone: dt.tzinfo | None = None) -> bool:
    """A row the incremental runs had passed (older than the watermark) but never delivered.
    Naive times are in `zone` (the capture's), so mixed stored forms still compare."""
    if entry is not None and same_version(entry.version, m.version):
        return False
    if low is None or m.version is None:
        return entry is None
    try:
        return parse_time(m.version, zone) < parse_time(low, zone)
    except (errors.MapsyncError, TypeError, ValueError):
        return entry is None
