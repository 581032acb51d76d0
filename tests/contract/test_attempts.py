"""Contract: delivery attempts (port `DeliveryAttempts`, `store.attempts`), written by the batch
commit in its transaction: the last 3 per key kept, the payload only for rejected and failed
attempts (a hash otherwise), nothing written under a lost lease; and the trace's per-key reads
(record error, ledger row, a bounded inbox search)."""

from __future__ import annotations

import json

import pytest

from mapsync import errors
from mapsync.state.attempts import KEEP, PAYLOAD_MAX
from mapsync.state.data import Attempt, Counts
from mapsync.state.ports import Store
from tests.contract.conftest import TTL, begin, commit, delivered, rejected


def _commit(store: Store, lease: object, run_id: int, tried: list[Attempt], **kw: object) -> None:
    store.commit(
        sync="s",
        token=lease.token,  # type: ignore[attr-defined]
        run_id=run_id,
        delivered=kw.get("delivered", []),  # type: ignore[arg-type]
        rejected=kw.get("rejected", []),  # type: ignore[arg-type]
        cursors={},
        counts=Counts(),
        lease_ttl=TTL,
        attempts=tried,
    )


def test_the_last_three_attempts_per_key_are_kept_newest_first(store: Store) -> None:
    lease, run_id = begin(store)
    store.attempts.record_attempts("other", None, [Attempt((1,), "delivered", 9, "o")])
    store.attempts.record_attempts("s", None, [Attempt((7,), "delivered", 9, "x")])
    for n in range(5):
        tried = [Attempt((1,), "delivered", n, f"h{n}", "d1"), Attempt(("x", 2), "delivered", n, f"g{n}")]
        _commit(store, lease, run_id, tried, delivered=[delivered(1, n, f"h{n}", "d1")])
    got = store.attempts.attempts("s", (1,))
    assert [a.version for a in got] == [4, 3, 2]  # KEEP = 3, newest first
    assert len(got) == KEEP
    assert [a.hash for a in got] == ["h4", "h3", "h2"]
    assert all(a.run_id == run_id and a.at and a.dest_id == "d1" and a.key == (1,) for a in got)
    assert [a.version for a in store.attempts.attempts("s", ("x", 2))] == [4, 3, 2]
    assert [a.hash for a in store.attempts.attempts("other", (1,))] == ["o"]  # per sync
    assert [a.hash for a in store.attempts.attempts("s", (7,))] == ["x"]  # keys not in a batch stay
    assert store.attempts.attempts("s", ("1",)) == []  # a text key is another key than an int


def test_payload_only_for_rejected_and_failed_attempts(store: Store) -> None:
    lease, run_id = begin(store)
    body = json.dumps({"values": {"nm": "Jane"}})
    tried = [
        Attempt((1,), "delivered", 1, "h1", "d1", None, body),  # a payload given: not kept
        Attempt((2,), "deleted", 1, "deleted", "d2", None, body),
        Attempt((3,), "rejected", 1, "h3", None, "too long (field nm, length)", body),
        Attempt((4,), "failed", 1, None, None, "refused", body),
    ]
    _commit(store, lease, run_id, tried, rejected=[rejected(3)])
    (one,) = store.attempts.attempts("s", (1,))
    assert (one.outcome, one.hash, one.payload) == ("delivered", "h1", None)
    (two,) = store.attempts.attempts("s", (2,))
    assert (two.outcome, two.payload) == ("deleted", None)
    (three,) = store.attempts.attempts("s", (3,))
    assert (three.outcome, three.payload, three.message) == ("rejected", body, "too long (field nm, length)")
    assert store.attempts.attempts("s", (4,))[0].payload == body
    big = "x" * (PAYLOAD_MAX + 50)
    store.attempts.record_attempts("s", None, [Attempt((5,), "rejected", None, None, None, "m", big)])
    (five,) = store.attempts.attempts("s", (5,))
    assert five.payload is not None and len(five.payload) < len(big) and five.payload.endswith("(cut)")
    assert five.run_id is None


def test_no_attempt_is_written_under_a_lost_lease(store: Store) -> None:
    lease, run_id = begin(store)
    store.leases.release(lease)
    with pytest.raises(errors.LeaseLost):
        _commit(store, lease, run_id, [Attempt((1,), "delivered", 1, "h1")], delivered=[delivered(1)])
    assert store.attempts.attempts("s", (1,)) == []


def test_trace_reads_record_error_ledger_row_and_inbox_items(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, delivered=[delivered(1, 7, "h1", "d1")], rejected=[rejected(2)])
    row = store.attempts.ledger_row("s", (1,))
    assert row is not None and (row["version"], row["hash"], row["dest_id"], row["deleted"]) == (
        7,
        "h1",
        "d1",
        False,
    )
    assert store.attempts.ledger_row("s", (2,)) is None
    err = store.attempts.record_error("s", (2,))
    assert err is not None and err["resolved_at"] is None and err["message"] == "too long"
    assert store.attempts.record_error("s", (1,)) is None
    for n in range(6):
        store.inbox.append("s", f"e{n}", json.dumps({"id": 100 + n % 2, "n": n}))
    store.inbox.append("t", "e9", json.dumps({"id": 101}))
    found = store.attempts.inbox_items("s", '"id": 101', scan=100, limit=2)
    assert [json.loads(f["payload"])["n"] for f in found] == [5, 3]  # newest first, bounded
    assert all(f["status"] == "new" for f in found)
    assert store.attempts.inbox_items("s", '"id": 101', scan=2, limit=10) != []  # the last 2 items
    assert len(store.attempts.inbox_items("s", '"id": 101', scan=2, limit=10)) == 1
    assert store.attempts.inbox_items("s", "100%", scan=100, limit=10) == []  # LIKE escaped


def test_reset_forgets_the_attempts_of_its_sync_only(store: Store) -> None:
    lease, run_id = begin(store)
    _commit(store, lease, run_id, [Attempt((1,), "delivered", 1, "h1")], delivered=[delivered(1)])
    store.attempts.record_attempts("t", None, [Attempt((1,), "rejected", 1, None, None, "no")])
    store.leases.release(lease)
    assert store.history.reset("s")["mapsync_attempts"] == 1
    assert store.attempts.attempts("s", (1,)) == []
    assert len(store.attempts.attempts("t", (1,))) == 1
