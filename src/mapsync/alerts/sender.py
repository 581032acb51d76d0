"""Sending alerts: the outbox's notices (state/incidents.py) to their channels.

`send_due` claims the due notices for a while (`hold`: twice the slowest channel's timeout, at
least 30 s), renders each (alerts/render.py), sends it through its channel (alerts/channels.py) and
marks it sent, or failed with its next try: exponential backoff (30 s, 1 m, 2 m … at most 15 m,
jittered) until `alerts.give_up_after` since the notice was queued, then failed for good. A notice
whose channel is no longer in the sheet fails for good at once. A channel that fails is left alone
for the rest of the pass (its other notices lapse and are claimed again later), so one dead
channel never holds up the others; nothing here raises for a channel's failure, and the sender
runs beside the syncs (the daemon's `alerts` chore, or the end of `mapsync run`/`monitor`), never
in their way. Several senders may run at once on one store: the claim makes each notice go once.

`StoreAway` is the daemon's direct alert when its state store has been away too long: there is
no outbox then, so the channels are told at once; when the store is back the incident is recorded
(raised and cleared), so history shows it and the resolved notice goes through the outbox.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
import socket
import threading
import time

from mapsync import errors
from mapsync.alerts import channels as ch
from mapsync.alerts.render import Notice, render
from mapsync.alerts.routing import channels_for
from mapsync.redact import redact
from mapsync.sheet.alert_models import AlertsConfig
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.clock import utcnow
from mapsync.state.data import Finding, Incident, Notification
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.alerts")
FIRST_RETRY = dt.timedelta(seconds=30)
MAX_RETRY = dt.timedelta(minutes=15)
MIN_HOLD = dt.timedelta(seconds=30)
FLUSH_BUDGET = dt.timedelta(seconds=30)  # `flush` at a one-off command's end sends no longer than this
DIRECT = "sent_directly"  # a number of the state store's incident: its opening went out directly


def backoff(attempts: int, jitter: float = 0.2) -> dt.timedelta:
    """The wait after the `attempts`-th failure (0-based): 30 s doubled each time, at most 15 m,
    ± `jitter` (so senders that failed together do not retry together)."""
    base: dt.timedelta = min(FIRST_RETRY * (2 ** min(attempts, 16)), MAX_RETRY)
    return base * (1 + random.uniform(-jitter, jitter))


def slowest(alerts: AlertsConfig | None) -> dt.timedelta:
    """The longest timeout of the sheet's channels (a log channel takes no time)."""
    out = dt.timedelta(0)
    for channel in alerts.channels.values() if alerts is not None else ():
        cfg = channel.email or channel.webhook
        if cfg is not None:
            out = max(out, cfg.timeout)
    return out


# A send's timeout bounds each step of its conversation (SMTP: connect, EHLO, STARTTLS, AUTH,
# DATA; HTTP: connect, write, each read), not the whole: a send is allowed this many timeouts
# before its claim could lapse and another sender take the notice too
STEPS = 6


def hold_of(alerts: AlertsConfig | None) -> dt.timedelta:
    return max(MIN_HOLD, (STEPS + 2) * slowest(alerts))


def claimer_id() -> str:
    """Who claims when no daemon does: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def send_due(
    loaded: LoadedSheet,
    store: Store,
    claimer: str,
    *,
    limit: int = 50,
    budget: dt.timedelta | None = None,
) -> int:
    """Claim the due notices (at most `limit`), send each once and mark it; returns how many were
    sent. With `budget`, starts no send after that long."""
    alerts = loaded.sheet.alerts
    hold = hold_of(alerts)
    started = time.monotonic()
    # a send is started only while it ends inside the claim (else another sender may take it too)
    last_start = started + (hold - STEPS * slowest(alerts) - dt.timedelta(seconds=2)).total_seconds()
    if budget is not None:
        last_start = min(last_start, started + budget.total_seconds())
    claimed = store.incidents.claim_notifications(claimer, hold, limit)
    incidents: dict[int, Incident | None] = {}
    failed_channels: set[str] = set()
    sent = 0
    for notice in claimed:
        if notice.channel in failed_channels or time.monotonic() > last_start:
            continue  # its claim lapses; claimed and sent again later
        if notice.incident_id not in incidents:
            incidents[notice.incident_id] = store.incidents.incident(notice.incident_id)
        incident = incidents[notice.incident_id]
        channel = alerts.channels.get(notice.channel) if alerts is not None else None
        if channel is None or incident is None:
            why = (
                f"channel {notice.channel!r} is no longer in the sheet"
                if incident is not None
                else f"incident {notice.incident_id} is gone"
            )
            store.incidents.notification_failed(notice.id, claimer, why, None)
            _failed(notice, why, None)
            continue
        if notice.kind == "opened" and incident.numbers.get(DIRECT):
            # the state store's own incident: its opening went out directly while the store was away
            if store.incidents.notification_sent(notice.id, claimer):
                sent += 1
            continue
        try:
            ch.send(
                notice.channel, channel, render(incident, notice.kind, loaded), loaded.folder, loaded.secrets
            )
        except ch.ChannelError as exc:
            failed_channels.add(notice.channel)
            error = redact(str(exc), loaded.secrets, cap=500)
            retry = _retry_at(notice, alerts.give_up_after if alerts is not None else dt.timedelta(0))
            store.incidents.notification_failed(notice.id, claimer, error, retry)
            _failed(notice, error, retry)
            continue
        if store.incidents.notification_sent(notice.id, claimer):
            sent += 1
            log.info(
                "alert_sent",
                extra={
                    "action": "alert_sent",
                    "incident": notice.incident_id,
                    "kind": notice.kind,
                    "channel": notice.channel,
                    "attempts": notice.attempts + 1,
                },
            )
        else:  # our claim lapsed and another sender took it over: it may go twice
            log.warning(
                "alert_claim_lost",
                extra={
                    "action": "alert_claim_lost",
                    "incident": notice.incident_id,
                    "channel": notice.channel,
                },
            )
    return sent


def _retry_at(notice: Notification, give_up_after: dt.timedelta) -> dt.datetime | None:
    """The next try of a failed notice, or None (given up) once `give_up_after` has passed since it
    was queued (the last try falls at that moment)."""
    now = utcnow()
    end = notice.created_at + give_up_after
    if now >= end:
        return None
    return min(now + backoff(notice.attempts), end)


def _failed(notice: Notification, error: str, retry: dt.datetime | None) -> None:
    log.warning(
        "alert_send_failed",
        extra={
            "action": "alert_send_failed",
            "incident": notice.incident_id,
            "kind": notice.kind,
            "channel": notice.channel,
            "attempts": notice.attempts + 1,
            "retry_at": retry.isoformat() if retry is not None else None,
            "given_up": retry is None,
            "error": error,
        },
    )


def remind(loaded: LoadedSheet, store: Store) -> list[int]:
    """Queue the due reminders (`alerts.remind_every`); the incidents reminded."""
    alerts = loaded.sheet.alerts
    if alerts is None or alerts.remind_every is None:
        return []
    return store.incidents.queue_reminders(alerts.remind_every)


def tick(loaded: LoadedSheet, store: Store, claimer: str) -> int:
    """The daemon's `alerts` chore: due reminders queued, due notices sent."""
    remind(loaded, store)
    return send_due(loaded, store, claimer)


def flush(loaded: LoadedSheet, store: Store) -> int:
    """Send every due notice once, now (a one-off command's end: `mapsync monitor`, `mapsync run`),
    in bounded time; returns how many were sent. A state store that fails meanwhile is logged
    (`alert_flush_failed`), not raised: the command's own outcome stands, and the daemon or the
    next command sends what is left."""
    claimer, end, sent = claimer_id(), time.monotonic() + FLUSH_BUDGET.total_seconds(), 0
    try:
        remind(loaded, store)
        while (left := end - time.monotonic()) > 0:
            # again while something went: a notice queued behind one just sent (resolved after opened)
            more = send_due(loaded, store, claimer, budget=dt.timedelta(seconds=left))
            sent += more
            if not more:
                break
    except errors.StateError as exc:
        log.warning(
            "alert_flush_failed",
            extra={"action": "alert_flush_failed", "error": redact(str(exc), loaded.secrets, cap=300)},
        )
    return sent


# ------------------------------------------------------------------ the state store away


@dataclasses.dataclass
class StoreAway:
    """The daemon's watch on its own state store (`failed` at each tick that found it away, `ok`
    at each that did not): one direct alert once it has been away longer than `threshold`, the
    incident recorded once it is back."""

    since: float | None = None  # monotonic time of the first failure of this outage
    alerted: Finding | None = None  # the direct alert sent in this outage

    def failed(self, loaded: LoadedSheet, finding: Finding, now: float, threshold: dt.timedelta) -> bool:
        """The store was away at `now` (`finding`: the daemon's `state_store` finding of the
        failure, naming its reason only); sends the direct alert once past `threshold`. Whether
        it sent it now."""
        if self.since is None:
            self.since = now
        away = now - self.since
        if self.alerted is not None or away < threshold.total_seconds():
            return False
        self.alerted = dataclasses.replace(
            finding,
            message=f"{finding.message} (away {round(away)} s)",
            numbers={**finding.numbers, "away_s": round(away)},
        )
        # on a thread of its own: a slow or tarpitting channel never holds up the scheduler's tick
        # (nor its stop); a daemon thread, so a process that exits does not wait for it
        threading.Thread(
            target=direct, args=(loaded, self.alerted), name="mapsync-direct-alert", daemon=True
        ).start()
        return True

    def ok(self, loaded: LoadedSheet, store: Store) -> None:
        """The store answered: after an alerted outage, record its incident (opened and resolved)."""
        self.since = None
        found, self.alerted = self.alerted, None
        if found is None:
            return
        marked = dataclasses.replace(found, numbers={**found.numbers, DIRECT: 1})
        try:
            store.incidents.raise_incident(marked, channels_for(marked, loaded.sheet.alerts))
            store.incidents.clear_incident(marked.key)
        except Exception as exc:  # history only: never stops the daemon
            self.alerted = found  # tried again at the next good tick
            log.warning(
                "alert_record_failed",
                extra={"action": "alert_record_failed", "error": redact(str(exc), loaded.secrets, cap=300)},
            )


def direct(loaded: LoadedSheet, finding: Finding) -> int:
    """Tell the finding's channels at once, without the outbox (the state store is away); how
    many channels took it."""
    alerts = loaded.sheet.alerts
    now = utcnow()
    incident = Incident(
        id=0,
        key=finding.key,
        monitor=finding.monitor,
        sync=finding.sync,
        subject=finding.subject,
        severity=finding.severity,
        failure_class=finding.failure_class,
        message=finding.message,
        numbers=finding.numbers,
        runbook=finding.runbook,
        channels=tuple(channels_for(finding, alerts)),
        status="open",
        opened_at=now,
        last_seen_at=now,
    )
    notice: Notice = render(incident, "opened", loaded, now)
    took = 0
    for name in incident.channels:
        channel = alerts.channels[name] if alerts is not None else None
        if channel is None:
            continue
        try:
            ch.send(name, channel, notice, loaded.folder, loaded.secrets)
            took += 1
        except ch.ChannelError as exc:
            log.warning(
                "alert_direct_failed",
                extra={"action": "alert_direct_failed", "channel": name, "error": str(exc)},
            )
    log.error(
        "state_store_away_alerted",
        extra={"action": "state_store_away_alerted", "channels": ",".join(incident.channels), "took": took},
    )
    return took
