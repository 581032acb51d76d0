"""Watching with real processes (issue 15, "Tests (real services)"): `mapsync daemon` processes
on a state store, a destination cut and restored through the fault proxy, alerts to a real SMTP
server (aiosmtpd, STARTTLS with a throwaway CA, AUTH) and to a webhook receiver (HMAC-signed
bodies) on loopback: exactly one notice per incident and kind, a late start seen by `mapsync
monitor`, a run that rejects records raising the silent-error alert."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync.testing.fault_proxy import Proxy, proxied_url, target_of
from tests import helpers as h
from tests import watch_world as ww
from tests.alert_world import (  # noqa: F401  (fixtures)
    SmtpServer,
    WebhookReceiver,
    smtp_server,
    tls_ca,
    webhook_receiver,
)

HOOK_SECRET = "hmac-s3cret-of-the-hook"
SMTP_USER, SMTP_PASSWORD = "mapsync", "smtp-pa55-word"

FLAKY_SHEET = """
version: 1
state: {{url: "{state}", lease_ttl: 6s}}  # not 3 s: a loaded machine hit the deadline
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
monitors:
  disabled: [no_success]  # a destination down 10 s is `failed_run`'s; no_success would say it again
syncs:
  orders:
    from: {{connection: src, table: orders}}
    to: {{connection: dst, table: orders}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    schedule: {{every: 1s}}
alerts:
  channels:
    mail: {mail}
    hook:
      webhook: {{url: "${{HOOK_URL}}", secret: "${{HOOK_SECRET}}", timeout: 5s}}
  remind_every: 4s
"""


def _tables(src: str, dst: str, rows: int = 5) -> None:
    h.execute(
        src, "CREATE TABLE orders (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified TIMESTAMP(6))"
    )
    h.execute(dst, "CREATE TABLE orders (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    h.execute(
        src,
        "INSERT INTO orders SELECT g, 'o' || g, clock_timestamp() AT TIME ZONE 'UTC' "
        f"FROM generate_series(1, {rows}) g",
    )


def _alerts(tmp_path: Path, env: dict[str, str], *extra: str) -> list[dict[str, Any]]:
    done = h.mapsync("alerts", "sheet.yaml", "--json", *extra, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list)
    return rows


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.xdist_group("watch_process")  # two daemons' PostgreSQL sessions: on a worker of its own
def test_two_daemons_alert_a_destination_outage_exactly_once(
    pg_database: Callable[[], str],
    fault_proxy: Callable[[str, int], Proxy],
    smtp_server: Callable[..., SmtpServer],  # noqa: F811
    webhook_receiver: Callable[..., WebhookReceiver],  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dst, state = pg_database(), pg_database(), pg_database()
    _tables(src, dst)
    proxy = fault_proxy(*target_of(dst))
    cut = ww.Cut(proxy)
    smtp = smtp_server(tls="starttls", auth=(SMTP_USER, SMTP_PASSWORD))
    hook = webhook_receiver()
    mail = smtp.channel(username=SMTP_USER, password="${SMTP_PASSWORD}")
    (tmp_path / "sheet.yaml").write_text(
        FLAKY_SHEET.format(state=state, src=src, dst=proxied_url(dst, proxy), mail=json.dumps(mail))
    )
    env = {"HOOK_URL": hook.url("/hooks/T0KEN-in-the-path"), "HOOK_SECRET": HOOK_SECRET}
    env["SMTP_PASSWORD"] = SMTP_PASSWORD
    seeded = h.mapsync("seed", "sheet.yaml", cwd=tmp_path, env=env)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    def runs(where: str = "kind <> 'seed'") -> list[tuple[Any, ...]]:
        return h.query(state, f"SELECT id, status, failure_class FROM mapsync_runs WHERE {where} ORDER BY id")

    def detail() -> str:
        return (
            f"mails {ww.mails(smtp.messages)}\nhooks {[(b['kind'], b['monitor']) for b in ww.hooks(hook.requests)]}"
            f"\nruns {runs()[-8:]}\nA {a.stderr()[-3000:]}\nB {b.stderr()[-3000:]}"
        )

    def got(kind: str) -> bool:
        return [k for k, _ in ww.mails(smtp.messages)].count(kind) >= 1 and [
            x["kind"] for x in ww.hooks(hook.requests)
        ].count(kind) >= 1

    try:
        with ww.daemons() as start:
            a = start(tmp_path, "a", env)
            b = start(tmp_path, "b", env)
            ww.until(lambda: runs("status = 'success' AND kind <> 'seed'"), 20, "a first good run", detail)
            assert smtp.messages == [] and hook.requests == []  # all well: nothing said

            cut.cut()
            t_cut = time.monotonic()
            ww.until(lambda: got("opened"), 20, "the opening notices", detail)
            opened_after = time.monotonic() - t_cut
            open_rows = _alerts(tmp_path, env)
            assert [(r["monitor"], r["sync"], r["status"], r["failure_class"]) for r in open_rows] == [
                ("failed_run", "orders", "open", "destination")
            ], open_rows
            # a third watcher meanwhile (`mapsync monitor`: evaluates, raises, flushes the outbox)
            # finds the same incident open: it opens nothing and sends nothing twice
            watched = h.mapsync("monitor", "sheet.yaml", "--json", cwd=tmp_path, env=env)
            assert watched.returncode == 1, watched.stdout + watched.stderr
            report = json.loads(watched.stdout)
            assert report["opened"] == 0 and [i["id"] for i in report["syncs"]["orders"]] == [
                open_rows[0]["id"]
            ], report
            ww.until(lambda: got("reminder"), 15, "the reminders (remind_every 4s)", detail)
            reminded_at = time.monotonic()
            cut.restore()
            asked = h.mapsync("request", "sheet.yaml", "--sync", "orders", cwd=tmp_path, env=env)
            assert asked.returncode == 0, asked.stderr  # a run now rather than after the backoff
            ww.until(lambda: got("resolved"), 20, "the resolved notices", detail)
            resolved_after = time.monotonic() - t_cut
            resolving = time.monotonic() - reminded_at  # under remind_every, or a 2nd reminder is due
            time.sleep(1.5)  # a duplicate from the other daemon, or a second reminder, would come now
            assert a.proc.poll() is None and b.proc.poll() is None, detail()
            a_code, b_code = a.terminate(), b.terminate()
    finally:
        cut.close()
    assert (a_code, b_code) == (0, 0), detail()
    # both daemons were at work; between them (and the monitor's flush) each notice went once
    assert "daemon_started" in a.actions() and "daemon_started" in b.actions()
    assert a.actions().count("alert_sent") + b.actions().count("alert_sent") + report["sent"] == 6, detail()

    # exactly once per kind, on each channel, in order
    assert [k for k, _ in ww.mails(smtp.messages)] == ["opened", "reminder", "resolved"], detail()
    bodies = ww.hooks(hook.requests)
    assert [x["kind"] for x in bodies] == ["opened", "reminder", "resolved"], detail()
    subjects = [s for _, s in ww.mails(smtp.messages)]
    assert subjects[0].startswith("[mapsync] CRITICAL failed_run on orders"), subjects
    assert subjects[1].startswith("[mapsync] still open: CRITICAL failed_run on orders"), subjects
    assert subjects[2].startswith("[mapsync] resolved: CRITICAL failed_run on orders"), subjects
    for body in bodies:
        assert (body["monitor"], body["sync"], body["failure_class"]) == (
            "failed_run",
            "orders",
            "destination",
        )
        assert body["owner"] == "the destination system's owner"
        assert body["incident"] == open_rows[0]["id"]
    assert bodies[2]["resolved_at"] is not None and bodies[0]["resolved_at"] is None
    assert all(ww.signed_by(r, HOOK_SECRET) for r in hook.requests)
    assert not ww.signed_by(hook.requests[0], "another secret")  # the check itself can fail
    assert {r.path for r in hook.requests} == {"/hooks/T0KEN-in-the-path"}
    for text in [ww.mail_text(m) for m in smtp.messages] + [r.body.decode() for r in hook.requests]:
        for secret in (SMTP_PASSWORD, HOOK_SECRET, "T0KEN-in-the-path"):
            assert secret not in text
    assert smtp.refused_logins == []

    # the store's account agrees: one incident, resolved, each channel's last notice sent once
    rows = _alerts(tmp_path, env, "--all")
    assert [(r["id"], r["monitor"], r["status"]) for r in rows] == [
        (open_rows[0]["id"], "failed_run", "resolved")
    ]
    assert rows[0]["channels"] == {
        name: {
            "kind": "resolved",
            "status": "sent",
            "attempts": 1,
            "sent_at": rows[0]["channels"][name]["sent_at"],
            "next_at": None,
            "last_error": None,
        }
        for name in ("hook", "mail")
    }
    sent = h.query(
        state, "SELECT channel, kind, status, attempts FROM mapsync_notifications ORDER BY channel, id"
    )
    assert sent == [
        (channel, kind, "sent", 1)
        for channel in ("hook", "mail")
        for kind in ("opened", "reminder", "resolved")
    ], sent
    assert _alerts(tmp_path, env) == []  # nothing open
    # the failed runs that made it, and the run that cleared it
    statuses = [r[1] for r in runs()]
    last_failed = max(i for i, s in enumerate(statuses) if s == "failed")
    assert "success" in statuses[last_failed:], runs()  # (a run cut by the SIGTERM may end it: stopped)
    assert {r[2] for r in runs("status = 'failed'")} == {"destination"}
    print(f"opened {opened_after:.1f}s after the cut, resolved {resolved_after:.1f}s after it", end=" ")
    print(f"and {resolving:.1f}s after the reminder")
    assert dt.timedelta(seconds=opened_after) < dt.timedelta(seconds=10)


LITE_SHEET = """
version: 1
state: {{url: "sqlite:///state.db"}}
connections:
  erp: {{url: "sqlite:///erp.db"}}
  shop: {{url: "sqlite:///shop.db"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
{schedule}monitors:
  disabled: [no_success]  # a daemon stopped for seconds is late_start's business here
alerts:
  channels:
    hook: {{webhook: {{url: "${{HOOK_URL}}", format: json, timeout: 5s}}}}
"""


def _lite(tmp_path: Path, hook: WebhookReceiver, schedule: str = "") -> dict[str, str]:
    """SQLite source, destination (a CHECK refuses the name 'bad') and state; a webhook channel."""
    h.execute(f"sqlite:///{tmp_path / 'erp.db'}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    h.execute(
        f"sqlite:///{tmp_path / 'shop.db'}",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT CHECK (name <> 'bad'))",
    )
    h.execute(f"sqlite:///{tmp_path / 'erp.db'}", "INSERT INTO items VALUES (1, 'one'), (2, 'two')")
    (tmp_path / "sheet.yaml").write_text(LITE_SHEET.format(schedule=schedule))
    env = {"HOOK_URL": hook.url()}
    seeded = h.mapsync("seed", "sheet.yaml", cwd=tmp_path, env=env)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    return env


def _monitor(tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = h.mapsync("monitor", "sheet.yaml", "--json", cwd=tmp_path, env=env)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    parsed = json.loads(done.stdout)
    assert isinstance(parsed, dict)
    return done.returncode, parsed


def _stamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


@pytest.mark.slow
def test_a_missed_slot_is_a_late_start_until_a_daemon_runs_on_time(
    webhook_receiver: Callable[..., WebhookReceiver],  # noqa: F811
    tmp_path: Path,
) -> None:
    hook = webhook_receiver()
    env = _lite(tmp_path, hook, schedule="    schedule: {every: 2s, start_within: 1s}\n")
    state = f"sqlite:///{tmp_path / 'state.db'}"

    def scheduled(after: int = 0) -> list[tuple[Any, ...]]:
        return h.query(
            state,
            "SELECT id, scheduled_at, lateness_ms, status FROM mapsync_runs "
            f"WHERE slot = 'run' AND status = 'success' AND id > {after} ORDER BY id",
        )

    with ww.daemons() as start:
        first = start(tmp_path, "first", env)
        ww.until(scheduled, 15, "a scheduled run", first.stderr)
        assert first.terminate() == 0
        last = scheduled()[-1]
        # the next slot (2 s later) is late once start_within (1 s) has passed with no run
        due = _stamp(last[1]) + dt.timedelta(seconds=3.2)
        time.sleep(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds()))

        code, found = _monitor(tmp_path, env)
        assert code == 1, found
        late = found["syncs"]["items"]
        assert [i["monitor"] for i in late] == ["late_start"], found
        assert late[0]["severity"] == "warning" and late[0]["failure_class"] == "tool"
        assert late[0]["numbers"]["missed_slots"] >= 1 and "has not started" in late[0]["message"]
        assert found["opened"] == 1 and found["sent"] == 1, (found, _alerts(tmp_path, env, "--all"))
        bodies = ww.hooks(hook.requests)
        assert [(b["kind"], b["monitor"], b["sync"]) for b in bodies] == [("opened", "late_start", "items")]
        assert "mapsync workers" in bodies[0]["runbook"]

        second = start(tmp_path, "second", env)
        mark = int(last[0])

        def timely() -> bool:
            """A run since the restart that started within start_within, and its slot's start_within
            over (so `late_start` judges that slot, not an older one)."""
            rows = [r for r in scheduled(mark) if int(r[2] or 0) <= 1000]
            return bool(rows) and dt.datetime.now(dt.UTC) > _stamp(rows[-1][1]) + dt.timedelta(seconds=1.05)

        ww.until(timely, 15, "a timely run of the restarted daemon", second.stderr)
        # the daemon resolves it itself, right after its timely run (late_start is among the
        # monitors a run's end decides), and its alerts chore sends the resolved notice
        ww.until(
            lambda: [b["kind"] for b in ww.hooks(hook.requests)][-1:] == ["resolved"],
            15,
            "the daemon's resolved notice",
            second.stderr,
        )
        code, found = _monitor(tmp_path, env)
        assert second.terminate() == 0
    assert code == 0 and found["firing"] == 0 and found["resolved"] == 0, (
        found,
        _alerts(tmp_path, env, "--all"),
    )
    assert [(b["kind"], b["monitor"]) for b in ww.hooks(hook.requests)] == [
        ("opened", "late_start"),
        ("resolved", "late_start"),
    ]


@pytest.mark.slow
def test_a_run_that_rejects_records_but_succeeds_raises_the_silent_error_alert(
    webhook_receiver: Callable[..., WebhookReceiver],  # noqa: F811
    tmp_path: Path,
) -> None:
    hook = webhook_receiver()
    env = _lite(tmp_path, hook)
    h.execute(f"sqlite:///{tmp_path / 'erp.db'}", "INSERT INTO items VALUES (3, 'bad'), (4, 'four')")
    done = h.mapsync("run", "sheet.yaml", cwd=tmp_path, env=env)
    assert done.returncode != 2, done.stdout + done.stderr
    run = h.query(
        f"sqlite:///{tmp_path / 'state.db'}",
        "SELECT status, written, rejected FROM mapsync_runs WHERE kind = 'run' ORDER BY id DESC LIMIT 1",
    )
    assert run[0][0] != "failed" and run[0][1] >= 1 and run[0][2] == 1, run  # wrote some, refused one
    bodies = ww.hooks(hook.requests)
    assert [(b["kind"], b["monitor"], b["sync"]) for b in bodies] == [
        ("opened", "success_with_rejections", "items")
    ], bodies
    assert bodies[0]["numbers"]["rejected"] == 1 and bodies[0]["failure_class"] == "config"
    assert "mapsync errors" in bodies[0]["runbook"]
    assert "bad" not in json.dumps(bodies[0])  # a record's value only with include_values
    code, found = _monitor(tmp_path, env)
    assert code == 1 and [i["monitor"] for i in found["syncs"]["items"]] == ["success_with_rejections"], found
