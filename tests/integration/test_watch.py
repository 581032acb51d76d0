"""The watch loop on a real PostgreSQL state store with real SQL ends (PostgreSQL): a sync whose
destination table is dropped raises `failed_run` (class config) at once from `mapsync run` and
clears after the repair; a run that rejects records while it writes others raises
`success_with_rejections`; two watchers evaluating at once (two threads, two store connections)
raise each incident once and resolve it once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from mapsync import watch
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
state: {{url: "{state}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    changes: {{method: full}}
    fields: {{name: {{from: name, map: {{one: ONE, two: TWO, three: THREE}}, on_unknown: reject}}}}
"""
TABLE = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))"


def _open(state: str, tmp_path: Path) -> list[tuple[str, str | None, str]]:
    store = StateStore.open(state, tmp_path, create=False)
    try:
        return [(i.monitor, i.sync, i.failure_class) for i in store.incidents.open_incidents()]
    finally:
        store.close()


def test_a_real_failure_opens_then_clears_and_rejections_raise_the_silent_monitor(
    tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    src, dst, state = pg_database(), pg_database(), pg_database()
    h.execute(src, TABLE)
    h.execute(dst, TABLE)
    h.execute(src, "INSERT INTO items VALUES (1, 'one'), (2, 'two')")
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst, state=state))
    seeded = h.mapsync("seed", "sheet.yaml", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert _open(state, tmp_path) == []

    h.execute(dst, "DROP TABLE items")
    assert h.mapsync("run", "sheet.yaml", cwd=tmp_path).returncode != 0
    assert _open(state, tmp_path) == [("failed_run", "items", "config")]  # at once, by `run`

    h.execute(dst, TABLE)
    repaired = h.mapsync("run", "sheet.yaml", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert _open(state, tmp_path) == []

    h.execute(src, "INSERT INTO items VALUES (3, 'three'), (4, 'bogus')")
    partial = h.mapsync("run", "sheet.yaml", "--json", cwd=tmp_path)
    assert partial.returncode == 1  # partial: one record rejected
    # at once, by `run`: the rejection and the new unmapped value that caused it
    assert sorted(_open(state, tmp_path)) == [
        ("success_with_rejections", "items", "config"),
        ("unmapped_new", "items", "config"),
    ]
    store = StateStore.open(state, tmp_path, create=False)
    try:
        rejected, unmapped = sorted(store.incidents.open_incidents("items"), key=lambda i: i.monitor)
        assert rejected.numbers["rejected"] == 1 and rejected.numbers["written"] == 1
        assert unmapped.subject == "name" and unmapped.numbers == {"values": 1, "records": 1}
        assert "bogus" not in rejected.message + unmapped.message  # names and counts only
    finally:
        store.close()
    assert h.query(dst, "SELECT name FROM items WHERE id = 3") == [("THREE",)]


def test_two_watchers_at_once_raise_and_resolve_each_incident_once(
    tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    src, dst, state = pg_database(), pg_database(), pg_database()
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst, state=state))
    loaded = loader.load(tmp_path / "sheet.yaml")
    stores = [StateStore.open(state, tmp_path, create=True) for _ in range(2)]
    try:
        for round_ in range(3):
            stores[0].record_failed_run("items", "run", "cli", "destination", f"failure {round_}")
            opened = _race(loaded, stores)
            assert sum(len(r.opened) for r in opened) == 1
            assert len(stores[0].incidents.open_incidents()) == 1
            ok = stores[0].start_run("items", "run", "cli", "token")
            stores[0].finish_run(ok, "success")
            resolved = _race(loaded, stores)
            assert sum(len(r.resolved) for r in resolved) == 1
            assert stores[1].incidents.open_incidents() == []
        notices = stores[0].incidents.notifications()
        assert notices == []  # no alerts: in the sheet: only logged, nothing queued
        assert len(stores[0].incidents.incidents(sync="items")) == 3
    finally:
        for store in stores:
            store.close()


def _race(loaded: loader.LoadedSheet, stores: list[StateStore]) -> list[watch.Report]:
    barrier = threading.Barrier(len(stores))
    reports: list[watch.Report] = []
    failures: list[BaseException] = []

    def one(store: StateStore) -> None:
        barrier.wait()
        try:
            reports.append(watch.evaluate(loaded, store, ["items"]))
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == [] and len(reports) == len(stores)
    return reports
