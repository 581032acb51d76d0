"""An operator's retry and reexport requests (the dashboard's actions) carried out by the daemon
in this process, against real databases: a retry of one key retries only that key; a reexport
of a key sends that order again, and one without keys the failed orders only; a bad or unknown
key fails the request with its message, runs nothing and leaves the sync's schedule alone; a
request for a sync running in another process waits for that run to end."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mapsync.daemon import Daemon
from mapsync.sheet import loader
from mapsync.state import lease as leases
from mapsync.state.data import RunRequest
from mapsync.state.store import StateStore
from tests import helpers as h
from tests.export_world import World as ExportWorld
from tests.export_world import lines_of
from tests.integration.test_daemon import World

REJECTING = "{name: {from: name, map: {one: ONE}, on_unknown: reject}}"


@pytest.fixture
def world(tmp_path: Path, sqlite_database: Callable[[], str]) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(**kw: Any) -> World:
        made.append(World(tmp_path, sqlite_database(), sqlite_database(), **kw))
        return made[-1]

    yield make
    for w in made:
        w.stop()


def _finished(store: StateStore, request_id: int) -> RunRequest:
    def answer() -> RunRequest | None:
        found = [r for r in store.requests(limit=50) if r.id == request_id]
        return found[0] if found and found[0].status in ("done", "failed") else None

    assert h.wait_for(lambda: answer() is not None, timeout=30), store.requests(limit=50)
    done = answer()
    assert done is not None
    return done


def _errors(w: World) -> list[str]:
    state = f"sqlite:///{w.tmp / '.mapsync' / 'state.db'}"
    rows = h.query(
        state, "SELECT key FROM mapsync_record_errors WHERE sync = 'items' AND resolved_at IS NULL"
    )
    return sorted(r[0] for r in rows)


def _rejected_twice(world: Callable[..., World]) -> World:
    """Items 2 and 3 refused by the map (record errors), then fixed at the source."""
    w = world(schedule="every: 1h", fields=REJECTING)
    w.put("items", 1, "one")
    w.put("items", 2, "two")
    w.put("items", 3, "three")
    assert h.mapsync("run", "sheet.yaml", "--sync", "items", cwd=w.tmp).returncode == 1
    assert w.dest() == {1: "ONE"} and _errors(w) == ["[2]", "[3]"]
    h.execute(w.src, "UPDATE items SET name = 'one' WHERE id IN (2, 3)")
    return w


def test_a_retry_request_with_one_key_retries_only_that_key(world: Any) -> None:
    w = _rejected_twice(world)
    w.start()
    store = w.open_store()
    try:
        done = _finished(store, store.request_run("items", "retry", "tester@host", keys=["2"]))
        assert (done.status, done.message) == ("done", None) and done.run_id is not None
        assert w.dest() == {1: "ONE", 2: "ONE"}  # 3 was fixed too, but not asked for
        assert _errors(w) == ["[3]"]
        retries = [r for r in w.runs() if r["kind"] == "retry"]
        assert [(r["trigger"], r["written"]) for r in retries] == [("request", 1)]

        # one key known, one not: the known one is retried, the request says which was not found
        mixed = _finished(store, store.request_run("items", "retry", "tester@host", keys=["3", "42"]))
        assert mixed.status == "failed" and mixed.run_id is not None
        assert mixed.message == "not found (no open record error): 42"
        assert w.dest() == {1: "ONE", 2: "ONE", 3: "ONE"} and _errors(w) == []
    finally:
        store.close()


def test_a_bad_or_unknown_key_fails_the_request_with_its_message_and_runs_nothing(world: Any) -> None:
    w = _rejected_twice(world)
    w.start()
    store = w.open_store()
    try:
        before = len(w.runs())
        unknown = _finished(store, store.request_run("items", "retry", "tester@host", keys=["42", "43"]))
        assert (unknown.status, unknown.run_id) == ("failed", None)
        assert unknown.message == "not found (no open record error): 42, 43"
        no_keys = _finished(store, store.request_run("items", "retry", "tester@host", keys=[]))
        assert no_keys.status == "failed" and "no keys named" in (no_keys.message or "")
        not_export = _finished(store, store.request_run("items", "reexport", "tester@host", keys=["2"]))
        assert not_export.status == "failed"
        assert (
            not_export.message
            == "sync items is no export: a re-export needs `changes: {method: export_flag}`"
        )
        assert len(w.runs()) == before and len(_errors(w)) == 2  # nothing ran
        assert w.daemon is not None and not w.daemon.workers["items"].backing_off()  # not the sync's fault
        # the sync still takes the next good request at once
        good = _finished(store, store.request_run("items", "retry", "tester@host"))
        assert good.status == "done" and _errors(w) == []
    finally:
        store.close()


def test_a_request_for_a_sync_running_in_another_process_waits_for_that_run(world: Any) -> None:
    w = _rejected_twice(world)
    w.start()
    store = w.open_store()
    try:
        with leases.held(store, "items", dt.timedelta(minutes=5)):  # a `mapsync run` elsewhere
            asked = store.request_run("items", "retry", "tester@host", keys=["2"])
            assert h.wait_for(lambda: store.requests("items")[0].status == "taken", timeout=15)
            time.sleep(2.5)  # tried again and again: never answered while the lease is held
            (req,) = store.requests("items")
            assert (req.id, req.status) == (asked, "taken") and w.dest() == {1: "ONE"}
        done = _finished(store, asked)
        assert done.status == "done" and done.run_id is not None
        assert w.dest() == {1: "ONE", 2: "ONE"} and _errors(w) == ["[3]"]
    finally:
        store.close()


# --------------------------------------------------------------------------- reexport


@contextmanager
def _daemon(w: ExportWorld) -> Iterator[StateStore]:
    """A daemon over the export world's sheet (no schedule: it runs requests only)."""
    w.close()
    loaded = loader.load(w.folder / "sheet.yaml")
    own = StateStore.open("sqlite:///.mapsync/state.db", w.folder, create=False)
    daemon = Daemon(
        loaded,
        own,
        ["orders"],
        open_store=lambda: StateStore.open("sqlite:///.mapsync/state.db", w.folder, create=False),
        poll=dt.timedelta(seconds=0.1),
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    asking = StateStore.open("sqlite:///.mapsync/state.db", w.folder, create=False)
    try:
        yield asking
    finally:
        daemon.stop.set()
        thread.join(timeout=40)
        asking.close()
        own.close()
    assert not thread.is_alive()


@pytest.mark.postgres
def test_reexport_requests_send_the_named_order_or_the_failed_ones_only(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    w = ExportWorld(pg_database(), pg_database(), tmp_path)
    try:
        w.run("seed")
        w.order(1)
        w.order(2, zip="1234")  # refused by the ERP's CHECK: failed
        w.order(3)
        ran = w.run()
        assert ran.counts.written == 2 and ran.counts.rejected == 1
        erp = w.erp_orders()
        h.execute(
            w.erp,
            "DELETE FROM sales_order_lines WHERE portal_ref = 3",
            "DELETE FROM sales_order WHERE portal_ref = 3",
        )
        writes = w.erp_writes()
        with _daemon(w) as store:
            named = _finished(store, store.request_run("orders", "reexport", "tester@host", keys=["3"]))
            assert (named.status, named.message) == ("done", None) and named.run_id is not None
            now = w.erp_orders()
            assert sorted(now) == [1, 3] and now[1] == erp[1]  # 1 untouched, 3 rebuilt
            assert w.erp_lines()[3] == lines_of(3)
            assert w.states()[3] == (1, "success", None, now[3][0])
            assert w.erp_writes() == writes + 1

            # without keys: the failed ones only (order 2, fixed at the portal meanwhile)
            h.execute(w.portal, "UPDATE orders SET zip = '54321' WHERE order_no = 2")
            failed = _finished(store, store.request_run("orders", "reexport", "tester@host"))
            assert (failed.status, failed.message) == ("done", None)
            after = w.erp_orders()
            assert sorted(after) == [1, 2, 3] and after[2][2] == "54321"
            assert after[1] == now[1] and after[3] == now[3] and w.erp_writes() == writes + 2

            # a key the portal does not hold: failed, named
            gone = _finished(store, store.request_run("orders", "reexport", "tester@host", keys=["77"]))
            assert gone.status == "failed" and gone.message == "not found (not at the source): 77"
            assert w.erp_counts() == (3, 6)
            runs = [r for r in store.history.runs("orders", 50) if r["kind"] == "reexport"]
            assert {r["trigger"] for r in runs} == {"request"} and len(runs) == 3
    finally:
        w.close()
