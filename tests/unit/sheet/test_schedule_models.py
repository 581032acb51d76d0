"""The sheet's schedule keys, loaded from YAML: `schedule`, `retry`, and the cron forms of
`changes.overlap` and `changes.deletes_every`; bad values are sheet errors with file:line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mapsync.sheet import loader, models
from tests.unit.sheet.test_loader import ENV, edit, line_of, problems, write

SCHEDULE = "    schedule: {every: 5m, start_within: 500ms, finish_within: 30}"
OVERLAP = "      overlap: {window: 24h, every: 1d}"


def load(tmp_path: Path, text: str) -> models.Sheet:
    return loader.load(write(tmp_path, text), env=ENV).sheet


def test_cron_follow_retry_and_cron_overlap_and_deletes_load(tmp_path: Path) -> None:
    text = edit(
        SCHEDULE,
        '    schedule: {cron: "*/5 7-19 * * 1-5", timezone: Europe/Berlin, finish_within: 10m}\n'
        '    retry: {cron: "0 * * * *", max_attempts: 3}',
    )
    text = text.replace(
        OVERLAP,
        '      overlap: {window: 26h, cron: "0 2 * * *", timezone: Europe/Berlin}\n'
        '      deletes_every: {cron: "0 3 * * 0"}',
    )
    sync = load(tmp_path, text).syncs["customers"]
    assert sync.schedule.cron == "*/5 7-19 * * 1-5" and sync.schedule.timezone == "Europe/Berlin"
    assert sync.schedule.every is None and not sync.schedule.follow
    assert sync.retry is not None and (sync.retry.cron, sync.retry.max_attempts) == ("0 * * * *", 3)
    changes = sync.changes
    assert isinstance(changes, models.WatermarkChanges)
    assert (changes.overlap.cron, changes.overlap.window) == ("0 2 * * *", dt.timedelta(hours=26))
    assert isinstance(changes.deletes_every, models.CronSlots) and changes.deletes_every.timezone is None
    assert changes.emits_deletes()


def test_defaults_follow_poll_and_durations_stay(tmp_path: Path) -> None:
    sheet = load(
        tmp_path, edit(SCHEDULE, "    schedule: {follow: true, poll: 250ms}\n    retry: {every: 30m}")
    )
    sync = sheet.syncs["customers"]
    assert sync.schedule.follow and sync.schedule.poll_interval() == dt.timedelta(milliseconds=250)
    assert sync.retry == models.RetryConfig(every=dt.timedelta(minutes=30), max_attempts=5)  # type: ignore[call-arg]
    orders = sheet.syncs["orders"]
    assert orders.schedule == models.ScheduleConfig() and orders.retry is None  # no schedule: still valid
    assert orders.schedule.poll_interval() == dt.timedelta(seconds=1)
    text = edit(OVERLAP, "      overlap: {window: 24h, every: 1d}\n      deletes_every: 1d")
    changes = load(tmp_path, text).syncs["customers"].changes
    assert isinstance(changes, models.WatermarkChanges) and changes.deletes_every == dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        pytest.param(
            SCHEDULE,
            '    schedule: {every: 5m, cron: "* * * * *"}',
            "syncs.customers.schedule",
            "give at most one of `every` / `cron`",
            id="every-and-cron",
        ),
        pytest.param(
            SCHEDULE,
            "    schedule: {every: 5m, follow: true}",
            "syncs.customers.schedule",
            "give at most one of `every` / `follow`",
            id="every-and-follow",
        ),
        pytest.param(
            SCHEDULE,
            '    schedule: {cron: "61 * * * *"}',
            "syncs.customers.schedule.cron",
            "'61 * * * *' is not a valid cron expression",
            id="bad-cron",
        ),
        pytest.param(
            SCHEDULE,
            '    schedule: {cron: "0 0 * *"}',
            "syncs.customers.schedule.cron",
            "cron expression '0 0 * *' has 4 field(s): write 5 (minute hour day month weekday) "
            "or 6 (second first)",
            id="cron-fields",
        ),
        pytest.param(
            SCHEDULE,
            '    schedule: {cron: "0 0 30 2 *"}',
            "syncs.customers.schedule.cron",
            "cron expression '0 0 30 2 *' never fires",
            id="cron-never",
        ),
        pytest.param(
            SCHEDULE,
            '    schedule: {cron: "0 2 * * *", timezone: Europe/Berlinn}',
            "syncs.customers.schedule.timezone",
            "timezone 'Europe/Berlinn' is not an IANA time zone (e.g. Europe/Berlin, UTC)",
            id="bad-zone",
        ),
        pytest.param(
            SCHEDULE,
            "    schedule: {every: 5m, timezone: Europe/Berlin}",
            "syncs.customers.schedule",
            "`timezone` goes with `cron` (an `every` interval has no time zone)",
            id="zone-without-cron",
        ),
        pytest.param(
            SCHEDULE,
            "    schedule: {every: 5m, poll: 2s}",
            "syncs.customers.schedule",
            "`poll` goes with `follow: true`",
            id="poll-without-follow",
        ),
        pytest.param(
            SCHEDULE,
            "    schedule: {every: 0s}",
            "syncs.customers.schedule.every",
            "must be longer than zero",
            id="every-zero",
        ),
        pytest.param(
            SCHEDULE,
            f"{SCHEDULE}\n    retry: {{max_attempts: 3}}",
            "syncs.customers.retry",
            "give one of `every` / `cron`",
            id="retry-needs-timing",
        ),
        pytest.param(
            SCHEDULE,
            f"{SCHEDULE}\n    retry: {{every: 30m, max_attempts: 0}}",
            "syncs.customers.retry.max_attempts",
            "Input should be greater than or equal to 1 (got 0)",
            id="retry-attempts",
        ),
        pytest.param(
            OVERLAP,
            '      overlap: {every: 1d, cron: "0 2 * * *"}',
            "syncs.customers.changes.overlap",
            "give at most one of `every` / `cron`",
            id="overlap-both",
        ),
        pytest.param(
            OVERLAP,
            f'{OVERLAP}\n      deletes_every: {{cron: "0 25 * * *"}}',
            "syncs.customers.changes.deletes_every.cron",
            "'0 25 * * *' is not a valid cron expression",
            id="deletes-cron",
        ),
        pytest.param(
            OVERLAP,
            f"{OVERLAP}\n      deletes_every: 1x",
            "syncs.customers.changes.deletes_every",
            "'1x' is not a duration (write e.g. 5s, 10m, 24h, 1h30m)",
            id="deletes-duration",
        ),
    ],
)
def test_bad_schedules_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, path: str, message: str
) -> None:
    text = edit(old, new)
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    line, rest = found[0].split(": ", 1)
    assert rest == f"{path}: {message}", found
    assert int(line) in {line_of(text, row.strip()) for row in new.splitlines()}
