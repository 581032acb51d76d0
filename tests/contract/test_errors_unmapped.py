"""Contract: record errors (opened by a rejection, resolved by a later delivery, noted gone) and
unmapped values (counted per distinct value, new ones returned once, resolved with their errors)."""

from __future__ import annotations

from mapsync.state.ports import Store
from mapsync.state.unmapped import GONE
from tests.contract.conftest import begin, commit, delivered, rejected


def _errors(store: Store, include_resolved: bool = False) -> dict[str, dict[str, object]]:
    return {e["key"]: e for e in store.history.record_errors("s", include_resolved, 100)}


def test_a_rejection_opens_an_error_and_a_delivery_resolves_it(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, rejected=[rejected(1, message="m" * 2500), rejected(("k", 2), "email")])
    assert store.open_error_keys("s") == [("k", 2), (1,)] or store.open_error_keys("s") == [(1,), ("k", 2)]
    assert store.open_error_keys("s", "email") == [("k", 2)]
    first = _errors(store)["[1]"]
    assert (first["field"], first["rule"], first["attempts"], first["run_id"]) == ("nm", "length", 1, run_id)
    assert len(str(first["message"])) == 2000 and first["resolved_at"] is None
    # rejected again: one more attempt, first seen kept
    run2 = store.start_run("s", "run", "test", lease.token)
    commit(store, lease, run2, rejected=[rejected(1, "nm", "length", message="again")])
    again = _errors(store)["[1]"]
    assert (again["attempts"], again["message"], again["run_id"]) == (2, "again", run2)
    assert again["first_seen"] == first["first_seen"]
    # delivered: resolved in the same commit
    commit(store, lease, run2, delivered=[delivered(1)])
    assert store.open_error_keys("s") == [("k", 2)]
    assert _errors(store, include_resolved=True)["[1]"]["resolved_at"] is not None
    assert store.history.count_record_errors("s", True) == 2
    # rejected after it was resolved: open again, attempts go on
    commit(store, lease, run2, rejected=[rejected(1)])
    assert _errors(store)["[1]"]["attempts"] == 3


def test_note_gone_leaves_the_error_open_and_says_why(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, rejected=[rejected(1), rejected(2)])
    store.note_gone("s", [(1,), (3,)])
    errs = _errors(store)
    assert str(errs["[1]"]["message"]).startswith(GONE) and errs["[1]"]["resolved_at"] is None
    assert errs["[2]"]["message"] == "too long"
    assert sorted(store.open_error_keys("s")) == [(1,), (2,)]


def test_unmapped_values_are_counted_once_per_record_and_resolved_with_their_errors(store: Store) -> None:
    lease, run_id = begin(store)
    new = commit(
        store,
        lease,
        run_id,
        rejected=[
            rejected(1, "country", "country", "Untied States"),
            rejected(2, "country", "country", "Untied States"),
            rejected(3, "status", "map", "X"),
            rejected(4, "nm", "length", "too long a value"),  # not a translating rule
        ],
    )
    assert sorted((v["field"], v["value"], v["count"], v["sample_key"]) for v in new) == [
        ("country", "Untied States", 2, "[1]"),
        ("status", "X", 1, "[3]"),
    ]
    # the same records re-read with the same values: not counted again, and not new
    assert commit(store, lease, run_id, rejected=[rejected(1, "country", "country", "Untied States")]) == []
    # another record with the value counts
    assert commit(store, lease, run_id, rejected=[rejected(5, "country", "country", "Untied States")]) == []
    listed = store.unmapped_values("s")
    assert [(u["field"], u["rule"], u["value"], u["count"]) for u in listed] == [
        ("country", "country", "Untied States", 3),
        ("status", "map", "X", 1),
    ]
    # key 3 delivered: its value is carried by no open error any more, so it is resolved
    commit(store, lease, run_id, delivered=[delivered(3)])
    assert [u["value"] for u in store.unmapped_values("s")] == ["Untied States"]
    everything = store.unmapped_values("s", include_resolved=True)
    assert [u["value"] for u in everything if u["resolved_at"] is not None] == ["X"]
    assert len(store.unmapped_values(None)) == 1
    # seen again later: open again, counted, but not new
    assert commit(store, lease, run_id, rejected=[rejected(6, "status", "map", "X")]) == []
    assert {u["value"]: u["count"] for u in store.unmapped_values("s")} == {"Untied States": 3, "X": 2}
