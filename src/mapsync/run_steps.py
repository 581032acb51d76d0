"""Steps of one run that need nothing of the engine but their arguments: which kind of run a
request becomes, how a batch is mapped, how a mapped batch sorts against the key ledger, and how
a batch's outcome adds up into the run report."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mapsync import collisions, errors, records, schedules, transforms
from mapsync import mapping as compile_
from mapsync.connectors import sqlite_text
from mapsync.run_types import RunReport
from mapsync.sheet import models
from mapsync.sql_time import parse_time
from mapsync.state.store import Counts, LedgerEntry


def effective_kind(
    sheet: models.Sheet,
    name: str,
    kind: str,
    cursors: dict[str, Any],
    again: bool,
    now: dt.datetime | None = None,
) -> str:
    """`seed`, `run` or `overlap` (a `run` whose `changes.overlap` is due: `every` has passed since
    the last overlap, or a `cron` slot has come since it); refuses a second seed without `again`
    and any run before the seed has finished. `now` defaults to the current time."""
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
    overlap = getattr(changes, "overlap", None)
    if kind == "run" and overlap is not None:
        last = cursors.get("overlap_at")
        if schedules.due(overlap, None if last is None else parse_time(last), now or dt.datetime.now(dt.UTC)):
            return "overlap"
    return kind


def map_batch(
    mapping: compile_.Mapping,
    batch: records.Batch,
    reads: collisions.ReadKeys | None,
    report: RunReport,
    counts: Counts,
) -> tuple[list[records.Mapped], list[records.Rejection], transforms.Tally]:
    """Map a batch: keys a read returned twice and undecodable rows are rejected first; a delete
    the policy ignores is counted in the report's `gone_at_source`, an unchanged row as skipped."""
    changes, rejected = collisions.duplicates(batch, reads)
    changes, undecodable = sqlite_text.reject(changes)
    rejected += undecodable
    ctx = mapping.prepare(changes)
    tally = transforms.Tally()
    mapped: list[records.Mapped] = []
    gone = report.gone_at_source  # keys deleted at the source: what their policy made of them
    for change in changes:
        out = mapping.apply(change, ctx, tally)
        if change.op == "delete":
            gone["found"] = gone.get("found", 0) + 1
            gone["ignored"] = gone.get("ignored", 0) + (out is None)
        if out is None:
            counts.skipped += change.op != "delete"  # an ignored delete is no unchanged row
        elif isinstance(out, records.Rejection):
            rejected.append(out)
        else:
            mapped.append(out)
    return mapped, rejected, tally


def against_ledger(
    kind: str,
    mapped: list[records.Mapped],
    ledger: dict[Any, LedgerEntry],
    low: Any,
    zone: dt.tzinfo | None,
    counts: Counts,
    forced: frozenset[str] = frozenset(),
) -> tuple[list[records.Mapped], list[records.Delivered]]:
    """What to send (new or changed since the ledger's entry, or forced: key texts written
    whatever the ledger holds) and what was only seen again (same content under a newer
    version: the ledger moves, the destination is not written). An overlap run counts the rows
    the incremental runs had missed."""
    send: list[records.Mapped] = []
    seen: list[records.Delivered] = []
    for m in mapped:
        entry = ledger.get(m.key)
        if kind == "overlap" and missed(entry, m, low, zone):
            counts.missed += 1
        if forced and records.key_text(m.key) in forced:
            send.append(m)
            continue
        if m.op == "upsert" and unchanged(entry, m.key, m.version, m.hash, counts, seen):
            continue
        send.append(m)
    return send, seen


def unchanged(
    entry: LedgerEntry | None,
    key: records.Key,
    version: Any,
    hash_: str,
    counts: Counts,
    seen: list[records.Delivered],
) -> bool:
    """Whether an upsert is skipped: the ledger holds its content, live. It is counted, and seen
    again under a newer version (the ledger's version moves, the destination is not written)."""
    if entry is None or entry.hash != hash_ or entry.deleted:
        return False
    counts.skipped += 1
    if not same_version(entry.version, version):
        seen.append(records.Delivered(key, version, hash_, entry.dest_id))
    return True


def count_outcome(
    counts: Counts,
    result: records.WriteResult,
    rejected: list[records.Rejection],
    tally: transforms.Tally,
    gone: dict[str, int],
) -> None:
    """A batch's counts once the destination answered (`gone`: the report's `gone_at_source`)."""
    # a record an export's `on_exists: skip` left alone in the destination was not written
    kept = sum(1 for d in result.delivered if d.note == records.KEPT)
    counts.written = sum(1 for d in result.delivered if d.op != "delete") - kept
    counts.skipped += kept
    if gone:  # a disabling delete is written as an update of the row (in `written` above)
        gone["disabled"] = gone.get("disabled", 0) + sum(1 for d in result.delivered if d.op == "update")
    counts.deleted = sum(1 for d in result.delivered if d.op == "delete")
    counts.rejected = len(rejected)
    counts.truncated = sum(tally.truncated.values())
    counts.defaulted = sum(tally.defaulted.values())  # (kept values are reported as `kept`)


def add_batch(
    report: RunReport, counts: Counts, tally: transforms.Tally, rejected: list[records.Rejection]
) -> None:
    """Add a committed batch's counts, tallies and first rejections to the run's report."""
    report.counts.add(counts)
    add_tallies(report, tally)
    report.samples.extend(rejected[: max(0, 20 - len(report.samples))])


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
