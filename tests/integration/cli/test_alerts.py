"""`mapsync alerts SHEET [ack|silence ID]`: the open incidents (and the resolved ones with `--all`)
with the last notice per channel, as text and `--json`; ack and silence record who (user@host);
an unknown or resolved incident is a clear error, exit 1; no secret (the webhook URL) in any
output."""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync.alerts.sender import send_due
from mapsync.state.clock import utcnow
from tests.alert_world import (  # noqa: F401  (fixtures)
    FAILED,
    WebhookReceiver,
    alerts_sheet,
    load,
    open_store,
    raise_finding,
    tls_ca,
    webhook_receiver,
)
from tests.helpers import mapsync

TOKEN = "xoxT0kenC4n4ry9f8e7d6"


def test_list_ack_silence_and_errors(
    tmp_path: Path, request: pytest.FixtureRequest, canary: Callable[..., Any]
) -> None:
    receivers: Callable[..., WebhookReceiver] = request.getfixturevalue("webhook_receiver")
    receiver = receivers()
    url = receiver.url(f"/hooks/{TOKEN}")
    env = {"CHAT_URL": url}
    sheet = alerts_sheet(
        tmp_path, {"channels": {"chat": {"webhook": {"url": "${CHAT_URL}"}}, "log": {"log": {}}}}
    )
    loaded = load(sheet, env)
    store = open_store(loaded)
    try:
        failing = raise_finding(loaded, store)
        lag = raise_finding(loaded, store, dataclasses.replace(FAILED, monitor="lag", severity="warning"))
        gone = raise_finding(loaded, store, dataclasses.replace(FAILED, monitor="late_start"))
        receiver.answer(500)
        send_due(loaded, store, "t")
        store.incidents.clear_incident(gone.key)
    finally:
        store.close()
    c = canary(url)
    me = f"{getpass.getuser()}@{socket.gethostname()}"

    def run(*args: str) -> Any:
        done = mapsync("alerts", str(sheet), *args, cwd=tmp_path, env=env)
        c.process(" ".join(args), done)
        return done

    listed = run("--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["monitor"], r["status"]) for r in rows] == [
        (failing.id, "failed_run", "open"),
        (lag.id, "lag", "open"),
    ]
    first = rows[0]
    assert first["severity"] == "critical" and first["runbook"] == FAILED.runbook
    assert first["message"] == FAILED.message and first["acked_by"] is None
    assert first["channels"]["log"]["status"] == "sent"
    chat = first["channels"]["chat"]
    assert (chat["kind"], chat["status"], chat["attempts"]) == ("opened", "pending", 1)
    assert chat["last_error"] == "webhook answered HTTP 500" and chat["next_at"] is not None

    text = run()
    assert text.returncode == 0
    assert f"#{failing.id} OPEN critical failed_run on items: since " in text.stdout
    assert "chat: opened pending after 1 attempt(s): webhook answered HTTP 500 (next try " in text.stdout
    assert "late_start" not in text.stdout
    assert len(json.loads(run("--sync", "items", "--json").stdout)) == 2
    other_sync = run("--sync", "nope")
    assert other_sync.returncode == 2 and "unknown sync 'nope'" in other_sync.stderr
    every = run("--all", "--json")
    assert [r["monitor"] for r in json.loads(every.stdout)] == ["failed_run", "lag", "late_start"]
    assert json.loads(every.stdout)[2]["channels"]["chat"]["kind"] == "resolved"

    acked = run("ack", str(failing.id), "--json")
    assert acked.returncode == 0, acked.stderr
    assert json.loads(acked.stdout)["acked_by"] == me
    assert run("ack", str(failing.id)).stdout.strip() == f"acknowledged incident {failing.id} (by {me})"
    silenced = run("silence", str(lag.id), "--for", "2h", "--json")
    assert silenced.returncode == 0, silenced.stderr
    row = json.loads(silenced.stdout)
    until = dt.datetime.fromisoformat(row["silenced_until"])
    assert row["silenced_by"] == me and abs(until - utcnow() - dt.timedelta(hours=2)) < dt.timedelta(
        minutes=1
    )
    assert f", silenced until {row['silenced_until']} by {me}" in run().stdout

    unknown = run("ack", "999")
    assert (
        unknown.returncode == 1 and "no incident 999" in unknown.stderr and "Traceback" not in unknown.stderr
    )
    resolved = run("silence", str(gone.id), "--for", "1h")
    assert resolved.returncode == 1 and f"incident {gone.id} was resolved at " in resolved.stderr
    assert run("silence", str(lag.id)).returncode == 2  # no --for
    assert "is not a duration" in run("silence", str(lag.id), "--for", "soon").stderr
    for too_long in ("367d", "3000000d"):  # the latter is past year 9999
        refused = run("silence", str(lag.id), "--for", too_long)
        assert refused.returncode == 2 and "at most 366d" in refused.stderr, refused.stderr
    assert run("ack").returncode == 2
    store = open_store(loaded)  # each ack and silence is in the operator audit log, refusals not
    try:
        logged = [(a["user"], a["action"], a["detail"]["incident"]) for a in store.audit.actions(None, 10)]
        assert logged == [(me, "silence", lag.id), (me, "ack", failing.id), (me, "ack", failing.id)]
        logged_until = dt.datetime.fromisoformat(store.audit.actions(None, 1)[0]["detail"]["until"])
        assert abs(logged_until - until) < dt.timedelta(seconds=1)
    finally:
        store.close()
    c.store(f"sqlite:///{tmp_path}/state.db")
    c.assert_clean()
    assert not any(TOKEN in line for line in c.logs())
