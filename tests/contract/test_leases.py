"""Contract: leases (acquire, renew, release, expiry and takeover), in the port form
(`store.leases`) and the module form of state/lease.py."""

from __future__ import annotations

import datetime as dt

import pytest

from mapsync import errors
from mapsync.state import lease as lease_module
from mapsync.state.ports import Store

TTL = dt.timedelta(minutes=5)


def test_a_held_lease_refuses_a_second_holder_naming_the_first(store: Store) -> None:
    first = store.leases.acquire("s", TTL)
    with pytest.raises(errors.LeaseHeld, match=r"sync s is running in pid \d+ on .+ since .+ \(lease until"):
        store.leases.acquire("s", TTL)
    other = store.leases.acquire("t", TTL)  # per sync
    assert first.token != other.token and (first.sync, first.ttl) == ("s", TTL)


def test_release_frees_the_lease_and_only_its_own(store: Store) -> None:
    first = store.leases.acquire("s", TTL)
    store.leases.release(first)
    second = store.leases.acquire("s", TTL)
    store.leases.release(first)  # a stale token releases nothing
    with pytest.raises(errors.LeaseHeld):
        store.leases.acquire("s", TTL)
    store.leases.release(second)
    store.leases.acquire("s", TTL)


def test_an_expired_lease_is_taken_over_and_its_runs_fail(store: Store) -> None:
    old = store.leases.acquire("s", dt.timedelta(seconds=-1))
    run_id = store.start_run("s", "run", "test", old.token)
    finished = store.start_run("s", "run", "test", old.token)
    store.finish_run(finished, "success")
    new = store.leases.acquire("s", TTL)
    assert new.token != old.token
    run = store.run(run_id)
    assert (run["status"], run["failure_class"]) == ("failed", "tool")
    assert "lease was taken over" in run["message"] and run["finished_at"] is not None
    assert store.run(finished)["status"] == "success"
    # the old holder can neither renew nor release the new holder's lease
    with pytest.raises(errors.LeaseLost, match="lease lost"):
        store.leases.renew(old)
    with pytest.raises(errors.LeaseLost):
        store.leases.renew_retried(old)
    store.leases.release(old)
    with pytest.raises(errors.LeaseHeld):
        store.leases.acquire("s", TTL)


def test_renew_extends_an_expired_lease_while_nobody_took_it(store: Store) -> None:
    short = store.leases.acquire("s", dt.timedelta(seconds=-1))
    store.leases.renew(type(short)(short.sync, short.token, TTL))
    with pytest.raises(errors.LeaseHeld):
        store.leases.acquire("s", TTL)
    store.leases.renew_retried(short)  # renewed into the past again: expired
    store.leases.acquire("s", TTL)


def test_held_releases_after_the_block_also_on_error(store: Store) -> None:
    with store.leases.held("s", TTL) as lease:
        assert lease.sync == "s"
        with pytest.raises(errors.LeaseHeld):
            store.leases.acquire("s", TTL)
    with pytest.raises(RuntimeError), store.leases.held("s", TTL):
        raise RuntimeError("boom")
    store.leases.acquire("s", TTL)


def test_the_module_form_asks_the_port(store: Store) -> None:
    with lease_module.held(store, "s", TTL) as lease:
        lease_module.renew(store, lease)
        lease_module.renew_retried(store, lease)
        with pytest.raises(errors.LeaseHeld):
            lease_module.acquire(store, "s", TTL)
    again = lease_module.acquire(store, "s", TTL)
    lease_module.release(store, again)
    store.leases.acquire("s", TTL)


def test_holder_shows_the_lease_as_held_and_none_once_released(store: Store) -> None:
    assert store.leases.holder("s") is None
    lease = store.leases.acquire("s", TTL)
    held = store.leases.holder("s")
    assert held is not None and held["token"] == lease.token and held["pid"]
    expires = held["expires_at"]
    assert expires.tzinfo is not None and abs(expires - held["acquired_at"] - TTL) < dt.timedelta(seconds=1)
    store.leases.renew(lease)
    renewed = store.leases.holder("s")
    assert renewed is not None and renewed["expires_at"] >= expires
    store.leases.release(lease)
    assert store.leases.holder("s") is None
