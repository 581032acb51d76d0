"""The sender in the daemon: the `alerts` chore (every 5 s, in every daemon: no lease) sends the
due notices and queues the reminders. The daemon's direct alert when its state store stays away (alerts/sender.py `StoreAway`, wired
in `Daemon.tick`): after 2 × `lease_ttl` of failed ticks the channels a `state_store` finding routes
to are told once, without the outbox; once the store answers again the incident is recorded
(opened and resolved), and the outbox sends only its resolved notice (the opening went out
directly). In-process, with a store whose reads fail."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync import errors
from mapsync.alerts.sender import send_due
from mapsync.daemon import Daemon
from mapsync.state.clock import ManualClock
from tests import helpers as h
from tests.alert_world import WebhookReceiver, age_incidents, alerts_sheet, load, open_store, raise_finding


def test_one_direct_alert_then_the_incident_recorded(
    tmp_path: Path, webhook_receiver: Callable[..., WebhookReceiver], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = webhook_receiver()
    other = webhook_receiver()
    sheet = alerts_sheet(
        tmp_path,
        {
            "channels": {
                "ops": {"webhook": {"url": receiver.url()}},
                "owners": {"webhook": {"url": other.url()}},
            },
            "routes": [{"match": {"failure_class": ["state"]}, "to": ["ops"]}, {"to": ["owners"]}],
        },
        f"sqlite:///{tmp_path}/state.db",
    )
    loaded = load(sheet)
    store = open_store(loaded)
    clock = ManualClock()
    d = Daemon(loaded, store, ["items"], open_store=lambda: store, worker="host:1", clock=clock)
    paused = store.paused

    def away(*_a: Any, **_k: Any) -> Any:
        raise errors.StateError("the state store is unreachable: connection refused", reason="unreachable")

    try:
        store.paused = away  # type: ignore[method-assign]
        d.tick(clock.now())
        clock.advance(d.ttl.total_seconds())  # away for one TTL: not yet
        d.tick(clock.now())
        assert receiver.requests == []
        with caplog.at_level(logging.ERROR, logger="mapsync.alerts"):
            clock.advance(d.ttl.total_seconds() + 1)  # past 2 × lease_ttl: told once
            d.tick(clock.now())
            clock.advance(60)
            d.tick(clock.now())
            # sent on a thread of its own (a slow channel never holds up the scheduler's tick)
            assert h.wait_for(lambda: len(receiver.requests) >= 1, timeout=10)
            assert h.wait_for(
                lambda: any(r.getMessage() == "state_store_away_alerted" for r in caplog.records), timeout=10
            )
        (direct,) = receiver.requests
        body = direct.json()
        assert (body["monitor"], body["kind"], body["incident"], body["failure_class"]) == (
            "state_store",
            "opened",
            None,
            "state",
        )
        assert (
            body["message"].startswith("the state store cannot be reached")
            and body["owner"] == "mapsync's operator"
        )
        assert "connection refused" not in body["message"]  # the reason only, never the driver's text
        assert body["numbers"]["away_s"] > 2 * d.ttl.total_seconds()
        assert other.requests == []  # routed: only the channels a state finding goes to
        assert any(r.getMessage() == "state_store_away_alerted" for r in caplog.records)
        assert store.incidents.incidents() == []  # nothing could be recorded while away

        store.paused = paused  # type: ignore[method-assign]
        d.tick(clock.now())  # back: the incident recorded, opened and resolved
        (incident,) = store.incidents.incidents()
        assert (incident.monitor, incident.status, incident.channels) == ("state_store", "resolved", ("ops",))
        d.tick(clock.now())
        assert len(store.incidents.incidents()) == 1  # recorded once
        assert send_due(loaded, store, "host:1") == 1  # the opening: went directly, marked sent
        assert len(receiver.requests) == 1
        assert send_due(loaded, store, "host:1") == 1  # then the resolved notice (queued behind it)
        assert [r.json()["kind"] for r in receiver.requests] == ["opened", "resolved"]
        assert receiver.requests[1].json()["incident"] == incident.id
        assert all(n.status == "sent" for n in store.incidents.notifications(incident.id))
    finally:
        store.close()


def test_a_short_outage_alerts_nobody(
    tmp_path: Path, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    receiver = webhook_receiver()
    sheet = alerts_sheet(
        tmp_path,
        {"channels": {"ops": {"webhook": {"url": receiver.url()}}}},
        f"sqlite:///{tmp_path}/state.db",
    )
    loaded = load(sheet)
    store = open_store(loaded)
    clock = ManualClock()
    d = Daemon(loaded, store, ["items"], open_store=lambda: store, worker="host:1", clock=clock)
    paused = store.paused

    def away(*_a: Any, **_k: Any) -> Any:
        raise errors.StateError("locked", reason="locked")

    try:
        store.paused = away  # type: ignore[method-assign]
        d.tick(clock.now())
        clock.advance(d.ttl.total_seconds())
        d.tick(clock.now())
        store.paused = paused  # type: ignore[method-assign]
        d.tick(clock.now())  # back within 2 × lease_ttl
        store.paused = away  # type: ignore[method-assign]
        clock.advance(d.ttl.total_seconds() * 1.5)
        d.tick(clock.now())  # a new outage counts from its own start
        assert receiver.requests == [] and store.incidents.incidents() == []
    finally:
        store.close()


def test_the_alerts_chore_sends_due_notices_and_reminders(
    tmp_path: Path, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    receiver = webhook_receiver()
    sheet = alerts_sheet(
        tmp_path,
        {"channels": {"ops": {"webhook": {"url": receiver.url()}}}, "remind_every": "1h"},
        f"sqlite:///{tmp_path}/state.db",
    )
    loaded = load(sheet)
    store = open_store(loaded)
    d = Daemon(loaded, store, ["items"], open_store=lambda: store, worker="host:1")
    try:
        (chore,) = [c for c in d._chores() if c.name == "alerts"]
        assert chore.every == dt.timedelta(seconds=5) and chore.lease is False
        raise_finding(loaded, store)
        chore.do(store)
        chore.do(store)
        assert [r.json()["kind"] for r in receiver.requests] == ["opened"]
        age_incidents(store, dt.timedelta(hours=2))
        chore.do(store)
        assert [r.json()["kind"] for r in receiver.requests] == ["opened", "reminder"]
    finally:
        store.close()
