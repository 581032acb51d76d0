"""Deletes for watermark syncs (`run --deletes`, `changes.deletes_every`) and the mass-delete
guard on SQLite, PostgreSQL and MariaDB: an emptied source table is refused with nothing deleted
(a failed run of class `guard` with the numbers, shown by `status`), `--force-deletes` lets it
through, the ratio's boundary, and the per-batch count for incrementally arriving deletes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors, records
from mapsync.guard import Guard, GuardTripped, before_send
from mapsync.sheet import models
from mapsync.state import schema
from mapsync.state.store import StateStore
from tests import helpers as h
from tests.integration.capture import test_snapshot
from tests.integration.capture.test_snapshot import SNAPSHOT, WATERMARK

sync = test_snapshot.sync  # the fixture

WATERMARK_DAILY = "{method: watermark, column: last_modified, lag: 0s, deletes_every: 0s}"


def _seeded(sync: Any, n: int = 10, **kwargs: Any) -> Any:
    s = sync(**kwargs)
    s.add([(i, f"n{i}", i) for i in range(1, n + 1)])
    assert s.engine("seed")["written"] == n
    return s


def test_watermark_run_deletes_finds_deleted_rows(sync: Any) -> None:
    s = _seeded(sync, changes=WATERMARK)
    h.execute(s.src, "DELETE FROM items WHERE id IN (3, 7, 8)")
    assert s.engine()["deleted"] == 0  # a watermark cannot see deletes by itself
    assert len(s.rows(s.dst)) == 10
    code, (report,) = s.cli("--deletes")
    assert code == 0, report
    assert (report["counts"]["deleted"], report["counts"]["written"]) == (3, 0)
    s.converged()
    assert s.engine(deletes=True)["deleted"] == 0  # delivered deletes are not sent again


def test_watermark_deletes_every(sync: Any) -> None:
    s = _seeded(sync, changes=WATERMARK_DAILY)
    h.execute(s.src, "DELETE FROM items WHERE id = 2")
    assert s.engine()["deleted"] == 1
    s.converged()
    store = StateStore.open("sqlite:///.mapsync/state.db", s.folder, create=False)
    try:
        assert store.cursors("items").get("deletes_at")  # when the check last ran
    finally:
        store.close()


def test_run_deletes_refused_for_a_method_that_cannot_look(sync: Any) -> None:
    s = _seeded(sync, changes="{method: full}", deletes="policy: ignore")  # (validate refuses others)
    with pytest.raises(errors.ConfigError, match="cannot look for deleted rows"):
        s.report(deletes=True)


@pytest.mark.parametrize("changes", ["snapshot", "watermark"])
def test_guard_refuses_an_emptied_source_and_force_lets_it_through(sync: Any, changes: str) -> None:
    s = _seeded(sync, changes=SNAPSHOT if changes == "snapshot" else WATERMARK)
    args = ("--deletes",) if changes == "watermark" else ()
    h.execute(s.src, "DELETE FROM items")
    code, (report,) = s.cli(*args)
    assert code == 1
    assert report["status"] == "failed" and report["failure_class"] == "guard"
    assert "returned 0 rows" in report["message"] and "10 live" in report["message"]
    assert report["counts"]["deleted"] == 0
    assert len(s.rows(s.dst)) == 10  # nothing deleted
    done = h.mapsync("status", "sheet.yaml", "--json", cwd=s.folder)
    (status,) = json.loads(done.stdout)
    last = status["last_run"]
    assert (last["status"], last["failure_class"], last["reason"]) == ("failed", "guard", "guard")
    assert "mass-delete guard" in last["message"]
    # `mapsync run` raised the guard's incident at once (the after-run monitors)
    firing = json.loads(h.mapsync("monitor", "sheet.yaml", "--json", cwd=s.folder).stdout)
    assert [r["monitor"] for r in firing["syncs"]["items"]] == ["guard_tripped"] and firing["opened"] == 0
    text = h.mapsync("status", "sheet.yaml", cwd=s.folder).stdout
    assert "items: guard failure: sync items: mass-delete guard: the source returned 0 rows" in text
    # the next run is refused again: the guard does not forget
    code, (report,) = s.cli(*args)
    assert code == 1 and report["failure_class"] == "guard"
    code, (report,) = s.cli(*args, "--force-deletes")
    assert code == 0, report
    assert report["counts"]["deleted"] == 10
    assert s.rows(s.dst) == []


def test_guard_ratio_boundary(sync: Any) -> None:
    s = _seeded(sync, ratio=0.3)
    h.execute(s.src, "DELETE FROM items WHERE id IN (1, 2, 3)")  # 3 of 10: exactly the ratio
    assert s.engine()["deleted"] == 3
    h.execute(s.src, "DELETE FROM items WHERE id IN (4, 5, 6)")  # 3 of 7 live: above 0.3
    report = s.report()
    assert (report.status, report.failure_class) == ("failed", "guard")
    assert "3 of 7" in (report.message or "") or "fewer than 70%" in (report.message or "")
    assert len(s.rows(s.dst)) == 7
    h.execute(s.src, "INSERT INTO items (id, name, qty) VALUES (4, 'n4', 4)")  # back to 2 of 7
    counts = s.engine()
    assert (counts["deleted"], counts["written"]) == (2, 0)  # 4 is still at the destination
    s.converged()


def test_guard_partial_read_message(sync: Any) -> None:
    s = _seeded(sync, n=20, ratio=0.9)
    h.execute(s.src, "DELETE FROM items WHERE id > 1")  # 1 row left of 20: fewer than 10 %
    report = s.report()
    assert report.failure_class == "guard"
    assert "returned 1 row(s), fewer than 10% of the 20 live" in (report.message or "")


def _guard(tmp_path: Path, ratio: float, force: bool = False) -> Guard:
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, create=True)
    g = Guard("items", store, models.DeletesConfig(policy="hard", max_delete_ratio=ratio), force=force)
    g.live = 10
    with store.engine.begin() as conn:  # keys 0..9 delivered: live in the ledger
        conn.execute(sa.delete(schema.ledger))
        conn.execute(
            sa.insert(schema.ledger),
            [
                {
                    "sync": "items",
                    "key": records.key_text((i,)),
                    "hash": "h",
                    "deleted": False,
                    "updated_at": "x",
                }
                for i in range(10)
            ],
        )
    return g


class _Capture:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard


def _batch(n_delete: int, n_upsert: int) -> tuple[list[records.Change], list[records.Mapped]]:
    changes = [records.Change("delete", (i,), None, {"id": i}) for i in range(n_delete)]
    changes += [records.Change("upsert", (100 + i,), None, {"id": 100 + i}) for i in range(n_upsert)]
    mapped = [records.Mapped(c.op, c.key, c.key, None, {}) for c in changes]
    return changes, mapped


def test_incremental_guard_counts_deletes_per_batch(tmp_path: Path) -> None:
    capture = _Capture(_guard(tmp_path, 0.5))
    before_send(capture.guard, *_batch(3, 5))  # upserts do not count
    before_send(capture.guard, *_batch(2, 0))  # 5 of 10: the boundary itself passes
    with pytest.raises(GuardTripped, match="reach 6 of 10") as exc:
        before_send(capture.guard, *_batch(1, 0))
    assert exc.value.failure_class == "guard"
    assert capture.guard.deleted == 5  # the refused batch is not counted as sent
    forced = _Capture(_guard(tmp_path, 0.5, force=True))
    before_send(forced.guard, *_batch(10, 0))
    ignored = _Capture(Guard("items", capture.guard.store, models.DeletesConfig(policy="ignore")))
    before_send(ignored.guard, *_batch(10, 0))  # `ignore` sends no delete: nothing to guard


def test_deletes_of_keys_not_live_in_the_ledger_do_not_count(tmp_path: Path) -> None:
    capture = _Capture(_guard(tmp_path, 0.1))
    changes = [records.Change("delete", (i,), None, {"id": i}) for i in (100, 101, 102)]
    before_send(capture.guard, changes, [records.Mapped("delete", c.key, c.key, None, {}) for c in changes])
    assert capture.guard.deleted == 0  # never delivered: deleting them removes nothing
    with pytest.raises(GuardTripped, match="reach 2 of 10"):
        before_send(capture.guard, *_batch(2, 0))  # live keys still count


def test_an_inbox_delete_of_an_unknown_key_does_not_block_the_inbox(tmp_path: Path) -> None:
    """Two live rows; deletes for two keys never delivered and an upsert behind them: the run
    goes through (it used to trip the guard, "2 of 2 live rows", and block every later item)."""
    from tests.integration import test_webhooks as wh

    dest = f"sqlite:///{tmp_path / 'portal.db'}"
    h.execute(dest, "CREATE TABLE products (sku TEXT PRIMARY KEY, nm TEXT)")
    sheet = wh._sheet(tmp_path, "sqlite:///portal.db")
    assert h.mapsync("seed", str(sheet), "--sync", "items", cwd=tmp_path, env=wh.ENV).returncode == 0
    wh._post_all(
        sheet,
        [
            ("d1", {"op": "delete", "key": {"sku": "NEVER-1"}}),
            ("d2", {"op": "delete", "key": {"sku": "NEVER-2"}}),
            ("u1", {"op": "upsert", "key": {"sku": "N1"}, "data": {"descr": "new"}}),
        ],
    )
    ran = h.mapsync("run", str(sheet), "--sync", "items", "--json", cwd=tmp_path, env=wh.ENV)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sorted(h.query(dest, "SELECT sku FROM products")) == [("N1",), ("S1",), ("S2",)]
    assert {r[2] for r in wh._inbox_rows(tmp_path)} == {"processed"}
