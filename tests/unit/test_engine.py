"""The engine loop over in-memory parts: isolation of bad records, systemic failures, the key
ledger, record errors, leases and the cursor audit. Each test runs on the real StateStore on
SQLite and on the MemoryStore (state/memory.py; the contract suite, tests/contract/, holds it to
the SQL store's semantics); a test that reaches into the store's tables runs on SQLite only."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors, records
from mapsync.state import lease as leases
from mapsync.state import report, schema, values
from mapsync.state.memory import MemoryStore
from mapsync.state.ports import Store
from mapsync.state.store import Counts, StateStore
from mapsync.testing import fakes


@dataclasses.dataclass
class World:
    engine: fakes.MemoryEngine
    source: fakes.MemorySource
    dest: fakes.MemoryDestination
    store: Any  # a StateStore or a MemoryStore (both: port `Store`)

    def errors(self, include_resolved: bool = True) -> dict[records.Key, dict[str, Any]]:
        rows = report.record_errors(self.store, "c", include_resolved, 1000)
        return {tuple(values.decode(r["key"])): r for r in rows}

    def runs(self) -> list[dict[str, Any]]:
        return list(reversed(report.runs(self.store, "c", 1000)))

    def sent(self) -> list[records.Key]:
        """Destination keys of every call that went through, in order."""
        return [k for call in self.dest.calls if call.outcome == "ok" for k in call.keys]


def _row(i: int, version: int | None = None, name: str | None = None) -> dict[str, Any]:
    return {"id": i, "name": name or f"name {i}", "status": "A", "version": i if version is None else version}


@pytest.fixture(params=["sqlite", "memory"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., World]]:
    stores: list[Store] = []

    def build(n: int = 10, batch: int = 4, **spec: Any) -> World:
        folder = tmp_path / f"world{len(stores)}"
        folder.mkdir()
        loaded = fakes.sheet(
            {
                "c": {
                    "key": {"from": "id", "to": "ref"},
                    "fields": {"nm": "name"},
                    "delivery": {"batch": batch},
                    **spec,
                }
            },
            folder,
        )
        store: Store = fakes.state_store(folder) if request.param == "sqlite" else MemoryStore()
        stores.append(store)
        source = fakes.MemorySource([_row(i) for i in range(1, n + 1)])
        dest = fakes.MemoryDestination()
        return World(fakes.MemoryEngine(loaded, store, {"c": (source, dest)}), source, dest, store)

    yield build
    for store in stores:
        store.close()


# --------------------------------------------------------------------------- the happy path


def test_seed_delivers_every_row_and_records_the_run(make: Callable[..., World]) -> None:
    w = make(n=10, batch=4)
    out = w.engine.run("c", "seed")
    assert out.status == "success"
    assert w.dest.rows == {(i,): {"ref": i, "nm": f"name {i}"} for i in range(1, 11)}
    assert [len(c.keys) for c in w.dest.calls] == [4, 4, 2]
    assert out.counts == Counts(read=10, written=10)
    (run,) = w.runs()
    assert (run["status"], run["kind"], run["read"], run["written"], run["rejected"]) == (
        "success",
        "seed",
        10,
        10,
        0,
    )
    cursors = w.store.cursors("c")
    assert cursors["seed"]["status"] == "done"
    assert cursors["watermark"] == 10
    assert w.store.ledger_count("c") == 10


def test_a_run_before_the_seed_refuses_instead_of_starting_from_zero(make: Callable[..., World]) -> None:
    w = make()
    with pytest.raises(errors.StateError, match=r"has not been seeded: run `mapsync seed` first"):
        w.engine.run("c")
    assert w.dest.calls == []
    # recorded as a failed run of class `unseeded`, so `status` does not show an earlier success
    assert [(r["kind"], r["status"], r["failure_class"]) for r in w.runs()] == [("run", "failed", "unseeded")]


# --------------------------------------------------------------------------- one bad record


def test_per_record_rejections_never_stop_the_batch(make: Callable[..., World]) -> None:
    w = make(n=10, batch=10)
    w.dest.reject(2, 9, message="account 2/9 is locked")
    out = w.engine.run("c", "seed")
    assert out.status == "partial"
    assert sorted(w.dest.rows) == [(i,) for i in (1, 3, 4, 5, 6, 7, 8, 10)]
    assert len(w.dest.calls) == 1  # rejected individually, nothing to split
    assert (out.counts.written, out.counts.rejected) == (8, 2)
    errs = w.errors()
    assert set(errs) == {(2,), (9,)}
    assert errs[(2,)]["message"] == "account 2/9 is locked"
    assert errs[(2,)]["rule"] == "destination"
    assert errs[(2,)]["attempts"] == 1
    assert w.store.ledger_count("c") == 8
    assert set(w.store.ledger("c", [(2,), (3,)])) == {(3,)}


def test_a_mapping_rejection_names_field_and_rule_and_the_batch_goes_on(make: Callable[..., World]) -> None:
    w = make(n=6, batch=6, fields={"nm": "name", "st": {"from": "status", "map": {"A": 1, "I": 0}}})
    w.source.upsert({**_row(4), "status": "X"})
    out = w.engine.run("c", "seed")
    assert out.status == "partial"
    assert sorted(w.dest.rows) == [(1,), (2,), (3,), (5,), (6,)]
    assert all(k != (4,) for c in w.dest.calls for k in c.keys)  # never reached the destination
    err = w.errors()[(4,)]
    assert (err["field"], err["rule"]) == ("st", "map")
    assert "'X'" in err["message"] and "`st`" in err["message"]
    assert out.samples[0].key == (4,)


@pytest.mark.parametrize("n", [2, 3, 8, 17, 64, 100])
def test_a_refused_batch_is_split_to_isolate_the_bad_record(make: Callable[..., World], n: int) -> None:
    w = make(n=n, batch=n)
    bad = n // 2 + 1
    w.dest.poison(bad)
    out = w.engine.run("c", "seed")
    assert sorted(w.dest.rows) == [(i,) for i in range(1, n + 1) if i != bad]
    assert set(w.errors()) == {(bad,)}
    assert w.errors()[(bad,)]["message"].startswith("destination refused the record:")
    assert (out.counts.written, out.counts.rejected) == (n - 1, 1)
    # one call for the batch, then two per halving: at most 2·log2(n) extra
    assert len(w.dest.calls) <= 1 + 2 * math.ceil(math.log2(n))
    assert sorted(w.sent()) == sorted(w.dest.rows)  # every good record written exactly once


def test_two_bad_records_in_one_batch_are_both_isolated(make: Callable[..., World]) -> None:
    w = make(n=32, batch=32)
    w.dest.poison(3, 30)
    w.engine.run("c", "seed")
    assert set(w.errors()) == {(3,), (30,)}
    assert len(w.dest.rows) == 30
    assert len(w.dest.calls) <= 1 + 2 * 2 * math.ceil(math.log2(32))


# --------------------------------------------------------------------------- systemic failures


@pytest.mark.parametrize(
    ("exc", "failure_class"),
    [
        (
            errors.PermanentError("sync c: destination portal refuses every write: permission denied"),
            "destination",
        ),
        (
            errors.TransientError("sync c: destination portal unavailable after 4 attempts: timeout"),
            "destination",
        ),
    ],
    ids=["permanent", "transient"],
)
def test_a_systemic_failure_stops_the_run_and_keeps_the_cursor(
    make: Callable[..., World], exc: errors.MapsyncError, failure_class: str
) -> None:
    w = make(n=10, batch=2)
    w.dest.fail_with(exc, after=2)  # two batches go through, then everything fails
    out = w.engine.run("c", "seed")
    assert out.status == "failed"
    assert out.message == str(exc)
    assert out.failure_class == failure_class
    (run,) = w.runs()
    assert (run["status"], run["message"], run["failure_class"]) == ("failed", str(exc), failure_class)
    assert (run["read"], run["written"]) == (4, 4)  # the good batches are counted, nothing more
    # the cursor stops after the last good batch; nothing of the failed batch is recorded
    assert w.store.cursors("c")["seed"] == {"status": "running", "after": [4]}
    assert w.store.ledger_count("c") == 4
    assert w.errors() == {}  # a systemic failure is one message, not a record error per row
    assert [c.outcome for c in w.dest.calls] == ["ok", "ok", "failed"]  # no splitting, no retry storm

    w.dest.heal()
    again = w.engine.run("c", "seed")  # resumes after the last committed key
    assert again.status == "success"
    assert sorted(k for c in w.dest.calls[3:] for k in c.keys) == [(i,) for i in range(5, 11)]
    assert len(w.dest.rows) == 10


def test_a_systemic_failure_mid_run_keeps_the_watermark(make: Callable[..., World]) -> None:
    w = make(n=4, batch=2)
    w.engine.run("c", "seed")
    w.source.upsert(*[_row(i) for i in range(5, 11)])
    w.dest.fail_with(errors.TransientError("timeout"), after=1)
    out = w.engine.run("c")
    assert out.status == "failed"
    cursors = w.store.cursors("c")
    assert cursors["watermark"] == 4  # not moved
    assert cursors["position"] == {"after": [5, 5]}  # batch (4 unchanged, 5) committed
    w.dest.heal()
    assert w.engine.run("c").status == "success"
    cursors = w.store.cursors("c")
    assert (cursors["watermark"], cursors["position"]) == (10, None)
    assert sorted(w.dest.rows) == [(i,) for i in range(1, 11)]
    assert sorted(w.sent()) == [(i,) for i in range(1, 11)]  # each row sent once


def test_a_source_failure_stops_the_run_without_touching_the_cursor(make: Callable[..., World]) -> None:
    w = make(n=4)
    w.engine.run("c", "seed")
    before = w.store.cursors("c")
    w.source.fail_with(errors.TransientError("sync c: reading the source failed: connection reset"))
    out = w.engine.run("c")
    assert (out.status, out.message) == ("failed", "sync c: reading the source failed: connection reset")
    assert w.store.cursors("c") == before


# --------------------------------------------------------------------------- the key ledger


def test_unchanged_rows_are_skipped_on_the_next_run(make: Callable[..., World]) -> None:
    w = make(n=10, batch=4)
    w.engine.run("c", "seed")
    calls = len(w.dest.calls)
    out = w.engine.run("c", "seed", again=True)  # re-reads every row
    assert out.counts == Counts(read=10, skipped=10)
    assert len(w.dest.calls) == calls  # nothing sent


def test_a_new_version_with_the_same_content_is_skipped_but_remembered(make: Callable[..., World]) -> None:
    w = make(n=3)
    w.engine.run("c", "seed")
    w.source.upsert(_row(2, version=20), _row(3, version=21, name="renamed"))
    out = w.engine.run("c")
    assert (out.counts.read, out.counts.skipped, out.counts.written) == (2, 1, 1)  # 2 same content, 3 new
    assert w.dest.rows[(3,)]["nm"] == "renamed"
    assert w.store.ledger("c", [(2,)])[(2,)].version == 20  # no re-send of 2 after an overlap either
    assert w.sent()[-1:] == [(3,)]


def test_rows_at_the_stored_watermark_are_reread_and_only_new_ones_sent(make: Callable[..., World]) -> None:
    w = make(n=3)
    w.engine.run("c", "seed")
    w.source.upsert(_row(7, version=3))  # appears later at the very watermark timestamp
    out = w.engine.run("c")
    assert (out.counts.read, out.counts.skipped, out.counts.written) == (2, 1, 1)
    assert (7,) in w.dest.rows


def test_deletes_follow_the_delete_policy(make: Callable[..., World]) -> None:
    hard = make(n=3, deletes={"policy": "hard"})
    hard.engine.run("c", "seed")
    hard.source.delete(2, version=5)
    out = hard.engine.run("c")
    assert (out.counts.deleted, sorted(hard.dest.rows)) == (1, [(1,), (3,)])

    soft = make(n=3, deletes={"policy": "disable", "field": "active", "value": 0})
    soft.engine.run("c", "seed")
    soft.source.delete(2, version=5)
    soft.engine.run("c")
    assert soft.dest.rows[(2,)] == {"ref": 2, "nm": "name 2", "active": 0}


# --------------------------------------------------------------------------- record errors


def test_a_record_error_resolves_when_the_key_is_delivered_later(make: Callable[..., World]) -> None:
    w = make(n=5)
    w.dest.reject(3)
    w.engine.run("c", "seed")
    assert w.errors(include_resolved=False)[(3,)]["resolved_at"] is None
    w.dest.heal()
    w.source.upsert(_row(3, version=6, name="fixed"))
    out = w.engine.run("c")
    assert out.status == "success"
    assert w.dest.rows[(3,)]["nm"] == "fixed"
    assert w.errors(include_resolved=False) == {}
    assert w.errors()[(3,)]["resolved_at"] is not None


def test_attempts_count_up_on_repeated_failure(make: Callable[..., World]) -> None:
    w = make(n=5)
    w.dest.reject(3, message="locked")
    w.engine.run("c", "seed")
    first = w.errors()[(3,)]
    for version in (6, 7):
        w.source.upsert(_row(3, version=version))
        assert w.engine.run("c").status == "partial"
    err = w.errors()[(3,)]
    assert err["attempts"] == 3
    assert err["first_seen"] == first["first_seen"]
    assert err["last_seen"] > first["last_seen"]
    assert values.decode(err["version"]) == 7
    assert err["resolved_at"] is None


def test_run_counts_add_up_across_batches(make: Callable[..., World]) -> None:
    w = make(n=12, batch=5, fields={"nm": "name", "st": {"from": "status", "map": {"A": 1}}})
    w.source.upsert({**_row(6), "status": "Z"})  # mapping rejection
    w.dest.reject(11)  # destination rejection
    seed = w.engine.run("c", "seed")
    assert seed.counts == Counts(read=12, written=10, rejected=2)
    w.source.upsert(_row(1, version=13, name="one"), _row(2, version=14))  # 1 changed, 2 same content
    run = w.engine.run("c")
    # read: 12 (at the watermark, unchanged) + 1 + 2; skipped: 12 and 2; written: 1
    assert run.counts == Counts(read=3, written=1, skipped=2)
    for out in (seed, run):
        stored = w.store.run(out.run_id or 0)
        assert {f: stored[f] for f in ("read", "written", "skipped", "rejected")} == {
            "read": out.counts.read,
            "written": out.counts.written,
            "skipped": out.counts.skipped,
            "rejected": out.counts.rejected,
        }


# --------------------------------------------------------------------------- leases and audit


def test_a_commit_with_a_stolen_lease_raises_lease_lost(make: Callable[..., World]) -> None:
    w = make()
    mine = leases.acquire(w.store, "c", dt.timedelta(seconds=-1))  # expires at once
    run_id = w.store.start_run("c", "run", "test", mine.token)
    thief = leases.acquire(w.store, "c", dt.timedelta(minutes=5))  # takes the expired lease over
    assert thief.token != mine.token

    def commit(token: str) -> None:
        w.store.commit(
            sync="c",
            token=token,
            run_id=run_id,
            delivered=[records.Delivered((1,), 1, "h", "[1]")],
            rejected=[],
            cursors={"watermark": 99},
            counts=Counts(read=1, written=1),
            lease_ttl=dt.timedelta(minutes=5),
        )

    with pytest.raises(errors.LeaseLost, match="lease lost"):
        commit(mine.token)
    assert w.store.cursors("c") == {}
    assert w.store.ledger_count("c") == 0
    assert w.store.run(run_id)["status"] == "failed"  # the takeover failed the old holder's run
    commit(thief.token)
    assert w.store.cursors("c") == {"watermark": 99}


@pytest.mark.parametrize("make", ["sqlite"], indirect=True)  # it changes the leases table
def test_a_run_whose_lease_is_stolen_mid_batch_commits_nothing(make: Callable[..., World]) -> None:
    w = make(n=4, batch=4)

    def steal(_recs: list[records.Mapped]) -> None:
        with w.store.engine.begin() as conn:
            conn.execute(sa.update(schema.leases).where(schema.leases.c.sync == "c").values(token="thief"))

    w.dest.on_call = steal
    out = w.engine.run("c", "seed")
    assert out.status == "failed"
    assert out.message is not None and "lease lost" in out.message
    assert w.store.ledger_count("c") == 0
    assert w.store.cursors("c")["seed"] == {"status": "running", "after": None}
    # once the thief is gone, the re-send is absorbed by the idempotent destination
    with w.store.engine.begin() as conn:
        conn.execute(sa.delete(schema.leases))
    w.dest.on_call = None
    before = dict(w.dest.rows)
    assert w.engine.run("c", "seed").status == "success"
    assert w.dest.rows == before
    assert w.store.ledger_count("c") == 4


def test_a_second_run_of_a_sync_is_refused_while_the_first_holds_the_lease(
    make: Callable[..., World],
) -> None:
    w = make()
    with leases.held(w.store, "c", dt.timedelta(minutes=5)), pytest.raises(errors.LeaseHeld):
        w.engine.run("c", "seed")
    assert w.dest.calls == []


def test_every_cursor_change_appends_an_audit_row(make: Callable[..., World]) -> None:
    w = make(n=10, batch=4)
    w.engine.run("c", "seed")
    w.source.upsert(_row(11), _row(12))
    w.engine.run("c")
    w.engine.run("c")  # nothing new
    audit = list(reversed(report.audit(w.store, "c", 1000)))
    seed_rows = [a for a in audit if a["name"] == "seed"]
    assert len(seed_rows) == 1 + 3 + 1  # started, three batches, done
    assert [values.decode(a["new_value"])["after"] for a in seed_rows[1:4]] == [[4], [8], [10]]
    # each name's rows form an unbroken chain ending at the current value, and only real changes
    current = w.store.cursors("c")
    for name in {a["name"] for a in audit}:
        chain = [a for a in audit if a["name"] == name]
        assert chain[0]["old_value"] is None
        for before, after in itertools.pairwise(chain):
            assert after["old_value"] == before["new_value"]
        assert all(a["old_value"] != a["new_value"] for a in chain)
        assert values.decode(chain[-1]["new_value"]) == current.get(name)
        assert all(a["run_id"] is not None for a in chain)
    watermarks = [values.decode(a["new_value"]) for a in audit if a["name"] == "watermark"]
    assert watermarks == [10, 12]


# --------------------------------------------------------------------------- opening the state


def test_a_missing_state_store_refuses_to_open(tmp_path: Path) -> None:
    with pytest.raises(errors.StateError, match="does not exist"):
        StateStore.open("sqlite:///state/missing.db", tmp_path, create=False)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("create", [False, True])
def test_a_corrupt_state_file_gives_state_error(tmp_path: Path, create: bool) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(errors.StateError, match="unreadable"):
        StateStore.open("sqlite:///state.db", tmp_path, create=create)
    assert path.read_bytes() == bytes(range(256)) * 64  # left as it was, for forensics


def test_a_database_without_mapsync_tables_is_not_a_state_store(tmp_path: Path) -> None:
    sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}").connect().close()
    with pytest.raises(errors.StateError, match="no mapsync tables"):
        StateStore.open("sqlite:///other.db", tmp_path, create=False)


def test_a_daemons_engine_refuses_a_run_on_state_seeded_as_another_sync(make: Callable[..., World]) -> None:
    """`same_sync` (the daemon's engines): under the lease, a state whose seed stored another
    identity of the sync is refused (IdentityChanged, a failed run of class config)."""
    from mapsync.sheet import identity

    w = make()
    assert w.engine.run("c", "seed").ok
    w.engine.same_sync = True
    assert w.engine.run("c").ok  # seeded under this very sheet
    w.store.set_cursors("c", {identity.CURSOR: "0123456789abcdef"}, None)
    with pytest.raises(errors.IdentityChanged, match="seed --sync c --again"):
        w.engine.run("c")
    assert w.runs()[-1]["status"] == "failed" and w.runs()[-1]["failure_class"] == "config"
    w.engine.same_sync = False  # a one-off command's engine: as before
    assert w.engine.run("c").ok
