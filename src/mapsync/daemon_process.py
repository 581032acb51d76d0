"""What a daemon process needs around its scheduler (`daemon.py`): its worker id, the lease it
runs under, which syncs it has something for, its signals, and the run requests a daemon of
this host left `taken` when it died."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from mapsync import errors
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.timeout_models import BOUNDED
from mapsync.state.ports import Store
from mapsync.state.runs import alive

log = logging.getLogger("mapsync.daemon")
LEASE = dt.timedelta(seconds=60)  # the daemon's default `state.lease_ttl` (a heartbeat renews it)


class Signalled(Protocol):
    """What the signals set on a daemon."""

    stop: threading.Event
    reload_requested: threading.Event


def with_daemon_lease(loaded: LoadedSheet) -> LoadedSheet:
    """The sheet as the daemon runs it: `state.lease_ttl` 60 s unless the sheet sets it (a
    one-off command keeps 10 minutes), or twice the longest bounded timeout the sheet sets if
    that is longer (no statement may outlive its lease). A dead daemon's syncs are free again
    within a minute; a healthy run keeps its lease by the heartbeat; the timeouts the sheet
    leaves to their defaults follow the lease (each at most half of it)."""
    state = loaded.sheet.state
    if "lease_ttl" in state.model_fields_set:
        return loaded
    blocks = [state.timeouts, *(getattr(c, "timeouts", None) for c in loaded.sheet.connections.values())]
    longest = max(
        (v for b in blocks if b is not None for f in BOUNDED if (v := getattr(b, f, None)) is not None),
        default=dt.timedelta(0),
    )
    lease = max(LEASE, 2 * longest)
    sheet = loaded.sheet.model_copy(update={"state": state.model_copy(update={"lease_ttl": lease})})
    return dataclasses.replace(loaded, sheet=sheet)


def scheduled(loaded: LoadedSheet, name: str) -> bool:
    """Whether sync `name` has something for the daemon: a schedule (every, cron, follow) or a
    retry schedule."""
    cfg = loaded.sheet.syncs[name]
    s = cfg.schedule
    return bool(s.every or s.cron or s.follow) or cfg.retry is not None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def release_orphaned_requests(store: Store) -> int:
    """Requests a daemon of this host took and never finished because its process died
    (SIGKILL, power): ended `failed`, so they are not shown pending for ever. (One taken on
    another host cannot be told from a live one here.) Returns how many."""
    host = socket.gethostname()
    done = 0
    try:
        pending = store.requests(None, 1000, pending=True)
    except errors.StateError:
        return 0
    for req in pending:
        taker, _, pid = (req.taken_by or "").rpartition(":")
        if req.status != "taken" or taker != host or not pid.isdigit() or alive(int(pid)):
            continue
        with contextlib.suppress(errors.StateError):
            store.finish_request(
                req.id, "failed", None, f"its daemon ({req.taken_by}) died before running it: ask again"
            )
            done += 1
    return done


@contextlib.contextmanager
def signals(daemon: Signalled) -> Iterator[None]:
    """SIGTERM/SIGINT stop the daemon gracefully (a second one exits at once, as a crash would:
    the next start re-sends at most the batches in flight); SIGHUP reloads the sheet."""

    def stop(signum: int, _frame: Any) -> None:
        if daemon.stop.is_set():
            log.error("daemon_killed", extra={"action": "daemon_killed", "signal": signum})
            os._exit(128 + signum)
        log.info("daemon_stopping", extra={"action": "daemon_stopping", "signal": signum})
        daemon.stop.set()

    def hup(_signum: int, _frame: Any) -> None:
        daemon.reload_requested.set()

    wanted: dict[int, Callable[[int, Any], None]] = {signal.SIGTERM: stop, signal.SIGINT: stop}
    if hasattr(signal, "SIGHUP"):
        wanted[signal.SIGHUP] = hup
    previous = {s: signal.signal(s, h) for s, h in wanted.items()}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
