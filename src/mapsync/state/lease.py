"""Per-sync run leases: one run of a sync at a time, fenced by a token on every commit."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import socket
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

from mapsync import errors
from mapsync.state import faults, schema
from mapsync.state.runs import alive as _alive
from mapsync.state.store import StateStore, stamp, utcnow


@dataclasses.dataclass(frozen=True)
class Lease:
    sync: str
    token: str
    ttl: dt.timedelta


def acquire(store: StateStore, sync: str, ttl: dt.timedelta) -> Lease:
    """Take the lease of `sync` or raise LeaseHeld naming the holder.

    A holder's lease is taken over when it expired, or at once when the holder ran on this host
    and its process is gone (so a crashed run does not block the next one for the whole TTL).
    """
    token = uuid.uuid4().hex
    host, pid = socket.gethostname(), os.getpid()
    row = {
        "sync": sync,
        "token": token,
        "host": host,
        "pid": pid,
        "acquired_at": stamp(),
        "expires_at": stamp(utcnow() + ttl),
    }
    t = schema.leases
    for _ in range(3):
        with store.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(t).values(**row))
                return Lease(sync, token, ttl)
            except sa.exc.IntegrityError:  # not a failure: another run inserted the lease row first
                pass
            held = conn.execute(sa.select(t).where(t.c.sync == sync)).mappings().first()
            if held is None:
                continue
            dead = held["host"] == host and not _alive(int(held["pid"]))
            expired = held["expires_at"] < stamp()
            if not (dead or expired):
                raise errors.LeaseHeld(
                    f"sync {sync} is running in pid {held['pid']} on {held['host']} since "
                    f"{held['acquired_at']} (lease until {held['expires_at']})"
                )
            taken = conn.execute(
                sa.update(t).where(t.c.sync == sync, t.c.token == held["token"]).values(**row)
            ).rowcount
            if taken == 1:
                store.fail_stale_runs(conn, sync, held["token"])
                return Lease(sync, token, ttl)
    raise errors.LeaseHeld(f"sync {sync}: could not take the lease (contended)")


def release(store: StateStore, lease: Lease) -> None:
    t = schema.leases
    with store.engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.sync == lease.sync, t.c.token == lease.token))


@contextlib.contextmanager
def held(store: StateStore, sync: str, ttl: dt.timedelta) -> Iterator[Lease]:
    # a store failure is retried when transient, else one StateError (see state.faults)
    lease = faults.call(store.engine, lambda: acquire(store, sync, ttl), "acquire")
    try:
        yield lease
    finally:
        faults.call(store.engine, lambda: release(store, lease), "release")


def renew(store: StateStore, lease: Lease) -> None:
    """Extend the lease by its TTL, or raise LeaseLost when another run holds it now.

    Called right before each destination write, so nothing is written under a lost lease."""
    t = schema.leases
    with store.engine.begin() as conn:
        renewed = conn.execute(
            sa.update(t)
            .where(t.c.sync == lease.sync, t.c.token == lease.token)
            .values(expires_at=stamp(utcnow() + lease.ttl))
        ).rowcount
    if renewed != 1:
        raise errors.LeaseLost(f"sync {lease.sync}: lease lost to another process; batch not written")


def renew_retried(store: StateStore, lease: Lease) -> None:
    """`renew`, retried like every store call (renewing under our token twice changes nothing more)."""
    faults.call(store.engine, lambda: renew(store, lease), "renew")
