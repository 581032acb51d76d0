"""The daemon in this process (a thread), against real databases: slots on time and recorded,
a run that overruns its interval makes a recorded skip, pause/resume/request are seen within a
poll, an outage of the destination is survived and caught up, a reload that changes a sync's
key is refused for that sync alone, and a sync seeded as another sync does not run.

The daemon as a real process (SIGTERM, exit codes) is in test_daemon_process.py."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mapsync.daemon import Daemon
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
state: {{lease_ttl: {ttl}}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: {key}}}
    fields: {fields}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 10}}
    schedule: {{{schedule}}}
{extra}
  others:
    from: {{connection: src, table: others}}
    to: {{connection: dst, table: others}}
    key: {{from: id, to: id}}
    fields: {{name: {other_field}}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    schedule: {{every: 1s}}
"""


def _stamp(delta: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=delta)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class World:
    """Two databases, a sheet over them, seeded; a daemon started on demand in a thread."""

    def __init__(
        self,
        tmp_path: Path,
        src: str,
        dst: str,
        *,
        schedule: str = "every: 1s",
        ttl: str = "10m",
        key: str = "id",
        other_field: str = "name",
        extra: str = "",
        fields: str = "{name: name}",
    ) -> None:
        self.tmp, self.src, self.dst = tmp_path, src, dst
        self.seen = dst  # where the test reads the destination (not through a fault proxy)
        ts = h.TS[h.dialect(src)]
        for table in ("items", "others"):
            h.execute(
                src, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified {ts})"
            )
            h.execute(
                dst, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(50), code VARCHAR(50))"
            )
        self.path = tmp_path / "sheet.yaml"
        self.extra, self.fields = extra, fields
        self.write(schedule=schedule, ttl=ttl, key=key, other_field=other_field)
        assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
        self.daemon: Daemon | None = None
        self.thread: threading.Thread | None = None
        self.code: int | None = None
        self.store: StateStore | None = None

    def write(self, **kw: str) -> None:
        values = {
            "schedule": "every: 1s",
            "ttl": "10m",
            "key": "id",
            "other_field": "name",
            "extra": self.extra,
            "fields": self.fields,
            **kw,
        }
        self.path.write_text(SHEET.format(src=self.src, dst=self.dst, **values))

    def open_store(self) -> StateStore:
        return StateStore.open("sqlite:///.mapsync/state.db", self.tmp, create=False)

    def start(self, poll: float = 0.1) -> Daemon:
        loaded = loader.load(self.path)
        self.store = self.open_store()
        self.daemon = Daemon(
            loaded,
            self.store,
            ["items", "others"],
            open_store=self.open_store,
            poll=dt.timedelta(seconds=poll),
        )

        def main() -> None:
            assert self.daemon is not None
            self.code = self.daemon.run()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        return self.daemon

    def stop(self) -> int | None:
        if self.daemon is not None and self.thread is not None:
            self.daemon.stop.set()
            self.thread.join(timeout=40)
            assert not self.thread.is_alive()
        if self.store is not None:
            self.store.close()
            self.store = None
        return self.code

    def put(self, table: str, key: int, name: str) -> None:
        h.execute(
            self.src,
            f"INSERT INTO {table} VALUES (:id, :name, :ts)",
            params={"id": key, "name": name, "ts": _stamp()},
        )

    def runs(self, sync: str = "items", where: str = "1=1") -> list[dict[str, Any]]:
        rows = h.query(
            f"sqlite:///{self.tmp / '.mapsync' / 'state.db'}",
            "SELECT kind, trigger, status, scheduled_at, started_at, lateness_ms, slot, worker, "
            "sheet_fingerprint, message, failure_class, written, coalesced FROM mapsync_runs "
            f"WHERE sync = :sync AND kind <> 'seed' AND {where} ORDER BY id",
            params={"sync": sync},
        )
        names = [
            "kind",
            "trigger",
            "status",
            "scheduled_at",
            "started_at",
            "lateness_ms",
            "slot",
            "worker",
            "fingerprint",
            "message",
            "failure_class",
            "written",
            "coalesced",
        ]
        return [dict(zip(names, r, strict=True)) for r in rows]

    def dest(self, table: str = "items") -> dict[int, str]:
        return {r[0]: r[1] for r in h.query(self.seen, f"SELECT id, name FROM {table}")}


@pytest.fixture
def world(tmp_path: Path, sqlite_database: Callable[[], str]) -> Any:
    made: list[World] = []

    def make(**kw: Any) -> World:
        made.append(
            World(
                tmp_path,
                kw.pop("src", None) or sqlite_database(),
                kw.pop("dst", None) or sqlite_database(),
                **kw,
            )
        )
        return made[-1]

    yield make
    for w in made:
        w.stop()


def test_slots_run_once_on_time_and_each_run_says_when_where_and_under_which_sheet(world: Any) -> None:
    w = world()
    w.put("items", 1, "one")
    w.start()
    assert h.wait_for(lambda: w.dest() == {1: "one"}), w.runs()
    w.put("items", 2, "two")
    assert h.wait_for(lambda: w.dest() == {1: "one", 2: "two"}), w.runs()
    assert h.wait_for(lambda: len(w.runs()) >= 3)
    assert w.stop() == 0
    runs = w.runs()
    scheduled = [r for r in runs if r["trigger"] == "schedule"]
    assert len(scheduled) >= 3
    for r in scheduled:
        at = dt.datetime.fromisoformat(r["scheduled_at"])
        assert at.microsecond == 0, r  # `every: 1s` slots sit on whole seconds (epoch-anchored)
        assert 0 <= r["lateness_ms"] < 2000, r  # started within 2 s of its slot
        assert r["slot"] == "run" and r["status"] in ("success", "stopped"), r
        assert r["worker"] and ":" in r["worker"] and r["fingerprint"], r
    slots = [r["scheduled_at"] for r in scheduled]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    assert sum(r["written"] for r in runs) == 2  # each row once


def test_a_slot_due_while_the_previous_run_still_runs_is_recorded_as_skipped(
    world: Any, pg_database: Callable[[], str]
) -> None:
    dst = pg_database()
    w = world(dst=dst)
    # every write into the destination takes 1.5 s: a run that writes overruns its 1 s interval
    h.execute(
        dst,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$",
    )
    h.execute(
        dst, "CREATE TRIGGER slow AFTER INSERT OR UPDATE ON items FOR EACH STATEMENT EXECUTE FUNCTION slow()"
    )
    w.put("items", 1, "one")
    w.start()
    assert h.wait_for(lambda: any(r["status"] == "skipped" for r in w.runs()), timeout=20), w.runs()
    w.stop()
    runs = w.runs()
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert skipped[0]["trigger"] == "schedule" and skipped[0]["slot"] == "run"
    assert "still running" in skipped[0]["message"]
    assert w.dest() == {1: "one"}
    # never two at once: each run started after the one before had finished
    started = [r for r in runs if r["status"] != "skipped"]
    slots = [r["scheduled_at"] for r in runs]
    assert len(slots) == len(set(slots))
    assert sum(r["written"] for r in started) == 1


def test_pause_resume_and_request_are_seen_within_a_poll(world: Any) -> None:
    w = world(schedule="cron: '0 0 1 1 *'")  # items: once a year; others: every second
    w.start()
    store = w.open_store()
    try:
        store.pause("others", "tester@host", "maintenance")
        assert h.wait_for(lambda: any(r["status"] == "skipped" for r in w.runs("others")))
        paused = [r for r in w.runs("others") if r["status"] == "skipped"]
        assert "paused by tester@host" in paused[0]["message"] and "maintenance" in paused[0]["message"]
        w.put("others", 1, "one")
        time.sleep(1.5)
        assert w.dest("others") == {}  # paused: nothing ran
        store.resume("others")
        assert h.wait_for(lambda: w.dest("others") == {1: "one"})

        w.put("items", 7, "seven")
        before = time.monotonic()
        store.request_run("items", "run", "tester@host")
        assert h.wait_for(lambda: w.dest() == {7: "seven"}, timeout=5)
        assert time.monotonic() - before < 3
        done = lambda: [r["status"] for r in w.runs() if r["trigger"] == "request"]  # noqa: E731
        assert h.wait_for(lambda: done() == ["success"]), done()  # the run row ends after the write
        assert h.wait_for(lambda: store.requests("items")[0].status == "done")
    finally:
        store.close()


def test_a_destination_outage_is_survived_recorded_and_caught_up(
    world: Any, pg_database: Callable[[], str], fault_proxy: Callable[..., Any]
) -> None:
    from mapsync.testing.fault_proxy import proxied_url

    real = pg_database()
    url = h.engine(real).url
    proxy = fault_proxy(url.host or "127.0.0.1", url.port or 5432)
    w = world(dst=proxied_url(real, proxy), ttl="6s")
    w.seen = real
    w.start()
    w.put("items", 1, "one")
    assert h.wait_for(lambda: w.dest() == {1: "one"})
    proxy.stall()  # blackhole: connections hang
    proxy.reset()
    w.put("items", 2, "two")
    w.put("items", 3, "three")
    assert h.wait_for(lambda: any(r["status"] == "failed" for r in w.runs()), timeout=30), w.runs()
    assert w.thread is not None and w.thread.is_alive()
    proxy.resume()
    assert h.wait_for(lambda: w.dest() == {1: "one", 2: "two", 3: "three"}, timeout=30), w.runs()
    assert w.stop() == 0
    failed = [r for r in w.runs() if r["status"] == "failed"]
    assert failed and all(r["failure_class"] in ("destination", "state") for r in failed), failed
    assert sum(r["written"] for r in w.runs()) == 3  # nothing doubled
    assert h.wait_for(lambda: w.dest("others") == {}, timeout=1)


def test_a_reload_that_changes_a_key_is_refused_for_that_sync_and_the_others_go_on(world: Any) -> None:
    w = world(schedule="every: 1s")
    d = w.start()
    w.put("items", 1, "one")
    assert h.wait_for(lambda: w.dest() == {1: "one"})
    # items: another destination key: refused; others: unchanged, goes on
    w.write(key="code")
    assert d.reload() is True
    assert d.workers["items"].loaded is not d.loaded  # items keeps its old configuration
    assert "items" in d.refused
    w.put("items", 2, "two")
    assert h.wait_for(lambda: w.dest() == {1: "one", 2: "two"})  # still runs, the old way
    assert h.query(w.dst, "SELECT COUNT(*) FROM items WHERE code IS NOT NULL")[0][0] == 0
    # an invalid sheet is refused whole: the daemon keeps what it has
    w.path.write_text("version: 1\nsyncs: {}\n")
    assert d.reload() is False
    assert d.workers["others"].thread.is_alive()


def test_a_sync_whose_state_belongs_to_another_configuration_does_not_run(world: Any) -> None:
    w = world()
    w.write(key="code")  # seeded with key id → id; the sheet now says id → code
    w.put("items", 1, "one")
    w.put("others", 1, "one")
    w.start()
    assert h.wait_for(lambda: w.dest("others") == {1: "one"})  # the other sync goes on
    assert h.wait_for(lambda: any(r["status"] == "skipped" for r in w.runs()))
    assert w.dest() == {}
    held = next(r for r in w.runs() if r["status"] == "skipped")
    assert "seed --sync items --again" in held["message"] and "state reset" in held["message"]


def test_a_source_outage_and_a_renamed_table_are_survived_and_caught_up(
    world: Any, pg_database: Callable[[], str], fault_proxy: Callable[..., Any]
) -> None:
    from mapsync.testing.fault_proxy import proxied_url

    real = pg_database()
    url = h.engine(real).url
    proxy = fault_proxy(url.host or "127.0.0.1", url.port or 5432)
    w = world(src=proxied_url(real, proxy), ttl="6s")
    w.src = real  # the test writes the source directly
    w.start()
    w.put("items", 1, "one")
    assert h.wait_for(lambda: w.dest() == {1: "one"})
    proxy.reset()
    proxy.stall()  # the source is away: new connections hear nothing
    w.put("items", 2, "two")
    assert h.wait_for(lambda: any(r["failure_class"] == "source" for r in w.runs()), timeout=30), w.runs()
    proxy.resume()
    assert h.wait_for(lambda: w.dest() == {1: "one", 2: "two"}, timeout=30), w.runs()
    # the destination table renamed away, then back
    h.execute(w.dst, "ALTER TABLE items RENAME TO items_away")
    w.put("items", 3, "three")
    assert h.wait_for(lambda: any(r["failure_class"] == "config" for r in w.runs()), timeout=15), w.runs()
    h.execute(w.dst, "ALTER TABLE items_away RENAME TO items")
    assert h.wait_for(lambda: w.dest() == {1: "one", 2: "two", 3: "three"}, timeout=30), w.runs()
    assert w.stop() == 0
    assert sum(r["written"] for r in w.runs()) == 3  # nothing lost, nothing doubled


def test_the_retry_slot_retries_record_errors_and_buries_them_after_max_attempts(world: Any) -> None:
    w = world(
        schedule="every: 1h",
        extra="    retry: {every: 1s, max_attempts: 2}",
        fields="{name: {from: name, map: {one: ONE}, on_unknown: reject}}",
    )
    w.put("items", 1, "one")
    w.put("items", 2, "two")  # not in the map: a record error
    assert h.mapsync("run", "sheet.yaml", "--sync", "items", cwd=w.tmp).returncode == 1
    assert w.dest() == {1: "ONE"}
    w.start()
    state = f"sqlite:///{w.tmp / '.mapsync' / 'state.db'}"
    dead = lambda: h.query(state, "SELECT attempts, dead_at FROM mapsync_record_errors WHERE sync = 'items'")  # noqa: E731
    assert h.wait_for(lambda: dead()[0][1] is not None, timeout=15), (dead(), w.runs())
    retries = [r for r in w.runs() if r["kind"] == "retry"]
    assert retries and all(r["slot"] == "retry" and r["trigger"] == "schedule" for r in retries)
    count = len(retries)
    time.sleep(2.5)  # more retry slots: a dead record is not sent again
    attempts = dead()[0][0]
    assert attempts == 2, dead()
    assert w.dest() == {1: "ONE"}
    assert len([r for r in w.runs() if r["kind"] == "retry"]) >= count
