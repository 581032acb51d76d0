"""The change-log method on MariaDB: row-based binlog read as a replica (mysql-replication).

Real server, real CLI processes. Nothing is created on the server, so there is nothing to drop;
each test works in a database of its own, and the binlog reader filters on it. Each test reads
the binlog as a replica `server_id` of its own: tests run in parallel (xdist workers, other runs on
the same server), and the server cuts a replica's connection when another connects with its id.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.capture.binlog import at_or_after
from tests import changelog_world as w
from tests import helpers as h
from tests.conftest import REQUIRED

pytestmark = [pytest.mark.changelog, pytest.mark.mariadb]


def _unusable(url: str) -> str | None:
    have = {k.lower(): str(v).upper() for k, v in h.query(url, "SHOW GLOBAL VARIABLES LIKE 'binlog_%'")}
    have.update({k.lower(): str(v).upper() for k, v in h.query(url, "SHOW GLOBAL VARIABLES LIKE 'log_bin'")})
    for name, want in (("log_bin", "ON"), ("binlog_format", "ROW"), ("binlog_row_image", "FULL")):
        if have.get(name) != want:
            return f"MariaDB {name} is {have.get(name)}, the binlog method needs {want}"
    return None


@pytest.fixture
def world(
    mariadb_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    src = mariadb_database()
    reason = _unusable(src)
    if reason:
        if "mariadb" in REQUIRED:
            pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
        pytest.skip(reason)
    dst = sqlite_database()
    w.build(src, dst)
    path = w.sheet(tmp_path, src, dst, {"server_id": random.randint(3_000_000_000, 4_294_967_295)})
    yield {"src": src, "dst": dst, "sheet": path, "folder": tmp_path}


def _cli(world: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Any:
    # a crash point (env MAPSYNC_CRASH_AT) fires in-process (mapsync.crash); the crash matrix kills for real
    return h.mapsync(*args, str(world["sheet"]), cwd=world["folder"], env=env, process=False)


def _seeded(world: dict[str, Any]) -> None:
    w.ok(_cli(world, "changelog", "install"))
    w.ok(_cli(world, "seed"))
    assert w.dest_rows(world["dst"]) == w.source_rows(world["src"])


def _position(url: str) -> dict[str, Any]:
    row = h.query(url, "SHOW MASTER STATUS")[0]
    return {"file": row[0], "pos": int(row[1])}


def test_install_checks_and_status(world: dict[str, Any]) -> None:
    install = json.loads(w.ok(_cli(world, "changelog", "install", "--json")).stdout)[0]
    assert install["problems"] == [] and install["statements"] == []
    status = _cli(world, "changelog", "status", "--json")
    data = json.loads(status.stdout)[0]
    assert status.returncode == 0, status.stdout
    assert data["committed"] is None and data["current"]["pos"] > 0 and data["binlog_files"] >= 1
    before = _position(world["src"])
    w.ok(_cli(world, "seed"))
    data = json.loads(w.ok(_cli(world, "changelog", "status", "--json")).stdout)[0]
    # the seed recorded a position from its start: not before the test began, not past now
    assert at_or_after(data["committed"], before)
    assert at_or_after(_position(world["src"]), data["committed"])


def test_server_id_clash_is_refused(world: dict[str, Any]) -> None:
    server_id = int(h.query(world["src"], "SELECT @@server_id")[0][0])
    doc = json.loads(world["sheet"].read_text())
    doc["syncs"]["items"]["changes"]["server_id"] = server_id
    world["sheet"].write_text(json.dumps(doc))
    proc = _cli(world, "changelog", "install")
    assert proc.returncode == 2 and "server_id" in proc.stderr, proc.stderr


def test_inserts_updates_deletes_key_change_and_children(world: dict[str, Any]) -> None:
    src, dst = world["src"], world["dst"]
    h.execute(src, "INSERT INTO item_tags (item_id, tag) VALUES (1, 'red'), (2, 'blue')")
    _seeded(world)
    assert w.dest_tags(dst) == {(1, "red"), (2, "blue")}
    h.execute(src, "INSERT INTO items (id, name, amount) VALUES (100, 'new one', 1.5)")
    h.execute(src, "UPDATE items SET name = 'renamed', note = 'n' WHERE id = 3")
    h.execute(src, "DELETE FROM items WHERE id = 4")
    h.execute(src, "UPDATE items SET id = 200 WHERE id = 5")  # key change: 5 goes, 200 comes
    h.execute(  # one transaction, several rows, and child changes that re-send their parents
        src,
        "INSERT INTO items (id, name) VALUES (101, 'in txn')",
        "UPDATE items SET amount = 9.99 WHERE id IN (6, 7)",
        "DELETE FROM items WHERE id = 8",
        "INSERT INTO item_tags (item_id, tag) VALUES (1, 'green')",
        "DELETE FROM item_tags WHERE item_id = 2",
    )
    h.execute(src, "DELETE FROM items WHERE id = 9", "INSERT INTO items (id, name) VALUES (9, 'back')")
    h.execute(src, "INSERT INTO other (id, v) VALUES (1, 'x')")  # not watched
    report = json.loads(w.ok(_cli(world, "run", "--json")).stdout)[0]
    assert w.dest_rows(dst) == w.source_rows(src)
    assert w.dest_tags(dst) == w.source_tags(src) == {(1, "red"), (1, "green")}
    assert 5 not in w.dest_rows(dst) and 200 in w.dest_rows(dst)
    assert report["counts"]["deleted"] == 3  # 4, 5 (old key), 8
    again = json.loads(w.ok(_cli(world, "run", "--json")).stdout)[0]
    assert again["counts"]["read"] == 0


def test_changes_during_the_seed_are_not_lost(world: dict[str, Any]) -> None:
    src, dst = world["src"], world["dst"]
    marker = world["folder"] / "marker"
    env = {"MAPSYNC_CRASH_AT": "after_commit:1", "MAPSYNC_CRASH_MARKER": str(marker)}
    w.crashed(_cli(world, "seed", env=env), marker, "after_commit")
    assert len(w.dest_rows(dst)) == w.BATCH
    h.execute(src, "UPDATE items SET name = 'changed mid-seed' WHERE id IN (2, 20)")
    h.execute(src, "DELETE FROM items WHERE id = 3")
    h.execute(src, "INSERT INTO items (id, name) VALUES (150, 'added mid-seed')")
    w.ok(_cli(world, "seed"))
    w.ok(_cli(world, "run"))
    assert w.dest_rows(dst) == w.source_rows(src)
    assert w.dest_rows(dst)[2][0] == "changed mid-seed" and 3 not in w.dest_rows(dst)


@pytest.mark.slow
@pytest.mark.parametrize("point", w.CRASH_POINTS)
def test_binlog_position_survives_kill_9(world: dict[str, Any], point: str) -> None:
    """25 single-row transactions, batches of 10, killed in the 2nd batch: nothing lost, the
    rerun repeats the batch that reached the destination without its position committed, and
    nothing else."""
    src, dst, folder = world["src"], world["dst"], world["folder"]
    _seeded(world)
    base = h.writes(dst)
    before = w.cursor(folder)
    ids = list(range(1, w.N + 1))
    w.update_each(src, ids, "v2")
    marker = folder / "marker"
    env = {"MAPSYNC_CRASH_AT": f"{point}:2", "MAPSYNC_CRASH_MARKER": str(marker)}
    w.crashed(_cli(world, "run", env=env), marker, point)
    committed = w.cursor(folder)
    assert at_or_after(committed, before) and committed != before  # batch 1 (and 2) committed
    crashed, by_rerun, total = w.expected_writes(point, len(ids))
    assert h.writes(dst) - base == crashed
    rerun = json.loads(w.ok(_cli(world, "run", "--json")).stdout)[0]
    assert w.dest_rows(dst) == w.source_rows(src)
    assert rerun["counts"]["written"] == by_rerun
    assert h.writes(dst) - base == total
    assert at_or_after(w.cursor(folder), committed)


def test_purged_binlog_says_reseed(world: dict[str, Any]) -> None:
    """A committed position whose binlog file is gone (expired, purged) cannot be resumed."""
    import sqlite3

    from mapsync.state import values

    _seeded(world)
    conn = sqlite3.connect(world["folder"] / ".mapsync" / "state.db")
    try:
        conn.execute(
            "UPDATE mapsync_cursors SET value = ? WHERE sync = ? AND name = 'log'",
            (values.encode({"file": "mysql-bin.999999", "pos": 4}), w.SYNC),
        )
        conn.commit()
    finally:
        conn.close()
    proc = _cli(world, "run")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "purged" in text and "seed --again" in text, text
    status = _cli(world, "changelog", "status")
    assert status.returncode == 1 and "purged" in status.stdout
