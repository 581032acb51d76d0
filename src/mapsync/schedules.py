"""Schedule arithmetic: when the slots of an `every` interval or a `cron` expression fall.

Pure functions, no I/O. Times in and out are aware datetimes (any zone in, UTC out).

- `every: D`: slots are the multiples of D counted from the Unix epoch in UTC, so every process
  and every restart agree on them (the state store's unique (sync, slot, scheduled_at) of the
  daemon's runs rests on it).
- `cron`: slots are wall-clock times in the zone. croniter walks the local wall clock (naive
  times); each local time then becomes real instants: a time in a spring-forward gap fires once, at
  the end of the gap; a time that exists twice (fall-back) fires once at its first occurrence, and
  also at its second when the expression's hour field is `*` (so `0 * * * *` fires at each real
  hour, 25 times that day, and `30 2 * * *` once).
"""

from __future__ import annotations

import abc
import datetime as dt
import zoneinfo
from collections.abc import Iterator

from croniter import CroniterBadDateError, croniter

from mapsync.sheet import schedule_models as sm
from mapsync.sheet.duration import format_duration
from mapsync.sheet.reconcile_models import ReconcileSchedule

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
# how near a change of the zone's offset must be to reorder slots: no zone shifts by more
_REACH = dt.timedelta(hours=3)


class Schedule(abc.ABC):
    """The slots of a schedule: instants in UTC."""

    @abc.abstractmethod
    def slot_at_or_before(self, t: dt.datetime) -> dt.datetime | None:
        """The latest slot <= t (None if there is none)."""

    @abc.abstractmethod
    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first slot > t."""

    @abc.abstractmethod
    def describe(self) -> str:
        """`every 5m`, `cron */5 * * * * (Europe/Berlin)`."""


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"schedules need aware datetimes, got {t!r}")
    return t.astimezone(dt.UTC)


class Every(Schedule):
    """Multiples of `period` counted from the Unix epoch (UTC)."""

    def __init__(self, period: dt.timedelta) -> None:
        if period <= dt.timedelta(0):
            raise ValueError("an `every` period must be longer than zero")
        self.period = period

    def slot_at_or_before(self, t: dt.datetime) -> dt.datetime:
        since = _utc(t) - EPOCH
        return EPOCH + self.period * (since // self.period)

    def next_after(self, t: dt.datetime) -> dt.datetime:
        return self.slot_at_or_before(t) + self.period

    def describe(self) -> str:
        return f"every {format_duration(self.period)}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Every) and other.period == self.period

    def __hash__(self) -> int:
        return hash(self.period)


class Cron(Schedule):
    """Wall-clock slots of a 5-field (or 6-field, seconds first) cron expression in `zone`."""

    def __init__(self, expr: str, zone: str | None = None) -> None:
        self.expr = sm.check_cron(expr)
        self.zone_name = sm.check_zone(zone) if zone is not None else "UTC"
        self.zone = zoneinfo.ZoneInfo(self.zone_name)
        fields = self.expr.split(" ")
        self._seconds = len(fields) == 6
        # a repeated (fall-back) hour fires again only for expressions that run every hour
        self._every_hour = fields[2 if self._seconds else 1] == "*"

    def _local(self, t: dt.datetime) -> dt.datetime:
        """`t`'s wall-clock time in the zone, naive."""
        return _utc(t).astimezone(self.zone).replace(tzinfo=None)

    def _instants(self, local: dt.datetime) -> list[dt.datetime]:
        """The real instants (UTC) at which the local wall-clock time `local` fires."""
        first = local.replace(tzinfo=self.zone, fold=0).astimezone(dt.UTC)
        second = local.replace(tzinfo=self.zone, fold=1).astimezone(dt.UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) != local:
            return [self._gap_end(min(first, second), max(first, second))]
        if second != first and self._every_hour:
            return [first, second]
        return [first]

    def _gap_end(self, before: dt.datetime, after: dt.datetime) -> dt.datetime:
        """The instant the clock jumps (a spring-forward gap lies between `before` and `after`)."""
        lo, hi = int(before.timestamp()), int(after.timestamp())
        base, start = lo, self._local(before)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            elapsed = dt.timedelta(seconds=mid - base)
            jumped = self._local(dt.datetime.fromtimestamp(mid, dt.UTC)) - start > elapsed
            lo, hi = (lo, mid) if jumped else (mid, hi)
        return dt.datetime.fromtimestamp(hi, dt.UTC)

    def _walk(self, local: dt.datetime, forward: bool) -> Iterator[dt.datetime]:
        it = croniter(self.expr, local, second_at_beginning=self._seconds)
        try:
            while True:
                yield it.get_next(dt.datetime) if forward else it.get_prev(dt.datetime)
        except CroniterBadDateError:
            return

    def _reach(self, at: dt.datetime) -> dt.timedelta:
        """How far local wall-clock order and real order can disagree near `at`: the size of a
        change of the zone's offset within `_REACH` of it, none elsewhere (the search then stops
        at the first slot it finds)."""
        offsets = [(at + k * _REACH).astimezone(self.zone).utcoffset() or dt.timedelta(0) for k in (-1, 0, 1)]
        return max(offsets) - min(offsets)

    def next_after(self, t: dt.datetime) -> dt.datetime:
        t = _utc(t)
        best: dt.datetime | None = None
        stop: dt.datetime | None = None
        for local in self._walk(self._local(t) - self._reach(t), forward=True):
            if stop is not None and local > stop:
                break
            for instant in self._instants(local):
                if instant > t and (best is None or instant < best):
                    best = instant
                    stop = self._local(best) + self._reach(best)
        if best is None:  # pragma: no cover - check_cron refuses expressions that never fire
            raise ValueError(f"cron {self.expr} has no slot after {t:%Y-%m-%d %H:%M:%S} UTC")
        return best

    def slot_at_or_before(self, t: dt.datetime) -> dt.datetime | None:
        t = _utc(t)
        best: dt.datetime | None = None
        stop: dt.datetime | None = None
        # croniter's walk back starts below its start: begin just after `t`'s local time
        for local in self._walk(self._local(t) + self._reach(t) + _ONE_US, forward=False):
            if stop is not None and local < stop:
                break
            for instant in self._instants(local):
                if instant <= t and (best is None or instant > best):
                    best = instant
                    stop = self._local(best) - self._reach(best)
        return best

    def describe(self) -> str:
        return f"cron {self.expr} ({self.zone_name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and (other.expr, other.zone_name) == (self.expr, self.zone_name)

    def __hash__(self) -> int:
        return hash((self.expr, self.zone_name))


Timing = (
    sm.ScheduleConfig
    | sm.RetryConfig
    | sm.OverlapConfig
    | sm.CronSlots
    | ReconcileSchedule
    | dt.timedelta
    | None
)


def of(cfg: Timing) -> Schedule | None:
    """The schedule a sheet key gives: `schedule`, `retry`, `changes.overlap` or
    `changes.deletes_every` (a duration or its cron form). None for `follow` or nothing, and for
    a zero duration (`deletes_every: 0s`, `overlap.every: 0s`: due at every run, no slots)."""
    if cfg is None:
        return None
    every = cfg if isinstance(cfg, dt.timedelta) else getattr(cfg, "every", None)
    if every is not None:
        return Every(every) if every > dt.timedelta(0) else None
    cron: str | None = getattr(cfg, "cron", None)
    if cron is not None:
        return Cron(cron, getattr(cfg, "timezone", None))
    return None


def slots_between(
    s: Schedule, after: dt.datetime, until: dt.datetime, limit: int = 10_000
) -> list[dt.datetime]:
    """The slots in (after, until], oldest first, at most `limit` of them (the oldest)."""
    out: list[dt.datetime] = []
    t, end = _utc(after), _utc(until)
    while len(out) < limit:
        t = s.next_after(t)
        if t > end:
            break
        out.append(t)
    return out


def due(cfg: Timing | Schedule, last: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether a periodic job (overlap re-read, delete check) is due at `now`, `last` being when it
    last ran (None: never). For `every` (or a plain duration): when `last` is at least that old,
    so a zero duration is due at every run; for `cron`: when the latest slot at or before `now` is
    after `last`. Never when `cfg` gives neither."""
    every: dt.timedelta | None
    if isinstance(cfg, Every):
        every = cfg.period
    elif isinstance(cfg, dt.timedelta):
        every = cfg
    elif isinstance(cfg, Schedule):
        every = None
    else:
        every = getattr(cfg, "every", None)
    schedule = None if every is not None else cfg if isinstance(cfg, Schedule) else of(cfg)
    if every is None and schedule is None:
        return False
    if last is None:
        return True
    if every is not None:
        return _utc(last) + every <= _utc(now)
    assert schedule is not None
    slot = schedule.slot_at_or_before(now)
    return slot is not None and slot > _utc(last)
