"""Per-sync run leases: one run of a sync at a time, fenced by a token on every commit.

`SqlLeases` is the port `Leases` of a `StateStore` (`store.leases`); the in-memory store has its
own (state/memory_ports.py). The module functions (`acquire(store, …)` …) are the older form,
kept for their callers: each asks `store.leases`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from mapsync import crash, errors
from mapsync.state import faults, schema
from mapsync.state.clock import stamp, unstamp, utcnow
from mapsync.state.data import Lease as Lease
from mapsync.state.meter import coordination
from mapsync.state.ports import Store
from mapsync.state.runs import alive, fail_stale


def new_token() -> str:
    return uuid.uuid4().hex


def held_by_other(sync: str, held: dict[str, object]) -> errors.LeaseHeld:
    """The error naming the live holder of a lease."""
    return errors.LeaseHeld(
        f"sync {sync} is running in pid {held['pid']} on {held['host']} since "
        f"{held['acquired_at']} (lease until {held['expires_at']})"
    )


def lost(lease: Lease) -> errors.LeaseLost:
    return errors.LeaseLost(f"sync {lease.sync}: lease lost to another process; batch not written")


class SqlLeases:
    """The `Leases` port of a SQL state store (table `mapsync_leases`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @coordination("lease_acquire")
    def acquire(self, sync: str, ttl: dt.timedelta) -> Lease:
        """Take the lease of `sync` or raise LeaseHeld naming the holder.

        A holder's lease is taken over when it expired, or at once when the holder ran on this
        host and its process is gone (so a crashed run does not block the next one for the
        whole TTL); the holder's running runs are then marked failed.
        """
        token = new_token()
        host, pid = socket.gethostname(), crash.pid()  # a stand-in pid for in-process test runs
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
            with self.engine.begin() as conn:
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(t).values(**row))
                    return Lease(sync, token, ttl)
                except sa.exc.IntegrityError:  # not a failure: another run inserted the lease row first
                    pass
                held = conn.execute(sa.select(t).where(t.c.sync == sync)).mappings().first()
                if held is None:
                    continue
                dead = held["host"] == host and not alive(int(held["pid"]))
                expired = held["expires_at"] < stamp()
                if not (dead or expired):
                    raise held_by_other(sync, dict(held))
                taken = conn.execute(
                    sa.update(t).where(t.c.sync == sync, t.c.token == held["token"]).values(**row)
                ).rowcount
                if taken == 1:
                    fail_stale(conn, sync, held["token"])
                    return Lease(sync, token, ttl)
        raise errors.LeaseHeld(f"sync {sync}: could not take the lease (contended)")

    @coordination("lease_release")
    def release(self, lease: Lease) -> None:
        t = schema.leases
        with self.engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.sync == lease.sync, t.c.token == lease.token))

    @contextlib.contextmanager
    def held(self, sync: str, ttl: dt.timedelta) -> Iterator[Lease]:
        # a store failure is retried when transient, else one StateError (see state.faults)
        lease = faults.call(self.engine, lambda: self.acquire(sync, ttl), "acquire")
        try:
            yield lease
        finally:
            faults.call(self.engine, lambda: self.release(lease), "release")

    @coordination("lease_renew")
    def renew(self, lease: Lease) -> None:
        """Extend the lease by its TTL, or raise LeaseLost when another run holds it now.

        Called right before each destination write, so nothing is written under a lost lease."""
        t = schema.leases
        with self.engine.begin() as conn:
            renewed = conn.execute(
                sa.update(t)
                .where(t.c.sync == lease.sync, t.c.token == lease.token)
                .values(expires_at=stamp(utcnow() + lease.ttl))
            ).rowcount
        if renewed != 1:
            raise lost(lease)

    def renew_retried(self, lease: Lease) -> None:
        """`renew`, retried like every store call (renewing under our token twice changes nothing more)."""
        faults.call(self.engine, lambda: self.renew(lease), "renew")

    def holder(self, sync: str) -> dict[str, Any] | None:
        """The lease of `sync` as held now (token, host, pid, acquired_at, expires_at as aware
        datetimes; expired or not), or None (the monitors' `never_finished`)."""

        def read() -> dict[str, Any] | None:
            t = schema.leases
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(t).where(t.c.sync == sync)).mappings().first()
            return None if row is None else holder_of(dict(row))

        return faults.call(self.engine, read, "lease")


def holder_of(row: dict[str, Any]) -> dict[str, Any]:
    """A lease row as `Leases.holder` hands it out (times as aware datetimes)."""
    return {
        "token": row["token"],
        "host": row["host"],
        "pid": row["pid"],
        "acquired_at": unstamp(row["acquired_at"]),
        "expires_at": unstamp(row["expires_at"]),
    }


# ------------------------------------------------------------ the module form (store.leases)


def acquire(store: Store, sync: str, ttl: dt.timedelta) -> Lease:
    """Take the lease of `sync` or raise LeaseHeld naming the holder (`Leases.acquire`)."""
    return store.leases.acquire(sync, ttl)


def release(store: Store, lease: Lease) -> None:
    store.leases.release(lease)


def held(store: Store, sync: str, ttl: dt.timedelta) -> contextlib.AbstractContextManager[Lease]:
    """The lease for the `with` block, released after it (store failures retried)."""
    return store.leases.held(sync, ttl)


def renew(store: Store, lease: Lease) -> None:
    """Extend the lease by its TTL, or raise LeaseLost when another run holds it now."""
    store.leases.renew(lease)


def renew_retried(store: Store, lease: Lease) -> None:
    store.leases.renew_retried(lease)
