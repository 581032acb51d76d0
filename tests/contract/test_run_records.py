"""Contract: the records one run touched (`History.run_records`, the dashboard's drill-down):
its delivery attempts and the record errors it left, one row per key, oldest first, limited."""

from __future__ import annotations

from mapsync.state.data import Attempt, Counts
from mapsync.state.ports import Store
from tests.contract.conftest import TTL, begin, delivered, rejected


def test_a_runs_records_come_from_its_attempts_and_errors(store: Store) -> None:
    lease, run_id = begin(store)
    store.commit(
        sync="s",
        token=lease.token,
        run_id=run_id,
        delivered=[delivered(1), delivered(2)],
        rejected=[rejected(3, message="name too long"), rejected(4, message="bad country")],
        cursors={},
        counts=Counts(),
        lease_ttl=TTL,
        attempts=[
            Attempt((1,), "delivered", 1, hash="h", dest_id="[1]"),
            Attempt((2,), "delivered", 1, hash="h", dest_id="[2]"),
            Attempt((3,), "rejected", 1, message="name too long", payload="{}"),
        ],
    )
    rows = store.history.run_records(run_id, 100)
    assert sorted((r["key"], r["outcome"], r["message"]) for r in rows) == [
        ("[1]", "delivered", None),
        ("[2]", "delivered", None),
        ("[3]", "rejected", "name too long"),
        ("[4]", "rejected", "bad country"),  # only a record error: no attempt row of it
    ]
    assert all(r["at"] for r in rows) and [r["at"] for r in rows] == sorted(r["at"] for r in rows)
    assert len(store.history.run_records(run_id, 2)) == 2
    assert store.history.run_records(run_id + 1000, 10) == []
    _, second = begin(store, "t")
    assert store.history.run_records(second, 10) == []
