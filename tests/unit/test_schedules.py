"""Schedule arithmetic: epoch-anchored `every`, DST-correct `cron`, slots_between, due."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from mapsync import schedules
from mapsync.sheet import models

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
US = dt.timedelta(microseconds=1)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local_day(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """(just before local midnight, just before the next local midnight) in Berlin, as bounds."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=BERLIN)
    end = start + dt.timedelta(days=1)
    end = dt.datetime(end.year, end.month, end.day, tzinfo=BERLIN)
    return start - US, end - US


def wall(slots: list[dt.datetime]) -> list[str]:
    return [f"{s:%H:%M}Z={s.astimezone(BERLIN):%H:%M%z}" for s in slots]


# --------------------------------------------------------------------------- every


def test_every_is_anchored_at_the_epoch_whatever_the_start() -> None:
    s = schedules.Every(dt.timedelta(minutes=7))
    t = utc(2026, 1, 1, 12, 0, 0)
    slot = s.slot_at_or_before(t)
    assert (slot - schedules.EPOCH) % dt.timedelta(minutes=7) == dt.timedelta(0)
    assert slot <= t < slot + dt.timedelta(minutes=7)
    # two processes asking at different moments of the same slot agree
    assert s.slot_at_or_before(slot + dt.timedelta(minutes=3)) == s.slot_at_or_before(t) == slot
    assert s.next_after(slot) == slot + dt.timedelta(minutes=7)
    assert s.next_after(slot - US) == slot


def test_every_5m_and_1h_fall_on_round_utc_times_in_any_input_zone() -> None:
    five = schedules.Every(dt.timedelta(minutes=5))
    t = dt.datetime(2026, 6, 1, 14, 33, 20, tzinfo=BERLIN)  # 12:33:20 UTC
    assert five.slot_at_or_before(t) == utc(2026, 6, 1, 12, 30)
    assert five.next_after(t) == utc(2026, 6, 1, 12, 35)
    assert five.next_after(t).tzinfo == UTC
    hour = schedules.Every(dt.timedelta(hours=1))
    assert hour.slot_at_or_before(utc(2026, 6, 1, 12, 0)) == utc(2026, 6, 1, 12, 0)  # a slot is <= itself
    assert hour.describe() == "every 1h"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        schedules.Every(dt.timedelta(minutes=5)).next_after(dt.datetime(2026, 1, 1))  # noqa: DTZ001


# --------------------------------------------------------------------------- cron


def test_cron_in_utc_and_describe() -> None:
    s = schedules.Cron("*/5 * * * *")
    assert s.slot_at_or_before(utc(2026, 1, 1, 10, 7)) == utc(2026, 1, 1, 10, 5)
    assert s.slot_at_or_before(utc(2026, 1, 1, 10, 5)) == utc(2026, 1, 1, 10, 5)
    assert s.next_after(utc(2026, 1, 1, 10, 5)) == utc(2026, 1, 1, 10, 10)
    assert s.describe() == "cron */5 * * * * (UTC)"
    assert schedules.Cron("0 2 * * *", "Europe/Berlin").describe() == "cron 0 2 * * * (Europe/Berlin)"


def test_six_fields_put_seconds_first() -> None:
    s = schedules.Cron("30 */5 * * * *")
    assert s.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 30)
    assert s.next_after(utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 5, 30)


def test_cron_is_wall_clock_in_its_zone() -> None:
    s = schedules.Cron("0 9 * * *", "Europe/Berlin")
    assert s.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 8)  # CET, +1
    assert s.next_after(utc(2026, 7, 10)) == utc(2026, 7, 10, 7)  # CEST, +2


def test_daily_time_in_the_spring_forward_gap_fires_once_at_the_gap_end() -> None:
    s = schedules.Cron("30 2 * * *", "Europe/Berlin")
    slots = schedules.slots_between(s, utc(2026, 3, 27), utc(2026, 3, 31))
    assert wall(slots) == ["01:30Z=02:30+0100", "01:30Z=02:30+0100", "01:00Z=03:00+0200", "00:30Z=02:30+0200"]
    assert [x.day for x in slots] == [27, 28, 29, 30]


def test_daily_time_repeated_at_fall_back_fires_once_at_its_first_occurrence() -> None:
    s = schedules.Cron("30 2 * * *", "Europe/Berlin")
    slots = schedules.slots_between(s, utc(2026, 10, 24), utc(2026, 10, 27))
    assert slots == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # inside the repeated hour, after the first 2:30: the next one is the next day's
    assert s.slot_at_or_before(utc(2026, 10, 25, 1, 45)) == utc(2026, 10, 25, 0, 30)
    assert s.next_after(utc(2026, 10, 25, 1, 30)) == utc(2026, 10, 26, 1, 30)


def test_hourly_fires_at_each_real_hour_across_fall_back_and_spring_forward() -> None:
    s = schedules.Cron("0 * * * *", "Europe/Berlin")
    fall = schedules.slots_between(s, *local_day(dt.date(2026, 10, 25)))
    assert len(fall) == 25
    assert all(b - a == dt.timedelta(hours=1) for a, b in itertools.pairwise(fall))
    assert wall(fall[2:4]) == ["00:00Z=02:00+0200", "01:00Z=02:00+0100"]
    spring = schedules.slots_between(s, *local_day(dt.date(2026, 3, 29)))
    assert len(spring) == 23
    assert all(b - a == dt.timedelta(hours=1) for a, b in itertools.pairwise(spring))
    # backwards through the repeated hour, every real hour
    t = utc(2026, 10, 25, 1, 45)
    assert s.slot_at_or_before(t) == utc(2026, 10, 25, 1)
    assert s.slot_at_or_before(utc(2026, 10, 25, 0, 59)) == utc(2026, 10, 25, 0)


def test_quarter_hours_in_the_gap_collapse_into_one_slot() -> None:
    s = schedules.Cron("*/30 * * * *", "Europe/Berlin")
    slots = schedules.slots_between(s, utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 2))
    assert slots == [
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2),
    ]


# --------------------------------------------------------------------------- slots_between, of, due


def test_slots_between_is_half_open_and_limited() -> None:
    s = schedules.Every(dt.timedelta(minutes=5))
    got = schedules.slots_between(s, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 20))
    assert got == [utc(2026, 1, 1, 10, m) for m in (5, 10, 15, 20)]
    assert schedules.slots_between(s, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 4)) == []
    assert schedules.slots_between(s, utc(2026, 1, 1), utc(2026, 2, 1), limit=3) == [
        utc(2026, 1, 1, 0, m) for m in (5, 10, 15)
    ]


def test_of_reads_every_sheet_form() -> None:
    assert schedules.of(models.ScheduleConfig(every="5m")) == schedules.Every(dt.timedelta(minutes=5))  # type: ignore[arg-type]
    assert schedules.of(models.ScheduleConfig(cron="0 2 * * *", timezone="Europe/Berlin")) == schedules.Cron(
        "0 2 * * *", "Europe/Berlin"
    )
    assert schedules.of(models.ScheduleConfig(follow=True)) is None
    assert schedules.of(models.ScheduleConfig()) is None
    assert schedules.of(None) is None
    assert schedules.of(models.RetryConfig(cron="0 * * * *")) == schedules.Cron("0 * * * *")
    assert schedules.of(models.OverlapConfig()) is None
    assert schedules.of(models.OverlapConfig(every="1d")) == schedules.Every(dt.timedelta(days=1))  # type: ignore[arg-type]
    assert schedules.of(dt.timedelta(days=1)) == schedules.Every(dt.timedelta(days=1))
    assert schedules.of(models.CronSlots(cron="0 3 * * *")) == schedules.Cron("0 3 * * *")


def test_due_every_counts_from_the_last_time_cron_from_the_slots() -> None:
    every = schedules.Every(dt.timedelta(days=1))
    assert schedules.due(every, None, utc(2026, 1, 1))
    assert not schedules.due(every, utc(2026, 1, 1, 12), utc(2026, 1, 2, 11, 59))
    assert schedules.due(every, utc(2026, 1, 1, 12), utc(2026, 1, 2, 12))
    cron = schedules.Cron("0 2 * * *")
    assert not schedules.due(cron, utc(2026, 1, 1, 2, 5), utc(2026, 1, 2, 1, 59))
    assert schedules.due(cron, utc(2026, 1, 1, 2, 5), utc(2026, 1, 2, 2))
    assert not schedules.due(None, None, utc(2026, 1, 1))


def test_a_zero_duration_is_due_at_every_run_and_has_no_slots() -> None:
    zero = dt.timedelta(0)
    assert schedules.of(zero) is None
    assert schedules.due(zero, utc(2026, 1, 1), utc(2026, 1, 1))
    assert schedules.due(models.OverlapConfig(every=zero), utc(2026, 1, 1), utc(2026, 1, 1))  # type: ignore[call-arg]
    assert not schedules.due(models.OverlapConfig(), utc(2026, 1, 1), utc(2026, 1, 2))
    assert schedules.due(models.CronSlots(cron="0 3 * * *"), utc(2026, 1, 1, 2), utc(2026, 1, 1, 3))
    with pytest.raises(ValueError, match="longer than zero"):
        schedules.Every(zero)


def test_quarter_hours_through_fall_back_cover_real_time_both_ways() -> None:
    s = schedules.Cron("*/15 * * * *", "Europe/Berlin")
    slots = schedules.slots_between(s, utc(2026, 10, 24, 23), utc(2026, 10, 25, 2))
    assert slots == [utc(2026, 10, 24, 23) + dt.timedelta(minutes=15 * i) for i in range(1, 13)]
    assert all(s.slot_at_or_before(x) == x for x in slots)
    assert all(s.slot_at_or_before(x - US) == p for p, x in itertools.pairwise(slots))
