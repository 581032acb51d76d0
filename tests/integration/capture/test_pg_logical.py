"""The change-log method on PostgreSQL: logical decoding through a replication slot.

Real server, real CLI processes. Each test uses a slot of its own (`mapsync_t_…`), dropped by
the `slots` fixture even when the test fails: a slot holds WAL until it is dropped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync.capture.pg_logical import lsn_int
from tests import changelog_world as w
from tests import helpers as h
from tests.conftest import PG_URL, REQUIRED

pytestmark = [pytest.mark.changelog, pytest.mark.postgres]
PLUGINS = ["test_decoding", "wal2json"]


def _admin() -> sa.Engine:
    return sa.create_engine(h.engine(PG_URL).url, isolation_level="AUTOCOMMIT")


def _unusable(url: str, plugin: str) -> str | None:
    """Why logical decoding with `plugin` cannot run on this server (None: it can)."""
    eng = sa.create_engine(h.engine(url).url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            level = conn.execute(sa.text("SHOW wal_level")).scalar_one()
            if level != "logical":
                return f"PostgreSQL wal_level is {level}, not logical"
            probe = f"mapsync_t_probe_{uuid.uuid4().hex[:8]}"
            try:
                conn.execute(
                    sa.text("SELECT pg_create_logical_replication_slot(:s, :p, true)"),
                    {"s": probe, "p": plugin},
                )
            except sa.exc.DBAPIError as exc:
                return f"PostgreSQL cannot decode with {plugin}: {str(exc.orig).splitlines()[0]}"
            conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": probe})
    finally:
        eng.dispose()
    return None


# the whole matrix runs on test_decoding (the default plugin); wal2json, which a server may
# refuse (this project's test server allows only pgoutput and test_decoding), runs the
# end-to-end scenario only, skipped with the server's own reason where it is refused
@pytest.fixture(params=PLUGINS[:1])
def plugin(request: pytest.FixtureRequest, pg_database: Callable[[], str]) -> str:
    return str(request.param)


@pytest.fixture
def world(
    plugin: str, pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """Source (PostgreSQL) and destination (SQLite) built, a sheet with a slot of its own; the
    slot is dropped afterwards whatever happened."""
    src = pg_database()
    reason = _unusable(src, plugin)
    if reason:
        if "postgres" in REQUIRED and plugin == "test_decoding":
            pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
        pytest.skip(reason)
    dst = sqlite_database()
    w.build(src, dst)
    slot = f"mapsync_t_{uuid.uuid4().hex[:12]}"
    path = w.sheet(tmp_path, src, dst, {"slot": slot, "plugin": plugin})
    try:
        yield {"src": src, "dst": dst, "sheet": path, "slot": slot, "folder": tmp_path, "plugin": plugin}
    finally:
        eng = _admin()
        with eng.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s"
                ),
                {"s": slot},
            )
        eng.dispose()


def _slot(slot: str) -> tuple[str, str] | None:
    rows = h.query(
        PG_URL,
        "SELECT plugin, CAST(confirmed_flush_lsn AS text) FROM pg_replication_slots WHERE slot_name = :s",
        {"s": slot},
    )
    return (rows[0][0], rows[0][1]) if rows else None


def _cli(world: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Any:
    # a crash point (env MAPSYNC_CRASH_AT) fires in-process (mapsync.crash); the crash matrix kills for real
    return h.mapsync(*args, str(world["sheet"]), cwd=world["folder"], env=env, process=False)


def _seeded(world: dict[str, Any]) -> None:
    w.ok(_cli(world, "changelog", "install"))
    w.ok(_cli(world, "seed"))
    assert w.dest_rows(world["dst"]) == w.source_rows(world["src"])


# --------------------------------------------------------------------------- setup


def test_install_status_remove(world: dict[str, Any]) -> None:
    src, slot = world["src"], world["slot"]
    printed = w.ok(_cli(world, "changelog", "install", "--print"))
    assert "pg_create_logical_replication_slot" in printed.stdout
    assert "REPLICA IDENTITY FULL" in printed.stdout
    assert _slot(slot) is None, "--print must change nothing"
    missing = _cli(world, "changelog", "status")
    assert missing.returncode == 1 and "does not exist" in missing.stdout

    w.ok(_cli(world, "changelog", "install"))
    made = _slot(slot)
    assert made is not None and made[0] == world["plugin"]
    assert h.query(src, "SELECT relreplident FROM pg_class WHERE relname IN ('items', 'item_tags')") == [
        ("f",),
        ("f",),
    ]
    again = w.ok(_cli(world, "changelog", "install", "--json"))  # idempotent
    assert json.loads(again.stdout)[0]["statements"] == []
    status = json.loads(w.ok(_cli(world, "changelog", "status", "--json")).stdout)[0]
    assert status["slot"] == slot and status["warnings"] == [] and status["retained_wal_bytes"] >= 0

    w.ok(_cli(world, "changelog", "remove"))
    assert _slot(slot) is None


def test_status_warns_on_retained_wal(world: dict[str, Any]) -> None:
    doc = json.loads(world["sheet"].read_text())
    doc["syncs"]["items"]["changes"]["max_retained_wal"] = "1KB"
    world["sheet"].write_text(json.dumps(doc))
    w.ok(_cli(world, "changelog", "install"))
    h.execute(world["src"], "INSERT INTO other (id, v) SELECT g, 'x' FROM generate_series(1, 2000) g")
    status = _cli(world, "changelog", "status")
    assert status.returncode == 1
    assert "retains" in status.stdout and "max_retained_wal" in status.stdout


def test_run_without_slot_says_install(world: dict[str, Any]) -> None:
    proc = _cli(world, "seed")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text  # the run fails, with the fix in its message
    assert "mapsync changelog install" in text and "does not exist" in text
    assert w.dest_rows(world["dst"]) == {}


# --------------------------------------------------------------------------- changes arrive


@pytest.mark.parametrize("plugin", PLUGINS, indirect=True)
def test_inserts_updates_deletes_key_change_and_children(world: dict[str, Any]) -> None:
    src, dst = world["src"], world["dst"]
    h.execute(src, "INSERT INTO item_tags (item_id, tag) VALUES (1, 'red'), (2, 'blue')")
    _seeded(world)
    assert w.dest_tags(dst) == {(1, "red"), (2, "blue")}
    h.execute(src, "INSERT INTO items (id, name, amount) VALUES (100, 'new one', 1.5)")
    h.execute(src, "UPDATE items SET name = 'renamed', note = 'n' WHERE id = 3")
    h.execute(src, "DELETE FROM items WHERE id = 4")
    h.execute(src, "UPDATE items SET id = 200 WHERE id = 5")  # key change: 5 goes, 200 comes
    h.execute(  # one transaction, several rows, and a child change that re-sends its parent
        src,
        "INSERT INTO items (id, name) VALUES (101, 'in txn')",
        "UPDATE items SET amount = 9.99 WHERE id IN (6, 7)",
        "DELETE FROM items WHERE id = 8",
        "INSERT INTO item_tags (item_id, tag) VALUES (1, 'green')",
        "DELETE FROM item_tags WHERE item_id = 2",
    )
    h.execute(src, "DELETE FROM items WHERE id = 9", "INSERT INTO items (id, name) VALUES (9, 'back')")
    h.execute(src, "INSERT INTO other (id, v) VALUES (1, 'x')")  # not watched
    proc = w.ok(_cli(world, "run", "--json"))
    report = json.loads(proc.stdout)[0]
    assert w.dest_rows(dst) == w.source_rows(src)
    assert w.dest_tags(dst) == w.source_tags(src) == {(1, "red"), (1, "green")}
    assert 5 not in w.dest_rows(dst) and 200 in w.dest_rows(dst)
    assert report["counts"]["deleted"] == 3  # 4, 5 (old key), 8
    # a second run finds nothing new; the slot was confirmed up to the committed cursor
    again = json.loads(w.ok(_cli(world, "run", "--json")).stdout)[0]
    assert again["counts"]["read"] == 0
    committed = w.cursor(world["folder"])
    assert _slot(world["slot"])[1] == committed["lsn"]  # type: ignore[index]


def test_changes_during_the_seed_are_not_lost(world: dict[str, Any]) -> None:
    """The seed records the position first: rows changed while it runs come again after it."""
    src, dst = world["src"], world["dst"]
    w.ok(_cli(world, "changelog", "install"))
    marker = world["folder"] / "marker"
    env = {"MAPSYNC_CRASH_AT": "after_commit:1", "MAPSYNC_CRASH_MARKER": str(marker)}
    w.crashed(_cli(world, "seed", env=env), marker, "after_commit")
    assert len(w.dest_rows(dst)) == w.BATCH  # ids 1–10 delivered, the seed is half done
    h.execute(src, "UPDATE items SET name = 'changed mid-seed' WHERE id IN (2, 20)")  # done and to come
    h.execute(src, "DELETE FROM items WHERE id = 3")
    h.execute(src, "INSERT INTO items (id, name) VALUES (150, 'added mid-seed')")
    w.ok(_cli(world, "seed"))  # resumes after id 10
    w.ok(_cli(world, "run"))
    assert w.dest_rows(dst) == w.source_rows(src)
    assert w.dest_rows(dst)[2][0] == "changed mid-seed" and 3 not in w.dest_rows(dst)


def test_seed_waits_for_open_transactions_then_falls_back(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction open when the seed starts may have its commit before the recorded position
    yet be invisible to the seed; past the wait the seed takes the slot's own position, and the
    transaction, committed after the seed, still arrives."""
    from mapsync.capture import pg_logical
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore

    src, dst = world["src"], world["dst"]
    w.ok(_cli(world, "changelog", "install"))
    installed = _slot(world["slot"])
    assert installed is not None
    h.execute(src, "INSERT INTO other (id, v) VALUES (1, 'moves on')")
    monkeypatch.setattr(pg_logical, "SEED_WAIT", 0.5)
    eng = h.engine(src)
    try:
        with eng.connect() as open_txn:
            open_txn.execute(sa.text("INSERT INTO items (id, name) VALUES (300, 'open at seed start')"))
            loaded = loader.load(world["sheet"])
            store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
            engine = Engine(loaded, store)
            try:
                assert engine.run(w.SYNC, "seed").ok
            finally:
                engine.close()
                store.close()
            assert w.cursor(world["folder"]) == {"lsn": installed[1]}  # the fallback position
            open_txn.commit()
    finally:
        eng.dispose()
    assert 300 not in w.dest_rows(dst)
    w.ok(_cli(world, "run"))
    assert w.dest_rows(dst) == w.source_rows(src) and 300 in w.dest_rows(dst)


def test_lost_slot_needs_install_and_reseed(world: dict[str, Any]) -> None:
    """The operator's path after a slot was dropped: every step says what to do next."""
    src, dst = world["src"], world["dst"]
    _seeded(world)
    w.ok(_cli(world, "changelog", "remove"))
    h.execute(src, "UPDATE items SET name = 'while no slot' WHERE id = 1")  # not in any log
    gone = _cli(world, "run")
    assert gone.returncode == 1 and "changelog install" in gone.stdout + gone.stderr
    w.ok(_cli(world, "changelog", "install"))
    behind = _cli(world, "run")
    assert behind.returncode == 1 and "seed --again" in behind.stdout + behind.stderr
    assert w.dest_rows(dst)[1][0] != "while no slot"
    w.ok(_cli(world, "seed", "--again"))
    assert w.dest_rows(dst)[1][0] == "while no slot"
    h.execute(src, "UPDATE items SET name = 'after reseed' WHERE id = 2")
    w.ok(_cli(world, "run"))
    assert w.dest_rows(dst) == w.source_rows(src)


def test_seed_again_keeps_the_position(world: dict[str, Any]) -> None:
    """A re-seed of a healthy sync keeps its log position: changes from before it still come."""
    src, dst = world["src"], world["dst"]
    doc = json.loads(world["sheet"].read_text())
    doc["syncs"]["items"]["seed"] = {"where": "id <= 5"}
    world["sheet"].write_text(json.dumps(doc))
    w.ok(_cli(world, "changelog", "install"))
    w.ok(_cli(world, "seed"))
    before = w.cursor(world["folder"])
    h.execute(src, "UPDATE items SET name = 'outside seed.where' WHERE id = 20")
    w.ok(_cli(world, "seed", "--again"))  # reads ids 1-5 only
    assert w.cursor(world["folder"]) == before
    w.ok(_cli(world, "run"))
    assert w.dest_rows(dst)[20][0] == "outside seed.where"


def test_mass_delete_from_the_log_is_guarded(world: dict[str, Any]) -> None:
    """An emptied table arrives as deletes; the guard refuses them past max_delete_ratio and the
    position stays, so `--force-deletes` later sends them all."""
    src, dst = world["src"], world["dst"]
    _seeded(world)
    before = w.cursor(world["folder"])
    h.execute(src, "DELETE FROM items")  # one transaction, 25 deletes: batches of 10
    refused = _cli(world, "run")
    assert refused.returncode == 1 and "max_delete_ratio" in refused.stdout + refused.stderr
    assert len(w.dest_rows(dst)) >= w.N - w.BATCH  # at most the first batch went
    assert w.cursor(world["folder"]) == before  # the transaction's position was not committed
    w.ok(_cli(world, "run", "--force-deletes"))
    assert w.dest_rows(dst) == w.source_rows(src) == {}


# --------------------------------------------------------------------------- kill -9


@pytest.mark.slow
@pytest.mark.parametrize("point", w.CRASH_POINTS)
def test_slot_survives_kill_9(world: dict[str, Any], point: str) -> None:
    """25 single-row transactions, batches of 10, killed in the 2nd batch. Nothing is lost; the
    rerun repeats the batch that reached the destination without its position committed, and
    nothing else; the slot is never ahead of the committed cursor."""
    src, dst, folder = world["src"], world["dst"], world["folder"]
    _seeded(world)
    base = h.writes(dst)
    ids = list(range(1, w.N + 1))  # 25: batches of 10, 10, 5
    w.update_each(src, ids, "v2")
    marker = folder / "marker"
    env = {"MAPSYNC_CRASH_AT": f"{point}:2", "MAPSYNC_CRASH_MARKER": str(marker)}
    w.crashed(_cli(world, "run", env=env), marker, point)
    committed = w.cursor(folder)
    confirmed = _slot(world["slot"])[1]  # type: ignore[index]
    assert lsn_int(confirmed) <= lsn_int(committed["lsn"]), "slot confirmed past the committed cursor"
    crashed, by_rerun, total = w.expected_writes(point, len(ids))
    assert h.writes(dst) - base == crashed
    rerun = json.loads(w.ok(_cli(world, "run", "--json")).stdout)[0]
    assert w.dest_rows(dst) == w.source_rows(src)
    assert rerun["counts"]["written"] == by_rerun
    assert h.writes(dst) - base == total
    assert _slot(world["slot"])[1] == w.cursor(folder)["lsn"]  # type: ignore[index]
