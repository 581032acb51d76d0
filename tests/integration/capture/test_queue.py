"""The trigger-fed change queue (`changes: {method: queue}`) on real SQLite, PostgreSQL, MariaDB:
collapsing, deletes, rejections and retries with backoff, kill -9 and the lease, concurrent
claims (SKIP LOCKED), ids committed out of order, purge beside an active run."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync.capture import queue_table as qt
from tests import helpers as h
from tests.queue_world import QUEUE, World


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(src: str, dst: str, changes: str = "backoff: 0s", batch: int = 10) -> World:
        made.append(World(src, dst, tmp_path, changes, batch))
        return made[-1]

    yield make
    for world in made:
        world.close()


def seeded(make_world: Callable[..., World], src: str, dst: str, n: int = 10, **kw: Any) -> World:
    """Triggers installed, `n` rows, seeded, and the queue rows of the inserts processed."""
    w = make_world(src, dst, **kw)
    w.install()
    w.add(*[(i, f"n{i}") for i in range(1, n + 1)])
    w.seed()
    first = w.engine()  # the seed's own inserts, queued by the triggers: all unchanged
    assert first["status"] == "success" and first["written"] == 0 and first["skipped"] == n
    assert w.dest() == w.source()
    return w


def by_key(w: World, key: str) -> list[dict[str, Any]]:
    return [r for r in w.queue() if r["record_key"].replace(" ", "") == key]


# --------------------------------------------------------------------------- every backend


def test_three_edits_are_one_delivery_of_the_latest(
    database: Callable[[], str], make_world: Callable[..., World]
) -> None:
    w = seeded(make_world, database(), database())
    before = w.writes()
    h.execute(w.src, *[f"UPDATE items SET name = 'v{v}' WHERE id = 4" for v in (1, 2, 3)])
    counts = w.engine()
    assert counts["status"] == "success" and counts["read"] == 1 and counts["written"] == 1
    assert w.writes() - before == 1  # one row written at the destination, not three
    assert w.dest()[4] == "v3"
    assert [r["sync_status"] for r in by_key(w, "[4]")[-3:]] == ["superseded", "superseded", "completed"]
    again = w.engine()
    assert again["read"] == 0 and w.writes() - before == 1


def test_deletes_reinserts_and_key_changes_end_as_the_source(
    database: Callable[[], str], make_world: Callable[..., World]
) -> None:
    w = seeded(make_world, database(), database())
    h.execute(
        w.src,
        "DELETE FROM items WHERE id = 5",
        "INSERT INTO items (id, name) VALUES (5, 'five again')",  # delete + re-insert: present
        "INSERT INTO items (id, name) VALUES (99, 'brief')",
        "DELETE FROM items WHERE id = 99",  # insert + delete: absent
        "DELETE FROM items WHERE id = 6",
        "UPDATE items SET id = 70 WHERE id = 7",  # a key change: delete 7, add 70
    )
    rows = w.queue()
    moved = [r for r in rows if r["record_key"] in ("[7]", "[70]") and r["sync_status"] == "new"]
    assert [(r["change_type"], r["record_key"]) for r in moved] == [("delete", "[7]"), ("add", "[70]")]
    assert "n7" in str(moved[0]["old_image"])  # the old image travels with the delete
    counts = w.engine()
    assert counts["status"] == "success", counts
    assert counts["deleted"] >= 2  # 6 and 7 (and 99, a no-op: it never reached the destination)
    assert w.dest() == w.source()
    assert 5 in w.dest() and w.dest()[5] == "five again" and 99 not in w.dest() and 70 in w.dest()
    assert set(w.statuses()) <= {"completed", "superseded"}


def test_rejection_marks_error_retries_then_gives_up(
    database: Callable[[], str], make_world: Callable[..., World]
) -> None:
    w = seeded(make_world, database(), database(), changes="max_retries: 2, backoff: 0s")
    h.execute(
        w.src, "UPDATE items SET name = 'bad' WHERE id = 2", "UPDATE items SET name = 'ok3' WHERE id = 3"
    )
    first = w.engine()
    assert first["status"] == "partial" and first["rejected"] == 1 and first["written"] == 1
    (row,) = [r for r in by_key(w, "[2]") if r["sync_status"] == "error"]
    assert row["retry_count"] == 1
    assert "no_bad" in row["error_message"] or "bad name refused" in row["error_message"]
    second = w.engine()  # due again (backoff 0s): retried once, fails again
    assert second["read"] == 1 and second["rejected"] == 1
    assert [r["retry_count"] for r in by_key(w, "[2]") if r["sync_status"] == "error"] == [2]
    third = w.engine()  # max_retries reached: no longer claimed
    assert third["read"] == 0 and third["status"] == "success"
    assert w.statuses()["error"] == 1 and w.dest()[2] == "n2" and w.dest()[3] == "ok3"
    # a later good change of the key is delivered and supersedes the given-up row
    h.execute(w.src, "UPDATE items SET name = 'good' WHERE id = 2")
    fixed = w.engine()
    assert fixed["written"] == 1 and w.dest()[2] == "good"
    assert [r["sync_status"] for r in by_key(w, "[2]")[-2:]] == ["superseded", "completed"]
    assert "error" not in w.statuses()


def test_backoff_waits_and_doubles(database: Callable[[], str], make_world: Callable[..., World]) -> None:
    w = seeded(make_world, database(), database(), changes="max_retries: 5, backoff: 1h")
    h.execute(w.src, "UPDATE items SET name = 'bad' WHERE id = 8")
    assert w.engine()["rejected"] == 1
    (row,) = [r for r in w.queue() if r["sync_status"] == "error"]
    wait = qt.parse(row["next_attempt_at"]) - qt.parse(row["claimed_at"])
    assert dt.timedelta(minutes=59) < wait < dt.timedelta(minutes=61)
    assert w.engine()["read"] == 0  # not due yet
    h.execute(w.src, f"UPDATE {QUEUE} SET next_attempt_at = created_at WHERE id = {row['id']}")
    assert w.engine()["rejected"] == 1  # due: retried
    (row,) = [r for r in w.queue() if r["sync_status"] == "error"]
    wait = qt.parse(row["next_attempt_at"]) - qt.parse(row["claimed_at"])
    assert row["retry_count"] == 2 and dt.timedelta(minutes=119) < wait < dt.timedelta(minutes=121)


def test_kill_9_after_delivery_resends_once_after_the_lease(
    database: Callable[[], str], make_world: Callable[..., World], tmp_path: Path
) -> None:
    w = seeded(make_world, database(), database(), changes="lease: 3s, backoff: 0s")
    base = w.writes()
    h.execute(
        w.src, "UPDATE items SET name = " + ("name || '+'" if w.dialect != "mysql" else "CONCAT(name, '+')")
    )
    marker = tmp_path / "crash.marker"
    env = {"MAPSYNC_CRASH_AT": "after_write", "MAPSYNC_CRASH_MARKER": str(marker)}
    done = h.mapsync("run", "sheet.yaml", cwd=w.folder, env=env, process=False)  # crash point in-process
    assert done.returncode == -9, done.stdout + done.stderr
    assert marker.read_text().split() == ["after_write:1"]
    assert w.writes() - base == 10 and w.dest() == w.source()  # delivered, never marked
    assert w.statuses() == {"completed": 10, "in-progress": 10}
    early = w.engine()  # within the lease the dead run's rows are left alone
    assert early["read"] == 0 and w.writes() - base == 10
    time.sleep(3.5)
    late = w.engine()
    assert late["status"] == "success" and late["read"] == 10 and late["written"] == 10
    assert w.writes() - base == 20  # re-sent exactly once
    assert w.dest() == w.source()
    assert w.statuses() == {"completed": 20}
    assert w.engine()["read"] == 0 and w.writes() - base == 20


def test_purge_beside_an_active_run_keeps_live_rows(
    database: Callable[[], str], make_world: Callable[..., World]
) -> None:
    w = seeded(make_world, database(), database(), n=20, changes="backoff: 1h, retention: 1h, archive: true")
    w.install()  # the archive table too
    h.execute(w.src, "UPDATE items SET name = 'bad' WHERE id = 1")  # → error
    assert w.engine()["rejected"] == 1
    h.execute(w.src, *[f"UPDATE items SET name = 'x{i}' WHERE id = {i}" for i in range(2, 9)])
    eng = h.engine(w.src)
    try:  # an active run: a claimed batch of 3, not yet marked; 4 rows stay new
        with eng.begin() as conn:
            active = qt.claim(
                conn,
                QUEUE,
                "items",
                limit=3,
                up_to=10**9,
                token="activerun",
                max_retries=5,
                lease=dt.timedelta(hours=1),
            )
        assert len(active) == 3
        # everything looks old, whatever its status: only the status may protect a row
        past = qt.stamp(conn, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        h.execute(w.src, f"UPDATE {QUEUE} SET created_at = :p, completed_at = :p", params={"p": past})
        live = {
            r["id"]: r["sync_status"]
            for r in w.queue()
            if r["sync_status"] in ("new", "in-progress", "error")
        }
        assert sorted(live.values()).count("in-progress") == 3 and "error" in live.values()
        final = {r["id"] for r in w.queue() if r["sync_status"] in ("completed", "superseded")}
        assert final
        done = w.cli("triggers", "purge", "sheet.yaml", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert {r["id"]: r["sync_status"] for r in w.queue()} == live
        archived = {int(r[0]) for r in h.query(w.src, f"SELECT id FROM {QUEUE}_archive")}
        assert archived == final
        # the active run finishes normally, and its rows are purged later
        with eng.begin() as conn:
            qt.mark(conn, QUEUE, "activerun", "completed", [r.id for r in active])
        assert {r["sync_status"] for r in w.queue() if r["id"] in {a.id for a in active}} == {"completed"}
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- concurrency


def _claim_pair(url: str, barrier_after_claim: bool) -> list[list[int]]:
    eng = h.engine(url)
    barrier = threading.Barrier(2, timeout=15)
    got: list[list[int]] = [[], []]
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            if not barrier_after_claim:
                barrier.wait()
            conn = qt.begin_claim(eng)
            try:
                rows = qt.claim(
                    conn,
                    QUEUE,
                    "items",
                    limit=10,
                    up_to=10**9,
                    token=f"w{n}",
                    max_retries=5,
                    lease=dt.timedelta(minutes=5),
                )
                got[n] = [r.id for r in rows]
                if barrier_after_claim:  # both claims are made while both transactions are open
                    barrier.wait()
                conn.commit()
            finally:
                conn.close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    eng.dispose()
    assert not failures, failures
    return got


@pytest.mark.parametrize(
    "backend",
    [pytest.param("pg", marks=pytest.mark.postgres), pytest.param("mariadb", marks=pytest.mark.mariadb)],
)
def test_two_workers_claim_disjoint_sets_skip_locked(
    backend: str, request: pytest.FixtureRequest, make_world: Callable[..., World]
) -> None:
    factory = request.getfixturevalue("pg_database" if backend == "pg" else "mariadb_database")
    w = make_world(factory(), factory())
    w.install()
    w.add(*[(i, f"n{i}") for i in range(1, 31)])
    a, b = _claim_pair(w.src, barrier_after_claim=True)
    assert a and b and not set(a) & set(b)
    assert len(a) == len(b) == 10
    tokens = {r["claim_token"] for r in w.queue() if r["sync_status"] == "in-progress"}
    assert tokens == {"w0", "w1"} and w.statuses() == {"in-progress": 20, "new": 10}


def test_two_workers_on_sqlite_are_serialised_and_disjoint(
    sqlite_database: Callable[[], str], make_world: Callable[..., World]
) -> None:
    w = make_world(sqlite_database(), sqlite_database())
    w.install()
    w.add(*[(i, f"n{i}") for i in range(1, 31)])
    a, b = _claim_pair(w.src, barrier_after_claim=False)
    assert a and b and not set(a) & set(b) and len(a) == len(b) == 10


@pytest.mark.parametrize(
    "backend",
    [pytest.param("pg", marks=pytest.mark.postgres), pytest.param("mariadb", marks=pytest.mark.mariadb)],
)
def test_ids_committed_out_of_order_are_not_skipped(
    backend: str,
    request: pytest.FixtureRequest,
    make_world: Callable[..., World],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The run beside the open transaction neither skips its row nor waits for it: on MariaDB
    (REPEATABLE READ) the release by claim token used to wait innodb_lock_wait_timeout (50 s)
    for the open transaction's queue row, then fail (only logged)."""
    factory = request.getfixturevalue("pg_database" if backend == "pg" else "mariadb_database")
    w = seeded(make_world, factory(), factory())
    eng = h.engine(w.src)
    try:
        with eng.connect() as slow:  # closed (rolled back) on a failure: no lock left for the teardown
            slow.begin()
            slow.execute(sa.text("INSERT INTO items (id, name) VALUES (100, 'slow')"))  # the smaller queue id
            w.add((101, "fast"))  # a larger queue id, committed first
            with caplog.at_level(logging.WARNING, logger="mapsync.capture.queue"):
                counts = w.engine()
            assert counts["written"] == 1 and 101 in w.dest() and 100 not in w.dest()
            assert [r.getMessage() for r in caplog.records if r.name == "mapsync.capture.queue"] == []
            slow.commit()
    finally:
        eng.dispose()
    ids = {r["record_key"]: r["id"] for r in w.queue()}
    assert ids["[100]"] < ids["[101]"]  # the queue ids really were committed out of order
    counts = w.engine()
    assert counts["written"] == 1 and w.dest()[100] == "slow"
    assert w.dest() == w.source() and set(w.statuses()) == {"completed"}


def test_a_stopped_run_hands_its_claim_back(
    sqlite_database: Callable[[], str], make_world: Callable[..., World]
) -> None:
    """The mass-delete guard stops the run after the claim: the rows are `new` again at once
    (not left `in-progress` until the lease ends), and the next run may take them."""
    w = seeded(make_world, sqlite_database(), sqlite_database(), changes="lease: 1h, backoff: 0s")
    h.execute(w.src, "DELETE FROM items WHERE id > 2")  # 8 of 10: beyond max_delete_ratio 0.5
    stopped = w.engine()
    assert stopped["status"] == "failed" and "mass-delete guard" in str(stopped["message"])
    assert w.statuses() == {"completed": 10, "new": 8}
    assert len(w.dest()) == 10  # nothing deleted
    eng = h.engine(w.src)
    try:  # claimable now, although the lease (1h) of the stopped run has not passed
        with eng.begin() as conn:
            again = qt.claim(
                conn,
                QUEUE,
                "items",
                limit=50,
                up_to=10**9,
                token="next",
                max_retries=5,
                lease=dt.timedelta(hours=1),
            )
    finally:
        eng.dispose()
    assert len(again) == 8


COMPOUND = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  parts:
    from: {{connection: src, table: parts}}
    to: {{connection: dst, table: parts}}
    key: {{from: [region, code], to: [region, code]}}
    fields: {{title: title}}
    changes: {{method: queue, backoff: 0s}}
    deletes: {{policy: hard}}
"""


def test_compound_text_keys_round_trip(database: Callable[[], str], tmp_path: Path) -> None:
    """Keys travel through the queue as JSON: compound, non-ASCII and quote-bearing text keys
    come back equal to the rows read from the source (else an update would look like a delete)."""
    src, dst = database(), database()
    for url in (src, dst):
        h.execute(
            url,
            "CREATE TABLE parts (region VARCHAR(10), code VARCHAR(20), title VARCHAR(40), PRIMARY KEY (region, code))",
        )
    (tmp_path / "sheet.yaml").write_text(COMPOUND.format(src=src, dst=dst))
    assert h.mapsync("triggers", "install", "sheet.yaml", cwd=tmp_path).returncode == 0
    keys = [("eu", "Müller-1"), ("eu", 'say "hi"'), ("us", "o'k"), ("us", "plain")]
    h.execute(
        src,
        "INSERT INTO parts VALUES (:r, :c, :t)",
        params=[{"r": r, "c": c, "t": f"{r}/{c}"} for r, c in keys],
    )
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    h.execute(
        src,
        "UPDATE parts SET title = 'changed' WHERE region = 'eu'",
        "DELETE FROM parts WHERE code = 'plain'",
    )
    done = h.mapsync("run", "sheet.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    # the seed's 4 inserts (unchanged), 2 edits, 1 delete; nothing taken for a delete by mistake
    assert report["counts"]["written"] == 2 and report["counts"]["deleted"] == 1
    rows = sorted(h.query(dst, "SELECT region, code, title FROM parts"))
    assert rows == sorted(h.query(src, "SELECT region, code, title FROM parts"))
    assert len(rows) == 3
