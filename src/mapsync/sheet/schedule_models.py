"""When things happen: a sync's `schedule`, its automatic `retry` of record errors, and the cron
forms of `changes.overlap` / `changes.deletes_every`. The arithmetic lives in `mapsync.schedules`;
these models only check what the sheet says (a bad cron expression or time zone is a sheet error
with its line)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Any

from croniter import CroniterBadDateError, croniter
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from mapsync.sheet.base import Model
from mapsync.sheet.duration import Duration

DEFAULT_POLL = dt.timedelta(seconds=1)

_CRON_TEXT = (
    "Cron expression, read as wall-clock time in `timezone`: 5 fields (`minute hour day month "
    "weekday`, e.g. `*/5 * * * *`) or 6 with seconds first (`second minute hour day month "
    "weekday`, e.g. `30 */5 * * * *`)."
)
_ZONE_TEXT = "IANA time zone of `cron` (e.g. `Europe/Berlin`); only with `cron`. Default: UTC."


def check_cron(expr: str) -> str:
    """A 5- or 6-field (seconds first) expression croniter accepts and that ever fires."""
    text = " ".join(expr.split())
    if len(text.split(" ")) not in (5, 6):
        raise ValueError(
            f"cron expression {expr!r} has {len(text.split())} field(s): write 5 "
            "(minute hour day month weekday) or 6 (second first)"
        )
    seconds = len(text.split(" ")) == 6
    if not croniter.is_valid(text, second_at_beginning=seconds):
        raise ValueError(f"{expr!r} is not a valid cron expression")
    try:
        start = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        croniter(text, start, second_at_beginning=seconds).get_next(dt.datetime)
    except (CroniterBadDateError, ValueError):
        raise ValueError(f"cron expression {expr!r} never fires") from None
    return text


def check_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)") from None
    return name


def _positive(value: dt.timedelta | None) -> dt.timedelta | None:
    if value is not None and value <= dt.timedelta(0):
        raise ValueError("must be longer than zero")
    return value


def _opt_cron(value: str | None) -> str | None:
    return None if value is None else check_cron(value)


def _opt_zone(value: str | None) -> str | None:
    return None if value is None else check_zone(value)


class _Timed(Model):
    """Shared checks of `every` / `cron` / `timezone` (the fields themselves are per model)."""

    _cron = field_validator("cron", check_fields=False)(_opt_cron)
    _zone = field_validator("timezone", check_fields=False)(_opt_zone)

    def _one_timing(self, others: tuple[str, ...] = (), required: bool = False) -> None:
        given = [k for k in ("every", "cron", *others) if getattr(self, k, None) not in (None, False)]
        if len(given) > 1:
            raise ValueError(f"give at most one of {' / '.join(f'`{k}`' for k in given)}")
        if getattr(self, "timezone", None) is not None and getattr(self, "cron", None) is None:
            raise ValueError("`timezone` goes with `cron` (an `every` interval has no time zone)")
        if required and not given:
            raise ValueError(f"give one of {' / '.join(f'`{k}`' for k in ('every', 'cron', *others))}")


class ScheduleConfig(_Timed):
    """When a sync runs under `mapsync daemon SHEET` (the daemon is what acts on schedules; see
    [operations.md](operations.md)), and how late or long is too late or too long. Give at most one of
    `every`, `cron` or `follow`; without any, the sync runs only when started by hand (`mapsync run`) or
    by an outside scheduler, and the daemon has nothing to run for it. `every: D` slots are multiples of D
    counted from the Unix epoch in UTC (`every: 1h` fires at each full UTC hour, `every: 5m` at :00, :05,
    …; an interval that does not divide a day, such as `7m`, drifts against the clock hours), so every
    process and every restart agree on the slots. `cron` slots are wall-clock times in `timezone`, across
    daylight-saving changes: a time that does not exist on the spring-forward day (02:30 in Europe/Berlin)
    fires once, at the end of the gap (03:00 local); a time that exists twice on the fall-back day fires
    once, at its first occurrence, unless the hour field is `*`: then it fires in both repeated hours (`0
    * * * *` fires 25 times that day, at each real hour). `follow` runs pass after pass (queue, log and
    inbox syncs; any method may)."""

    every: Duration | None = Field(
        None, description="Run interval (e.g. `5m`), in slots counted from the Unix epoch in UTC."
    )
    cron: str | None = Field(None, description=_CRON_TEXT)
    timezone: str | None = Field(None, description=_ZONE_TEXT)
    follow: bool = Field(
        False,
        description=(
            "Run continuously: the next pass starts as soon as the last one ends, waiting at most "
            "`poll` when it found nothing (queue, log and inbox syncs; allowed for any method)."
        ),
    )
    poll: Duration | None = Field(
        None,
        description="With `follow` only: the longest wait between passes that found nothing. Default `1s`.",
    )
    start_within: Duration | None = Field(
        None, description="A run starting later than this after its time is late."
    )
    finish_within: Duration | None = Field(
        None, description="A run taking longer than this overran its window."
    )

    _more_than_zero = field_validator("every", "poll")(_positive)

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleConfig:
        self._one_timing(("follow",))
        if self.poll is not None and not self.follow:
            raise ValueError("`poll` goes with `follow: true`")
        return self

    def poll_interval(self) -> dt.timedelta:
        """The longest wait between `follow` passes (`poll`, default 1 s)."""
        return self.poll or DEFAULT_POLL


class RetryConfig(_Timed):
    """Automatic retry of a sync's record errors by `mapsync daemon` (what `mapsync retry` does by
    hand), on an `every` interval (epoch-anchored, like `schedule.every`) or a `cron` expression.
    A record is tried at most `max_attempts` times in all; then it stays for `mapsync retry`."""

    every: Duration | None = Field(
        None, description="Retry interval (e.g. `30m`), in slots counted from the Unix epoch in UTC."
    )
    cron: str | None = Field(None, description=_CRON_TEXT)
    timezone: str | None = Field(None, description=_ZONE_TEXT)
    max_attempts: int = Field(
        5, ge=1, description="How many times a failed record is tried in all before retries stop."
    )

    _more_than_zero = field_validator("every")(_positive)

    @model_validator(mode="after")
    def _one_of(self) -> RetryConfig:
        self._one_timing(required=True)
        return self


class OverlapConfig(_Timed):
    """The insurance re-read of a recent window (also `mapsync run --overlap`), due when the last
    one is older than `every`, or when a `cron` slot has passed since it."""

    window: Duration = Field(dt.timedelta(hours=24), description="How far back the re-read goes.")
    every: Duration | None = Field(
        None,
        description=(
            "Run the overlap re-read automatically when the last one is older than this "
            "(e.g. `1d`); without it or `cron`, only `mapsync run --overlap` does."
        ),
    )
    cron: str | None = Field(
        None,
        description=(
            "Instead of `every`: run the re-read at the first run after each slot of this cron "
            "expression (e.g. `0 2 * * *`), wall-clock time in `timezone`."
        ),
    )
    timezone: str | None = Field(None, description=_ZONE_TEXT)

    @model_validator(mode="after")
    def _one_of(self) -> OverlapConfig:
        self._one_timing()
        return self


class CronSlots(_Timed):
    """The cron form of `deletes_every`: the key-set check for deleted rows runs at the first run
    after each slot of `cron`."""

    cron: str = Field(description=_CRON_TEXT)
    timezone: str | None = Field(None, description=_ZONE_TEXT)

    @model_validator(mode="after")
    def _one_of(self) -> CronSlots:
        self._one_timing()
        return self


def _duration_or_cron(value: Any) -> str:
    return "cron" if isinstance(value, dict | CronSlots) else "duration"


# `deletes_every: 1d` or `deletes_every: {cron: …}`: a mapping is read as the cron form only, so
# a mistake in it is reported once (not also as "expected a duration")
DurationOrCron = Annotated[
    Annotated[Duration, Tag("duration")] | Annotated[CronSlots, Tag("cron")],
    Discriminator(_duration_or_cron),
]
