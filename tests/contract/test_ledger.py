"""Contract: the key ledger (lookups, deleted entries, live scan, page comparison, owners) and the
lease-fenced batch commit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal

import pytest

from mapsync import errors, records
from mapsync.state.data import Counts, Lease
from mapsync.state.ledger import DELETED_HASH, LOOKUP_CHUNK
from mapsync.state.ports import Store
from tests.contract.conftest import begin, commit, delivered, rejected

HEX_A, HEX_B = "a" * 32, "b" * 32


def test_commit_then_lookup_keeps_versions_exactly_and_the_last_of_a_key_wins(store: Store) -> None:
    lease, run_id = begin(store)
    moment = dt.datetime(2026, 1, 1, 10, 0, 2, 123456)  # noqa: DTZ001 (a naive source column)
    commit(
        store,
        lease,
        run_id,
        delivered=[
            delivered(("a", 1), moment, "h1", "d1"),
            delivered(("b", 2), decimal.Decimal("1.50"), "h2", None),
            delivered(("a", 1), moment + dt.timedelta(seconds=1), "h3", "d1"),  # later in the batch
        ],
    )
    found = store.ledger("s", [("a", 1), ("b", 2), ("c", 3)])
    assert set(found) == {("a", 1), ("b", 2)}
    assert found[("a", 1)].version == moment + dt.timedelta(seconds=1)
    assert (found[("a", 1)].hash, found[("a", 1)].dest_id, found[("a", 1)].deleted) == ("h3", "d1", False)
    assert found[("b", 2)].version == decimal.Decimal("1.50") and found[("b", 2)].dest_id is None
    assert store.ledger_count("s") == 2
    assert store.ledger("other", [("a", 1)]) == {}  # per sync


def test_a_lookup_of_more_keys_than_one_statement_takes_finds_each(store: Store) -> None:
    """Lookups go in statements of `LOOKUP_CHUNK` keys: every chunk's keys are found, keys of
    other syncs and missing keys are not, and a key text with quotes and commas is bound as it is."""
    n = 2 * LOOKUP_CHUNK + 7
    lease, run_id = begin(store)
    commit(
        store,
        lease,
        run_id,
        delivered=[delivered((f"k'{i},", i), i, f"h{i}", None) for i in range(n) if i % 3],
    )
    wanted = [(f"k'{i},", i) for i in range(n)]
    found = store.ledger("s", wanted)
    assert set(found) == {k for k in wanted if k[1] % 3}
    assert all(found[k].version == k[1] and found[k].hash == f"h{k[1]}" for k in found)
    assert store.ledger("other", wanted[:10]) == {}


def test_deleted_entries_are_kept_but_not_live(store: Store) -> None:
    lease, run_id = begin(store)
    commit(
        store,
        lease,
        run_id,
        delivered=[
            delivered(1, 1, "h1"),
            delivered(2, 2, "h2", op="delete"),  # a hard delete
            delivered(3, 3, DELETED_HASH),  # a delete written as an update (`disable`)
        ],
    )
    assert store.ledger("s", [(2,)])[(2,)].deleted is True
    assert store.ledger_count("s") == 2  # entries not deleted (a `disable` is not `deleted`)
    assert store.live_count("s") == 1  # neither kind of delete is live
    page = store.ledger_page("s", ["[1]", "[2]", "[3]", "[4]"])
    assert page == {"[1]": ("1", False), "[2]": ("2", True), "[3]": ("3", True)}
    # delivered again: live again
    commit(store, lease, run_id, delivered=[delivered(2, 4, "h4")])
    assert store.live_count("s") == 2 and store.ledger("s", [(2,)])[(2,)].deleted is False


def test_live_scan_pages_the_live_keys(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, delivered=[delivered(i, i * 10, f"h{i}") for i in range(1, 8)])
    commit(store, lease, run_id, delivered=[delivered(7, 71, "x", op="delete")])
    pages = list(store.live_scan("s", 4, versions=True))
    assert [len(p) for p in pages] == [4, 2]
    assert sorted(tuple(row) for p in pages for row in p) == sorted(
        (f"[{i}]", str(i * 10)) for i in range(1, 7)
    )
    keys_only = [tuple(row) for p in store.live_scan("s", 100, versions=False) for row in p]
    assert sorted(keys_only) == sorted((f"[{i}]",) for i in range(1, 7))
    assert list(store.live_scan("empty", 10, versions=True)) == []


@pytest.mark.parametrize("hex_wide", [True, False], ids=["in-store", "fetched"])
def test_compare_page_names_the_keys_to_send(store: Store, hex_wide: bool) -> None:
    a, b = (HEX_A, HEX_B) if hex_wide else ("ha", "hb")
    lease, run_id = begin(store)
    commit(
        store,
        lease,
        run_id,
        delivered=[delivered(1, a, "c1"), delivered(2, a, "c2"), delivered(3, a, "c3", op="delete")],
    )
    texts = ["[1]", "[2]", "[3]", "[4]"]
    # hashed: a changed hash (2), a delivered delete (3, not live) and a new key (4)
    assert store.compare_page("s", texts, [a, b, a, a], hashed=True) == [(1, True), (2, False), (3, False)]
    # keys only: what the ledger does not hold live
    assert store.compare_page("s", texts, [None] * 4, hashed=False) == [(2, False), (3, False)]
    assert store.compare_page("s", [], [], hashed=True) == []


def test_owners_of_destination_ids_are_live_keys(store: Store) -> None:
    lease, run_id = begin(store)
    commit(
        store,
        lease,
        run_id,
        delivered=[delivered(("x", 1), 1, "h", "row-1"), delivered(("y", 2), 1, "h", "row-2", op="delete")],
    )
    assert store.ledger_owners("s", ["row-1", "row-2", "row-3"]) == {"row-1": ("x", 1)}


def test_commit_records_counts_cursors_and_returns_new_unmapped_values(store: Store) -> None:
    lease, run_id = begin(store)
    new = commit(
        store,
        lease,
        run_id,
        delivered=[delivered(1)],
        rejected=[rejected(2, "country", "country", "Untied States")],
        cursors={"watermark": 5},
        counts=Counts(read=2, written=1, rejected=1),
    )
    assert [(v["field"], v["rule"], v["value"], v["count"]) for v in new] == [
        ("country", "country", "Untied States", 1)
    ]
    run = store.run(run_id)
    assert (run["read"], run["written"], run["rejected"], run["skipped"]) == (2, 1, 1, 0)
    commit(store, lease, run_id, counts=Counts(read=3, skipped=3))
    run = store.run(run_id)
    assert (run["read"], run["written"], run["skipped"]) == (5, 1, 3)
    assert store.cursor("s", "watermark") == 5


# ------------------------------------------------------------------------- the fence


def test_a_commit_with_a_stale_token_is_refused_and_writes_nothing(store: Store) -> None:
    mine, run_id = begin(store, ttl=dt.timedelta(seconds=-1))  # expired at once
    commit(store, mine, run_id, delivered=[delivered(1)], cursors={"watermark": 1}, counts=Counts(read=1))
    thief = store.leases.acquire("s", dt.timedelta(minutes=5))  # takes the expired lease over
    before = store.run(run_id)
    with pytest.raises(errors.LeaseLost, match="lease lost"):
        commit(
            store,
            mine,
            run_id,
            delivered=[delivered(2)],
            rejected=[rejected(3, "country", "country", "Atlantis")],
            cursors={"watermark": 99},
            counts=Counts(read=2, written=1),
        )
    assert store.ledger("s", [(2,)]) == {}
    assert store.open_error_keys("s") == []
    assert store.unmapped_values("s") == []
    assert store.cursor("s", "watermark") == 1
    after = store.run(run_id)
    assert (after["read"], after["written"]) == (before["read"], before["written"]) == (1, 0)
    # the new holder commits
    run2 = store.start_run("s", "run", "test", thief.token)
    commit(store, thief, run2, cursors={"watermark": 99})
    assert store.cursor("s", "watermark") == 99


def test_a_commit_without_a_lease_is_refused(store: Store) -> None:
    lease, run_id = begin(store)
    store.leases.release(lease)
    with pytest.raises(errors.LeaseLost):
        commit(store, lease, run_id, delivered=[delivered(1)])
    assert store.ledger_count("s") == 0


def test_the_commit_renews_the_lease(store: Store) -> None:
    lease, run_id = begin(store, ttl=dt.timedelta(seconds=-1))  # expired …
    commit(store, Lease(lease.sync, lease.token, dt.timedelta(minutes=5)), run_id)  # … renewed
    with pytest.raises(errors.LeaseHeld):
        store.leases.acquire("s", dt.timedelta(minutes=5))


def _drift(store: Store) -> dict[str, tuple[str | None, str | None, bool]]:
    return {k: (dk, dg, gone) for page in store.drift_scan("s", 2) for k, dk, dg, gone in page}


def test_the_drift_pair_is_stored_at_delivery_and_kept_when_a_delivery_has_none(store: Store) -> None:
    lease, run_id = begin(store)
    with_drift = dataclasses.replace(delivered(1, 1, "h1"), drift=(HEX_A, HEX_B))
    commit(store, lease, run_id, delivered=[with_drift, delivered(2, 2, "h2"), delivered(3, 3, "h3")])
    assert _drift(store) == {
        "[1]": (HEX_A, HEX_B, False),
        "[2]": (None, None, False),
        "[3]": (None, None, False),
    }
    # seen again without a pair (a destination that computes none): the stored pair stays;
    # delivered again with one: replaced; a delete keeps the pair and is `gone`
    commit(
        store,
        lease,
        run_id,
        delivered=[
            delivered(1, 4, "h4"),
            dataclasses.replace(delivered(2, 5, "h5"), drift=(HEX_B, HEX_A)),
            dataclasses.replace(delivered(3, 6, "h6", op="delete"), drift=(HEX_A, HEX_A)),
        ],
    )
    assert _drift(store) == {
        "[1]": (HEX_A, HEX_B, False),
        "[2]": (HEX_B, HEX_A, False),
        "[3]": (None, None, True),
    }
    assert store.ledger("s", [(1,)])[(1,)].hash == "h4"
    row = store.attempts.ledger_row("s", (2,))  # what `mapsync trace` shows
    assert row is not None and (row["dkey"], row["digest"]) == (HEX_B, HEX_A)
    assert list(store.drift_scan("other", 10)) == []


def test_a_row_written_without_a_digest_clears_the_stored_pair(store: Store) -> None:
    """Review finding 2: a written upsert without a digest (`on_null: omit`, a row kept by
    `on_exists: skip`) kept the old pair, a false "changed" that a repair could not clear; it is
    stored undigested now, while a row seen unchanged (no pair at all) keeps its pair."""
    lease, run_id = begin(store)
    pair = (HEX_A, HEX_B)
    commit(
        store,
        lease,
        run_id,
        delivered=[dataclasses.replace(delivered(k, k, "h"), drift=pair) for k in (1, 2)],
    )
    cleared = dataclasses.replace(delivered(1, 3, "h3"), drift=records.NO_DRIFT)
    new = dataclasses.replace(delivered(3, 3, "h3"), drift=records.NO_DRIFT)
    commit(store, lease, run_id, delivered=[cleared, delivered(2, 3, "h"), new])
    assert _drift(store) == {
        "[1]": (None, None, False),
        "[2]": (HEX_A, HEX_B, False),
        "[3]": (None, None, False),
    }


def test_set_drift_backfills_entries_the_ledger_holds(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, delivered=[delivered(1, 1, "h1"), delivered(2, 2, DELETED_HASH)])
    entries = {"[1]": (HEX_A, HEX_B, "h1"), "[2]": (HEX_B, HEX_B, DELETED_HASH), "[9]": (HEX_A, HEX_A, "h")}
    assert store.set_drift("s", entries) == 2
    assert _drift(store) == {"[1]": (HEX_A, HEX_B, False), "[2]": (HEX_B, HEX_B, True)}
    assert store.set_drift("s", {}) == 0
    pages = list(store.drift_scan("s", 1))
    assert [len(p) for p in pages] == [1, 1]


def test_set_drift_stores_only_undigested_entries_still_at_the_backfilled_hash(store: Store) -> None:
    """Review finding 5: a backfill reads the whole source; an entry a run delivered again in the
    meantime (another hash, or a pair of its own) is left as the run stored it."""
    lease, run_id = begin(store)
    commit(
        store,
        lease,
        run_id,
        delivered=[
            delivered(1, 1, "h1"),
            delivered(2, 2, "h2-newer"),
            dataclasses.replace(delivered(3, 3, "h3"), drift=(HEX_B, HEX_B)),
        ],
    )
    entries = {"[1]": (HEX_A, HEX_A, "h1"), "[2]": (HEX_A, HEX_A, "h2"), "[3]": (HEX_A, HEX_A, "h3")}
    assert store.set_drift("s", entries) == 1
    assert _drift(store) == {
        "[1]": (HEX_A, HEX_A, False),
        "[2]": (None, None, False),
        "[3]": (HEX_B, HEX_B, False),
    }


@pytest.mark.parametrize("n", [4096, 16, 3])  # powers of 16: selected in the store; 3: filtered after
def test_drift_scan_keeps_only_the_entries_of_the_wanted_buckets(store: Store, n: int) -> None:
    lease, run_id = begin(store)
    dkeys = [f"{i:08x}" + "0" * 24 for i in (0x12345678, 0xABC00FFF, 0x00000ABC, 0xFFFFFFFF, 7, 4095 * 3)]
    # [5] delivered without a pair, then backfilled (set_drift fills undigested entries only)
    rows = [dataclasses.replace(delivered(i), drift=(dk, HEX_A)) for i, dk in enumerate(dkeys) if i != 5]
    commit(
        store, lease, run_id, delivered=[*rows, delivered(5), delivered(99, hash_=DELETED_HASH)]
    )  # 99: no dkey
    assert store.set_drift("s", {"[5]": (dkeys[5], HEX_B, "h")}) == 1
    everything = _drift(store)
    for wanted in ([0x678 % n, 0xFFF % n], [0xABC % n], [], list(range(n))):
        expected = {
            k: v for k, v in everything.items() if v[0] is not None and int(v[0][:8], 16) % n in wanted
        }
        got = {
            k: (dk, dg, gone) for page in store.drift_scan("s", 2, (n, wanted)) for k, dk, dg, gone in page
        }
        assert got == expected
    if n == 4096:  # the last 3 hex digits of dkey[:8]; not the first ones, not the tail of dkey
        got = {k for page in store.drift_scan("s", 10, (n, [0x678, 0xFFF])) for k, *_ in page}
        assert got == {"[0]", "[1]", "[3]"}
    assert [len(p) for p in store.drift_scan("s", 1, (n, [0xABC % n, 0x678 % n]))] == [1] * len(
        [dk for dk in dkeys if int(dk[:8], 16) % n in (0xABC % n, 0x678 % n)]
    )
    assert list(store.drift_scan("other", 10, (n, [1]))) == []
