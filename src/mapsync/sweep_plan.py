"""`mapsync sweep`: a run of kind `sweep` that finds orders an API's export marked exported but
mapsync never received (a destructive GET whose answer was lost, an order taken by another
client), and resets them or reports them (`changes.sweep`, issue 17).

Under the sync's lease:

1. Pages stored in the inbox but not split yet are split (their orders are received), and the
   waiting `lost:` markers (left by a destructive GET that failed) are noted.
2. The plan line: how many calls the sweep takes at most: reads ≈ ceil(n/50) + 1, n = orders the
   key ledger holds (an upper bound of those delivered in the window), capped by `max_calls`, plus
   one reset call per 10 lost orders; and what the connection's budget has left.
3. CIMcloud's Orders resource is read by searchstring (`capture/export_sweep.py`) for orders with
   `flag = done` created since `max(now - window, the export's start)`: orders exported before
   mapsync started are someone else's. A page at a time, 50 per page, until a short page or the
   cap (calls for the resets of what was found are kept back within `max_calls`).
4. An order in neither the key ledger nor the inbox is lost. `on_lost: reset`: an open record
   error first (listed should the run end before it is sent), `exported = 0` through the
   capture's writer, then the same run reads the export (drain, GET until short) and delivers
   it; its record error is resolved on delivery. `on_lost: alert`: an open record error saying
   so (the monitors alert on it); nothing changes at the API.
5. A sweep that read its whole window marks the `lost:` markers seen in step 1 processed; one
   stopped at the cap leaves them, and says so.

The daemon runs a sweep when `sweep.every` passed since the last one, and when a `lost:` marker
is newer than the last sweep (`sweep_due`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from mapsync import errors, records
from mapsync.capture.export_base import CURSOR, LOST, ExportBase
from mapsync.records import RunKind
from mapsync.run_scope import RunScope
from mapsync.run_types import Parts
from mapsync.state.clock import stamp, utcnow
from mapsync.state.ports import Store
from mapsync.state.store import Counts

if TYPE_CHECKING:
    from mapsync.capture.export_inbox import InboxExportCapture

log = logging.getLogger("mapsync.sweep")

RESET = (
    "lost: marked exported at the API on {created}, never received; reset by a sweep and not "
    "delivered yet (the run ended first): `mapsync reexport SHEET --sync {sync} {key}` sends it"
)
ALERT = (
    "lost: marked exported at CIMcloud on {created}, never received; "
    "`mapsync reexport SHEET --sync {sync} {key}` sends it"
)


def due(store: Store, name: str, parts: Parts) -> str | None:
    """Why the daemon sweeps an export from an API before its next run: `lost` (a `lost:` marker
    newer than the last sweep that ended), `schedule` (`sweep.every` passed since it), or None.
    A failed sweep does not count as one: a marker keeps asking until a sweep ends."""
    if not parts.capture.capabilities.destructive_read:
        return None
    capture = cast("InboxExportCapture", parts.capture)
    runs = store.history.runs(name, 200, without=("running", "failed", "skipped"))
    last = next((str(r["started_at"]) for r in runs if r["kind"] == RunKind.SWEEP), None)
    # the newest open marker: a later GET's own marker (closed with its page) hides nothing
    marker = store.inbox.latest(name, [LOST], status="new").get(LOST)
    if marker is not None and (last is None or marker[0].received_at > last):
        return "lost"
    every = capture.cfg.sweep.every if capture.cfg.sweep is not None else None
    if every is not None and (last is None or last < stamp(utcnow() - every)):
        return "schedule"
    return None


def window_start(window: dt.timedelta, cursors: dict[str, Any]) -> dt.datetime:
    """Where a sweep's window starts: `window` back from now, never before the export started."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    start = now - window
    began = (cursors.get(CURSOR) or {}).get("since")
    if began:
        start = max(start, dt.datetime.fromisoformat(str(began)).replace(tzinfo=None))
    return start.replace(microsecond=0)


def estimate(since: dt.datetime, held: int, page: int, cap: int) -> str:
    """What a sweep says it will take before it starts (the reads by the key ledger's size, an
    upper bound of the orders delivered in the window)."""
    reads = min(_ceil(held, page) + 1, cap)
    return (
        f"sweep plan: orders marked exported since {since:%Y-%m-%d %H:%M:%S} UTC; about {reads} "
        f"read call(s) ({held} order(s) in the key ledger, {page} per read) "
        f"+ 1 reset call per 10 lost orders, at most {cap} call(s)"
    )


def _ceil(n: int, size: int) -> int:
    return -(-n // size)


class SweepPlan:
    """sweep: the lost orders of an export from an API."""

    purge = False

    def __init__(self, store: Store, name: str, parts: Parts) -> None:
        # the export from an API declares its destructive read (a capability: its class, and the
        # HTTP client it brings, stay unloaded until a sync uses it)
        if not parts.capture.capabilities.destructive_read:
            what = "reads a SQL table" if isinstance(parts.capture, ExportBase) else "is no export"
            raise errors.UsageError(
                f"sync {name} {what}: `mapsync sweep` is for an export from an API whose GET marks "
                "what it returns (`changes: {method: export_flag}` on CIMcloud's OnlineOrders)"
            )
        self.store, self.name, self.parts = store, name, parts
        self.capture = cast("InboxExportCapture", parts.capture)
        self.reader = self.capture.sweeper()
        self.settings = self.reader.settings
        self.cursors: dict[str, Any] = {}
        self.markers: list[int] = []
        self.lost: list[tuple[str, str]] = []  # (key text, created)
        self.capped = False
        self.reset_calls = 0

    def decide(self, cursors: dict[str, Any]) -> RunKind:
        seed = cursors.get("seed") or {}
        if seed.get("status") != "done":
            raise errors.StateError(
                f"sync {self.name} has not been seeded: run `mapsync seed` first", reason="unseeded"
            )
        self.cursors = cursors
        return RunKind.SWEEP

    def since(self) -> dt.datetime:
        return window_start(self.settings.window, self.cursors)

    def start(self, scope: RunScope) -> tuple[Iterable[records.Batch], int | None]:
        report, cap = scope.report, self.settings.max_calls
        self.markers = self.capture.sweep_prepare()
        since = self.since()
        held = self.store.ledger_count(self.name)
        reads = min(_ceil(held, self.reader.page_size) + 1, cap)
        report.notes.append(
            f"{estimate(since, held, self.reader.page_size, cap)}; budget left: {self.reader.budget_left()}"
        )
        log.info("sweep_planned", extra={"action": "sweep_planned", "sync": self.name, "reads": reads})
        seen = self._read(since, cap)
        read_calls = self.reader.calls
        lost_keys = [(k,) for k, _ in self.lost]
        stop = (
            f"stopped at the cap (max_calls {cap}) after {read_calls} read(s), {seen} order(s): the "
            "rest of the window is read by the next sweep; "
            if self.capped
            else ""
        )
        report.notes.append(
            f"sweep read: {stop}{read_calls} read call(s), {seen} order(s) marked exported, "
            f"{len(self.lost)} lost"
        )
        if not self.lost:
            return iter(()), 0
        if self.settings.on_lost == "alert":
            self._errors(scope, ALERT, count=True)
            return iter(()), 0
        room = (cap - self.reader.calls) * 10  # orders the calls left within the cap can reset
        if len(self.lost) > room:
            self.capped = True
            report.notes.append(
                f"sweep: {len(self.lost) - room} lost order(s) left for the next sweep (max_calls {cap})"
            )
            del self.lost[room:]
        lost_keys = [(k,) for k, _ in self.lost]
        self._errors(scope, RESET, count=False)
        before = self.capture.writer.calls
        self.capture.reset(lost_keys)
        self.reset_calls = self.capture.writer.calls - before
        scope.forced = frozenset(records.key_text((k,)) for k, _ in self.lost)
        return self._batches(), None

    def _read(self, since: dt.datetime, cap: int) -> int:
        """Pages of the window until a short one or the cap; the lost ones noted; orders seen."""
        seen, page, size = 0, 1, self.reader.page_size
        reset = self.settings.on_lost == "reset"
        while True:
            kept_back = _ceil(len(self.lost), 10) if reset else 0
            if self.reader.calls + 1 + kept_back > cap:
                self.capped = True
                return seen
            rows = self.reader.read(since, page)
            seen += len(rows)
            texts = [records.key_text((k,)) for k, _ in rows]
            known = set(self.store.ledger_page(self.name, texts))
            known |= set(self.capture.source.stored([(k,) for k, _ in rows]))
            self.lost.extend((k, c) for (k, c), t in zip(rows, texts, strict=True) if t not in known)
            if len(rows) < size:
                return seen
            page += 1

    def _errors(self, scope: RunScope, text: str, *, count: bool) -> None:
        """An open record error for each lost order (unless it has one)."""
        have = self.store.open_error_versions(self.name)
        new = [
            records.Rejection((k,), text.format(created=c or "?", sync=self.name, key=k), None, "sweep")
            for k, c in self.lost
            if records.key_text((k,)) not in have
        ]
        if count:
            scope.report.counts.rejected += len(new)
            scope.report.samples.extend(new)
        if new:
            self.store.commit(
                sync=self.name,
                token=scope.lease.token,
                run_id=scope.run_id,
                delivered=[],
                rejected=new,
                cursors={},
                counts=Counts(rejected=len(new)) if count else Counts(),
                lease_ttl=scope.lease.ttl,
            )
        if count:
            already = len(self.lost) - len(new)
            note = f" ({already} alerted before)" if already else ""
            scope.report.notes.append(f"sweep: {len(self.lost)} lost order(s) alerted{note}, none reset")

    def _batches(self) -> Iterator[records.Batch]:
        # the reset orders come back through the GET like new ones (and whatever else is pending)
        return self.capture.read("run", {})

    def end(self, scope: RunScope) -> None:
        texts = [records.key_text((k,)) for k, _ in self.lost]
        if self.settings.on_lost == "reset" and self.lost:
            delivered = len(self.store.ledger_page(self.name, texts))
            scope.report.notes.append(
                f"sweep: {len(self.lost)} lost order(s) reset in {self.reset_calls} call(s), "
                f"{delivered} delivered"
            )
        scope.report.notes.append(
            f"sweep calls: {self.reader.calls + self.reset_calls} of at most "
            f"{self.settings.max_calls} (reads {self.reader.calls}, resets {self.reset_calls})"
        )
        # the window cut at the export's start: a failed GET may have marked orders created
        # before it (the backlog of the first runs), which cannot be told from orders exported
        # before mapsync: said, for a person to check
        cut = self.since() > dt.datetime.now(dt.UTC).replace(tzinfo=None) - self.settings.window
        if self.markers and cut:
            scope.report.notes.append(
                f"sweep: orders created before the export's start ({self.since():%Y-%m-%d %H:%M:%S} UTC) "
                "are not looked at: a failed GET that took some of them cannot be told from orders "
                "exported before mapsync (check CIMcloud for such orders, then `mapsync reexport`)"
            )
        if self.markers and not self.capped:
            self.store.inbox.finish(self.markers, {})
            scope.report.notes.append(f"sweep: {len(self.markers)} `lost:` marker(s) settled")
        elif self.markers:
            scope.report.notes.append(
                f"sweep: {len(self.markers)} `lost:` marker(s) left (the window was not read to its end)"
            )
