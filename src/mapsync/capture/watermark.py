"""Watermark capture: a last-modified column read inclusively, deduped by the key ledger.

Between runs the read is `ts >= stored` (never `>`): rows at exactly the stored timestamp are
read again and the engine skips those the ledger holds unchanged, so a row that appears or
changes at that timestamp after a run is still delivered. Within a run, rows come in keyset
order `(ts, key…)` and the position after each batch is committed, so a crash resumes
mid-group. The upper bound is the *source's* clock minus `lag`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

from mapsync import errors, records, schedules
from mapsync.capture.base import CaptureBase, RunInput, read_batch, register
from mapsync.capture.snapshot import walk
from mapsync.connectors.sql_source import SqlSource
from mapsync.guard import Guard
from mapsync.ports import Capabilities
from mapsync.sheet import models
from mapsync.sql_time import later, parse_time
from mapsync.state.store import stamp

DELETE_PAGE = 5000  # keys per step of the key-set delete check
FUTURE_REPEAT = 3600.0  # seconds before an unchanged "rows in the future" warning repeats
log = logging.getLogger("mapsync.capture")
_future_warned: dict[tuple[str, str], tuple[int, float]] = {}  # (source, sync) -> (count, when) warned


@register("watermark")
class WatermarkCapture(CaptureBase):
    # deletes: with `deletes_every`, or the key-set check `mapsync run --deletes` asks for
    # (`RunInput.check_deletes`)
    capabilities = Capabilities(emits_deletes=True, deletes_on_request=True, columnar_read=True)

    def __init__(self, source: SqlSource, cfg: models.WatermarkChanges, batch: int, ctx: Any = None) -> None:
        self.source = source
        self.cfg = cfg
        self.batch = batch
        self.column = cfg.column
        self.zone: dt.tzinfo = source.db.zone(cfg.timezone)
        self.ctx = ctx
        self.begin()

    def begin(self) -> None:
        """Start of a run: the read's bounds and the delete check's mark are the run's own."""
        self._low: Any = None
        self._max: Any = None
        self._overlap = False
        self._checked = False

    @staticmethod
    def version_column(cfg: models.WatermarkChanges) -> str:
        return cfg.column

    @staticmethod
    def emits_deletes(cfg: models.WatermarkChanges) -> bool:
        """Only with `deletes_every`: the periodic key-set check finds deleted rows."""
        return cfg.deletes_every is not None

    def upper(self, sample: Any = None) -> Any:
        return self.source.ts_bound(
            self.source.db.now() - self.cfg.lag, self.zone, lower=False, sample=sample
        )

    def start_seed(self) -> dict[str, Any]:
        return {"watermark": self.upper()}

    def low(self) -> Any:
        return self._low

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        low = cursors.get("watermark")
        if low is None:
            raise errors.StateError(f"sync {self.source.sync} has no watermark: run `mapsync seed` first")
        self._low = low
        upper = self.upper(sample=low)
        sql = isinstance(self.source, SqlSource)
        col = self.source.ts_expr(self.zone) if sql else self.source.col(self.column)
        order: list[Any] = [col if sql else self.column, *self.source.key]
        after = None
        if mode == "overlap":
            self._overlap = True
            start = parse_time(upper) - (self._run().window or self.cfg.overlap.window)
            lower = self.source.ts_bound(start, self.zone, lower=True, sample=low)
        else:
            lower = self.source.ts_bound(low, self.zone, lower=True, sample=low)
            position = cursors.get("position")
            if position:
                after = list(position["after"])
                if sql:  # a position an older version stored as the raw text
                    after[0] = self.source.ts_value(after[0], self.zone)
                self._max = after[0]
        # the raw-text condition first: SQLite evaluates the terms of a scan in the order given,
        # and `mapsync_utc` for every row of the table before it would undo its point
        where = [*(self.source.ts_since(lower, self.zone) if sql else []), col >= lower, col <= upper]
        for rows in self.source.stream(order, where, after, self.batch):
            last = rows[-1]
            mark = self.source.ts_value(last[self.column], self.zone) if sql else last[self.column]
            self._max = later(self._max, mark, self.zone)
            position = {} if mode == "overlap" else {"position": {"after": [mark, *self.source.key_of(last)]}}
            # a `run`'s batch may travel as Arrow columns (run_columnar.py); an overlap's not
            yield read_batch(self.source, rows, self.column, position, columnar=mode == "run")
        if sql:
            self._warn_future(col)
        if self._deletes_due(cursors):  # after the read (an overlap re-read too)
            yield from self._delete_check()

    def _warn_future(self, col: Any) -> None:
        """Rows stamped after the source's clock are read only once that time has come: say so
        once per run, or a row dated 2099 would wait unseen (under `--follow`, whose every poll
        is a run, again only when their number changes or after FUTURE_REPEAT)."""
        assert isinstance(self.source, SqlSource)
        now = self.source.db.now()
        bound = self.source.ts_bound(now, self.zone, lower=False)
        ahead = self.source.count(where=[*self.source.ts_since(bound, self.zone), col > bound])
        memo = (self.source.db.safe_url, self.source.sync)
        last = _future_warned.get(memo)
        if not ahead:
            _future_warned.pop(memo, None)
        elif last is None or last[0] != ahead or time.monotonic() - last[1] >= FUTURE_REPEAT:
            _future_warned[memo] = (ahead, time.monotonic())
            log.warning(
                "sync %s: %d row(s) have `%s` later than the source's clock (%s UTC): they are "
                "read only once that time has passed",
                self.source.sync,
                ahead,
                self.column,
                f"{now:%Y-%m-%d %H:%M:%S}",
                extra={"action": "rows_in_future", "sync": self.source.sync, "count": ahead},
            )

    def _run(self) -> RunInput:
        """What the engine handed this run (nothing, without the engine's context)."""
        return self.ctx.run if self.ctx is not None else RunInput()

    def _deletes_due(self, cursors: dict[str, Any], now: dt.datetime | None = None) -> bool:
        """Asked for (`run --deletes`), or `deletes_every` is due: its duration has passed since
        the last check, or a slot of its `cron` has come since it."""
        if self._run().check_deletes:
            return True
        last = cursors.get("deletes_at")
        return schedules.due(
            self.cfg.deletes_every,
            None if last is None else parse_time(last),
            now or dt.datetime.now(dt.UTC),
        )

    def _delete_check(self) -> Iterator[records.Batch]:
        """The key-set check: ledger-live keys the source no longer has become deletes."""
        if self.ctx is None:
            raise errors.ConfigError(f"sync {self.source.sync}: the delete check needs the engine's context")
        guard = self.ctx.run.guard or Guard(self.ctx.sync, self.ctx.store, self.ctx.config.deletes)
        yield from walk(self.source, self.ctx, guard, DELETE_PAGE, self.batch, hashed=False, deletes=True)
        self._checked = True

    def finish(self) -> dict[str, Any]:
        out: dict[str, Any] = {"watermark": later(self._low, self._max, self.zone), "position": None}
        if self._checked:
            out["deletes_at"] = stamp()
        return out

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        return None
