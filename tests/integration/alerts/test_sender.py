"""The sender (alerts/sender.py) on a real state store (SQLite and PostgreSQL) with real receivers:
each channel hears opened → reminder → resolved in that order; an acknowledged incident gets no
reminder; a channel that keeps failing is given up after `give_up_after` and never holds up the
others; a notice whose channel left the sheet fails for good; two senders on one PostgreSQL store
send each notice exactly once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync import errors
from mapsync.alerts import sender
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.store import StateStore
from tests.alert_world import (
    FAILED,
    SmtpServer,
    WebhookReceiver,
    age_incidents,
    age_notices,
    alerts_sheet,
    load,
    make_due,
    raise_finding,
)

# every test on SQLite; the order of notices on PostgreSQL too (a fresh database costs seconds)
BOTH = pytest.mark.parametrize(
    "state_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    factory: Callable[[], str] = request.getfixturevalue("pg_database")
    return factory()


@dataclasses.dataclass
class World:
    loaded: LoadedSheet
    store: StateStore
    hook: WebhookReceiver
    mail: SmtpServer


@pytest.fixture
def world(
    tmp_path: Path,
    state_url: str,
    webhook_receiver: Callable[..., WebhookReceiver],
    smtp_server: Callable[..., SmtpServer],
) -> Iterator[Callable[..., World]]:
    stores: list[StateStore] = []
    hook, mail = webhook_receiver(), smtp_server("starttls")

    def make(**alerts: Any) -> World:
        block = {
            "channels": {"chat": {"webhook": {"url": hook.url(), "timeout": "1s"}}, "ops": mail.channel()},
            **alerts,
        }
        loaded = load(alerts_sheet(tmp_path, block, state_url))
        store = StateStore.open(state_url, tmp_path, create=True)
        stores.append(store)
        return World(loaded, store, hook, mail)

    yield make
    for store in stores:
        store.close()


def kinds(w: World) -> tuple[list[str], list[str]]:
    return [r.json()["kind"] for r in w.hook.requests], [str(m["X-Mapsync-Kind"]) for m in w.mail.messages]


@BOTH
def test_opened_reminder_resolved_in_order_per_channel(world: Callable[..., World]) -> None:
    w = world(remind_every="1h")
    incident = raise_finding(w.loaded, w.store)
    assert sender.tick(w.loaded, w.store, "a") == 2
    assert sender.tick(w.loaded, w.store, "a") == 0  # no reminder within the hour
    age_incidents(w.store, dt.timedelta(minutes=61))
    assert sender.tick(w.loaded, w.store, "a") == 2  # one reminder per channel
    assert sender.tick(w.loaded, w.store, "a") == 0  # not due again yet
    w.store.incidents.clear_incident(incident.key)
    assert sender.flush(w.loaded, w.store) == 2
    assert kinds(w) == (["opened", "reminder", "resolved"], ["opened", "reminder", "resolved"])
    resolved = w.hook.requests[-1].json()
    assert resolved["resolved_at"] is not None and resolved["ack"] is None
    assert w.mail.messages[-1]["Subject"].startswith("[mapsync] resolved: CRITICAL failed_run on items")
    opening = w.mail.messages[0]["Message-ID"]  # one thread per incident in a mail client
    assert [m["In-Reply-To"] for m in w.mail.messages] == [None, opening, opening]
    assert len({m["Message-ID"] for m in w.mail.messages}) == 3


@BOTH
def test_resolved_waits_for_a_failing_opened_notice(world: Callable[..., World]) -> None:
    w = world()
    incident = raise_finding(w.loaded, w.store)
    w.hook.answer(500)
    assert sender.send_due(w.loaded, w.store, "a") == 1  # the e-mail; the webhook failed
    w.store.incidents.clear_incident(incident.key)
    assert sender.send_due(w.loaded, w.store, "a") == 1  # the e-mail's resolved; the chat waits
    assert kinds(w) == (["opened"], ["opened", "resolved"])
    make_due(w.store)
    assert sender.send_due(w.loaded, w.store, "a") == 1  # opened only: resolved is queued behind it
    assert sender.send_due(w.loaded, w.store, "a") == 1
    assert kinds(w)[0] == ["opened", "opened", "resolved"]


def test_an_acknowledged_or_silenced_incident_gets_no_reminder(world: Callable[..., World]) -> None:
    w = world(remind_every="1h", routes=[{"to": ["chat"]}])
    acked = raise_finding(w.loaded, w.store)
    silenced = raise_finding(w.loaded, w.store, dataclasses.replace(FAILED, monitor="lag"))
    assert sender.tick(w.loaded, w.store, "a") == 2
    assert w.store.incidents.ack(acked.id, "me@host")
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert w.store.incidents.silence(silenced.id, until, "me@host")
    age_incidents(w.store, dt.timedelta(hours=2))
    assert sender.tick(w.loaded, w.store, "a") == 0
    assert kinds(w)[0] == ["opened", "opened"]


def test_a_channel_that_keeps_failing_is_given_up_and_holds_up_no_other(world: Callable[..., World]) -> None:
    w = world(give_up_after="1m")
    incident = raise_finding(w.loaded, w.store)
    w.hook.answer(500, n=5)
    assert sender.send_due(w.loaded, w.store, "a") == 1  # the e-mail went
    age_notices(w.store, dt.timedelta(seconds=50))
    make_due(w.store)
    assert sender.send_due(w.loaded, w.store, "a") == 0
    (chat,) = [n for n in w.store.incidents.notifications(incident.id) if n.channel == "chat"]
    assert chat.status == "pending" and chat.attempts == 2
    assert chat.next_at <= chat.created_at + dt.timedelta(minutes=1) + dt.timedelta(milliseconds=1)
    age_notices(w.store, dt.timedelta(seconds=20))  # now past give_up_after
    make_due(w.store)
    assert sender.send_due(w.loaded, w.store, "a") == 0
    (chat,) = [n for n in w.store.incidents.notifications(incident.id) if n.channel == "chat"]
    assert (chat.status, chat.attempts, chat.last_error) == ("failed", 3, "webhook answered HTTP 500")
    assert len(w.mail.messages) == 1 and len(w.hook.requests) == 3


def test_a_notice_of_a_channel_no_longer_in_the_sheet_fails_for_good(
    world: Callable[..., World], tmp_path: Path
) -> None:
    w = world()
    incident = raise_finding(w.loaded, w.store)
    (tmp_path / "sheet.yaml").write_text((tmp_path / "sheet.yaml").read_text().replace('"chat"', '"team"'))
    renamed = load(tmp_path / "sheet.yaml")
    assert sender.send_due(renamed, w.store, "a") == 1
    (chat,) = [n for n in w.store.incidents.notifications(incident.id) if n.channel == "chat"]
    assert (chat.status, chat.last_error) == ("failed", "channel 'chat' is no longer in the sheet")
    assert w.hook.requests == [] and len(w.mail.messages) == 1


@pytest.mark.postgres
def test_two_senders_on_one_postgres_store_send_each_notice_once(
    tmp_path: Path,
    pg_database: Callable[[], str],
    smtp_server: Callable[..., SmtpServer],
) -> None:
    url = pg_database()
    mail = smtp_server("none")
    loaded = load(alerts_sheet(tmp_path, {"channels": {"ops": mail.channel()}}, url))
    stores = [StateStore.open(url, tmp_path, create=True) for _ in range(2)]
    try:
        for i in range(12):
            raise_finding(loaded, stores[0], dataclasses.replace(FAILED, subject=f"s{i}"))
        start = threading.Barrier(2)
        counts = [0, 0]

        def send(k: int) -> None:
            start.wait()
            for _ in range(4):
                counts[k] += sender.send_due(loaded, stores[k], f"sender-{k}", limit=3)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        incidents = sorted(str(m["X-Mapsync-Incident"]) for m in mail.messages)
        assert len(incidents) == 12 and len(set(incidents)) == 12  # every notice, each once
        assert sum(counts) == 12
        assert all(n.status == "sent" and n.attempts == 1 for n in stores[0].incidents.notifications())
    finally:
        for store in stores:
            store.close()


def test_flush_sends_what_queued_behind_what_it_sent(world: Callable[..., World]) -> None:
    """`mapsync run`/`monitor` end with one flush: an incident opened and cleared since then gets
    both notices from it, in order."""
    w = world()
    incident = raise_finding(w.loaded, w.store)
    w.store.incidents.clear_incident(incident.key)
    assert sender.flush(w.loaded, w.store) == 4
    assert kinds(w) == (["opened", "resolved"], ["opened", "resolved"])
    assert sender.flush(w.loaded, w.store) == 0


def test_flush_logs_a_store_failure_and_raises_nothing(
    world: Callable[..., World], caplog: pytest.LogCaptureFixture
) -> None:
    w = world()
    raise_finding(w.loaded, w.store)

    def away(*_a: Any, **_k: Any) -> Any:
        raise errors.StateError("the state store is locked by another process", reason="locked")

    w.store.incidents.claim_notifications = away  # type: ignore[method-assign]
    assert sender.flush(w.loaded, w.store) == 0
    assert any(r.getMessage() == "alert_flush_failed" for r in caplog.records)
