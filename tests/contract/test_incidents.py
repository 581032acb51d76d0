"""Contract: incidents and the alert outbox (schema v7, port `Incidents`). One open incident per
finding key, refreshed while it lasts; one notice per channel at opening, reminder and resolution,
queued in the same transaction; a claimed notice is held from other senders, sent or failed by its
claimer only, and a channel hears `resolved` only after its `opened` left the queue."""

from __future__ import annotations

import datetime as dt
import threading

from mapsync.state.clock import utcnow
from mapsync.state.data import Finding
from mapsync.state.ports import Store

HOLD = dt.timedelta(minutes=1)


def finding(sync: str = "s", *, monitor: str = "failed_run", subject: str = "", n: int = 1) -> Finding:
    return Finding(
        monitor=monitor,
        sync=sync,
        severity="critical",
        failure_class="destination",
        message=f"run failed {n} time(s)",
        numbers={"failures": n},
        runbook="mapsync runs SHEET --sync s",
        subject=subject,
    )


def test_one_open_incident_per_key_refreshed_while_it_lasts(store: Store) -> None:
    first, opened = store.incidents.raise_incident(finding(n=1), ["ops", "chat"])
    again, opened_again = store.incidents.raise_incident(finding(n=2), ["ops", "chat"])
    assert opened and not opened_again and again.id == first.id
    assert again.numbers == {"failures": 2} and again.message == "run failed 2 time(s)"
    assert again.opened_at == first.opened_at and again.last_seen_at >= first.last_seen_at
    assert again.channels == ("ops", "chat") and again.status == "open"
    other, opened_other = store.incidents.raise_incident(finding(subject="cred-b"), ["ops"])
    assert opened_other and other.id != first.id
    assert [i.id for i in store.incidents.open_incidents("s")] == [first.id, other.id]
    assert store.incidents.open_incidents("elsewhere") == []
    notices = store.incidents.notifications(first.id)
    assert sorted((n.kind, n.channel, n.status) for n in notices) == [
        ("opened", "chat", "pending"),
        ("opened", "ops", "pending"),
    ]


def test_clear_resolves_once_and_queues_resolved_notices(store: Store) -> None:
    inc, _ = store.incidents.raise_incident(finding(), ["ops"])
    done = store.incidents.clear_incident(inc.key)
    assert done is not None and done.status == "resolved" and done.resolved_at is not None
    assert store.incidents.clear_incident(inc.key) is None
    assert store.incidents.open_incidents() == []
    assert [n.kind for n in store.incidents.notifications(inc.id)] == ["resolved", "opened"]
    reopened, opened = store.incidents.raise_incident(finding(), ["ops"])
    assert opened and reopened.id != inc.id and reopened.key == inc.key


def test_racing_raisers_open_one_incident(store: Store) -> None:
    results: list[bool] = []

    def raise_it() -> None:
        results.append(store.incidents.raise_incident(finding(), ["ops"])[1])

    threads = [threading.Thread(target=raise_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert len(store.incidents.open_incidents()) == 1
    assert len(store.incidents.notifications()) == 1


def test_claims_hold_notices_and_only_the_claimer_finishes_them(store: Store) -> None:
    inc, _ = store.incidents.raise_incident(finding(), ["ops", "chat"])
    mine = store.incidents.claim_notifications("a", HOLD, 10)
    assert len(mine) == 2
    assert store.incidents.claim_notifications("b", HOLD, 10) == []  # held by a
    ops = next(n for n in mine if n.channel == "ops")
    chat = next(n for n in mine if n.channel == "chat")
    assert not store.incidents.notification_sent(ops.id, "b")
    assert store.incidents.notification_sent(ops.id, "a")
    assert not store.incidents.notification_sent(ops.id, "a")  # sent once
    retry = utcnow() + dt.timedelta(hours=1)
    assert store.incidents.notification_failed(chat.id, "a", "connection refused", retry)
    assert store.incidents.claim_notifications("b", HOLD, 10) == []  # not due yet
    by_id = {n.id: n for n in store.incidents.notifications(inc.id)}
    assert (by_id[ops.id].status, by_id[ops.id].attempts) == ("sent", 1)
    assert (by_id[chat.id].status, by_id[chat.id].last_error) == ("pending", "connection refused")
    assert store.incidents.notification_failed(chat.id, "a", "x", None) is False  # not claimed now


def test_a_lapsed_claim_goes_to_another_sender(store: Store) -> None:
    store.incidents.raise_incident(finding(), ["ops"])
    got = store.incidents.claim_notifications("a", dt.timedelta(milliseconds=1), 10)
    assert len(got) == 1
    import time

    time.sleep(0.01)
    again = store.incidents.claim_notifications("b", HOLD, 10)
    assert [n.id for n in again] == [got[0].id]
    assert store.incidents.notification_sent(got[0].id, "b")
    assert not store.incidents.notification_sent(got[0].id, "a")


def test_resolved_waits_for_its_opened_notice_on_the_same_channel(store: Store) -> None:
    inc, _ = store.incidents.raise_incident(finding(), ["ops"])
    store.incidents.clear_incident(inc.key)
    first = store.incidents.claim_notifications("a", HOLD, 10)
    assert [n.kind for n in first] == ["opened"]  # `resolved` is behind it
    store.incidents.notification_failed(first[0].id, "a", "down", utcnow() - dt.timedelta(seconds=1))
    assert [n.kind for n in store.incidents.claim_notifications("a", HOLD, 10)] == ["opened"]
    store.incidents.notification_failed(first[0].id, "a", "down for good", None)  # given up
    assert [n.kind for n in store.incidents.claim_notifications("a", HOLD, 10)] == ["resolved"]


def test_reminders_once_per_interval_not_when_acked_or_silenced(store: Store) -> None:
    a, _ = store.incidents.raise_incident(finding("a"), ["ops"])
    b, _ = store.incidents.raise_incident(finding("b"), ["ops"])
    c, _ = store.incidents.raise_incident(finding("c"), ["ops"])
    assert store.incidents.queue_reminders(dt.timedelta(hours=1)) == []  # too soon
    assert store.incidents.ack(b.id, "ann@host")
    assert store.incidents.silence(c.id, utcnow() + dt.timedelta(hours=2), "bob@host")
    assert store.incidents.queue_reminders(dt.timedelta(0)) == [a.id]
    assert store.incidents.queue_reminders(dt.timedelta(hours=1)) == []  # just reminded
    assert [n.kind for n in store.incidents.notifications(a.id)] == ["reminder", "opened"]
    got = store.incidents.incident(b.id)
    assert got is not None and got.acked_by == "ann@host" and got.acked_at is not None
    silenced = store.incidents.incident(c.id)
    assert silenced is not None and silenced.silenced_by == "bob@host"
    store.incidents.clear_incident(a.id and a.key)
    assert not store.incidents.ack(a.id, "ann@host")  # resolved: nothing to acknowledge
    assert store.incidents.incident(999_999) is None


def test_history_lists_newest_first(store: Store) -> None:
    one, _ = store.incidents.raise_incident(finding("x", monitor="late_start"), [])
    store.incidents.clear_incident(one.key)
    two, _ = store.incidents.raise_incident(finding("y", monitor="lag"), [])
    assert [i.id for i in store.incidents.incidents()] == [two.id, one.id]
    assert [i.id for i in store.incidents.incidents(include_resolved=False)] == [two.id]
    assert [i.id for i in store.incidents.incidents(sync="x")] == [one.id]
    assert store.incidents.notifications(one.id) == []  # no channels, no notices


def test_observations_keep_the_latest_and_return_the_previous(store: Store) -> None:
    assert store.observations.observe("s", {"newest": AT_1, "rows": 10}) == {}
    before = store.observations.observe("s", {"newest": AT_2, "rows": 9})
    assert {k: v for k, (v, _) in before.items()} == {"newest": AT_1, "rows": 10}
    store.observations.observe("*", {"skew_s": 0.5})
    seen = store.observations.observations()
    assert {k: v for k, (v, _) in seen.items()} == {
        ("s", "newest"): AT_2,
        ("s", "rows"): 9,
        ("*", "skew_s"): 0.5,
    }
    assert set(store.observations.observations("*")) == {("*", "skew_s")}
    assert all(isinstance(at, dt.datetime) for _, at in seen.values())


AT_1 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
AT_2 = dt.datetime(2025, 12, 31, 12, 0, tzinfo=dt.UTC)
