"""Delivering one batch to a destination, whatever the destination is.

`deliver` collapses a batch to the last change per destination key (so a key changed twice, or
deleted and re-inserted, ends as the source ended), writes it in one call, and when the
destination refuses that call because of some record in it (`Refused`), splits the call in
halves until the record(s) at fault stand alone. One bad record costs about 2·log2(n) extra
calls and never blocks the rest. Any other exception (TransientError, PermanentError) is
systemic and propagates: the run stops and keeps its cursor.

Inside `whole()` (the engine enters it while the destination's breaker is open, see
mapsync.breaker) a refused call is not split: every record of it is rejected with the call's
error, so an API that refuses everything costs one call per write call, not 2·n.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

from mapsync import records


class Refused(Exception):
    """The destination refused a whole call because of one or more records in it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# One destination call: write these records as one unit (all or nothing) or raise `Refused`.
# It may return rejections of single records that the destination turned down individually
# (APIs with per-record results); every other record of the call counts as delivered.
WriteCall = Callable[[list[records.Mapped], bool], Sequence[records.Rejection] | None]


# per thread (each daemon thread runs its own engine): refused calls are not bisected
_whole: contextvars.ContextVar[bool] = contextvars.ContextVar("mapsync_delivery_whole", default=False)


@contextlib.contextmanager
def whole(on: bool = True) -> Iterator[None]:
    """Within: a refused call is not split to find the records at fault (`on=False`: as usual)."""
    token = _whole.set(on)
    try:
        yield
    finally:
        _whole.reset(token)


def splitting() -> bool:
    """Whether a refused call is bisected now (False inside `whole()`)."""
    return not _whole.get()


def refused_all(recs: Sequence[records.Mapped], reason: str) -> list[records.Rejection]:
    """Every record of a refused call, rejected with the call's error: the record itself when it
    stood alone, else the whole call (not split: the breaker is open)."""
    if len(recs) == 1:
        message = f"destination refused the record: {reason}"
    else:
        whole = f"the call of {len(recs)} records (not split: delivery.breaker)"
        message = f"destination refused {whole}: {reason}"
    return [records.Rejection(r.key, message, None, "destination", r.version) for r in recs]


def delivered(rec: records.Mapped) -> records.Delivered:
    """The confirmation of one record, its destination key as the destination id."""
    return records.Delivered(rec.key, rec.version, rec.hash, records.key_text(rec.dest_key), rec.op)


def deliver(batch: Sequence[records.Mapped], call: WriteCall, *, fresh: bool = False) -> records.WriteResult:
    """Write `batch` through `call`, isolating refused records; per-record outcome."""
    latest: dict[records.Key, records.Mapped] = {}
    for rec in batch:
        latest.pop(rec.dest_key, None)
        latest[rec.dest_key] = rec
    todo = list(latest.values())
    superseded = [r for r in batch if latest.get(r.dest_key) is not r]
    result = isolate(todo, call, fresh) if todo else records.WriteResult()
    # earlier changes of a key in this batch are delivered by the write of its latest
    ok = {d.key for d in result.delivered}
    earlier = [delivered(r) for r in superseded if latest[r.dest_key].key in ok]
    result.delivered[:0] = earlier
    return result


def isolate(recs: list[records.Mapped], call: WriteCall, fresh: bool = False) -> records.WriteResult:
    """One call for `recs`; if it is refused, bisect until each refused record stands alone.

    `fresh` (a seed into an empty destination) holds for the first call only: a refused call
    may have left nothing behind, but the halves are written the ordinary way.
    """
    try:
        turned_down = list(call(recs, fresh) or ())
    except Refused as exc:
        if len(recs) == 1 or not splitting():
            return records.WriteResult(rejected=refused_all(recs, exc.reason))
        mid = len(recs) // 2
        left, right = isolate(recs[:mid], call), isolate(recs[mid:], call)
        return records.WriteResult(left.delivered + right.delivered, left.rejected + right.rejected)
    refused = {r.key for r in turned_down}
    return records.WriteResult([delivered(r) for r in recs if r.key not in refused], turned_down)
