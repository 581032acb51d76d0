"""Contract: an operator resolves record errors with a note (schema v9, `resolve_errors`): by key
text or all of a sync's open ones; a resolved error is no longer open nor retried, keeps who and
why, resolving again is a no-op, and a new rejection opens it again without the old note."""

from __future__ import annotations

from mapsync.state.ports import Store
from tests.contract.conftest import begin, commit, rejected


def _open(store: Store, sync: str = "s") -> list[str]:
    return sorted(e["key"] for e in store.history.record_errors(sync, False, 100))


def test_resolve_by_key_and_all_open(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, rejected=[rejected(1), rejected(2), rejected(3), rejected(("a", 4))])
    other, other_run = begin(store, "t")
    commit(store, other, other_run, rejected=[rejected(1)])
    assert store.resolve_errors("s", ["[1]", "[9]", "[1]"], "alice", "fixed by hand in the ERP") == 1
    assert _open(store) == ['["a",4]', "[2]", "[3]"] and _open(store, "t") == ["[1]"]
    assert (1,) not in store.open_error_keys("s") and (1,) not in store.open_error_keys("s", live_only=True)
    assert store.history.count_record_errors("s", False) == 3
    done = {e["key"]: e for e in store.history.record_errors("s", True, 100)}["[1]"]
    assert (done["resolved_by"], done["resolved_note"]) == ("alice", "fixed by hand in the ERP")
    assert done["resolved_at"] is not None
    assert store.resolve_errors("s", ["[1]"], "bob", "again") == 0  # resolved already: no-op
    assert store.resolve_errors("s", [], "bob", "none") == 0
    assert store.resolve_errors("s", None, "bob", "all of them") == 3
    assert _open(store) == [] and _open(store, "t") == ["[1]"]
    kept = {e["key"]: e for e in store.history.record_errors("s", True, 100)}
    assert kept["[1]"]["resolved_by"] == "alice" and kept["[2]"]["resolved_note"] == "all of them"
    assert store.resolve_errors("s", None, "bob", "x") == 0


def test_a_new_rejection_opens_a_resolved_error_again(store: Store) -> None:
    lease, run_id = begin(store)
    commit(store, lease, run_id, rejected=[rejected(1)])
    assert store.resolve_errors("s", None, "alice", "ignore") == 1
    commit(store, lease, run_id, rejected=[rejected(1, message="still too long")])
    row = store.history.record_errors("s", False, 10)[0]
    assert (row["key"], row["resolved_at"], row["resolved_by"], row["resolved_note"]) == (
        "[1]",
        None,
        None,
        None,
    )
