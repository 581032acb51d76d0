"""Contract: run requests of schema v9 (port `Controls.request_run`): the `reexport` kind, and
the keys (key texts) and note of a retry or re-export round trip to the worker that takes them."""

from __future__ import annotations

import pytest

from mapsync.state.ports import Store


def test_keys_and_note_round_trip_to_the_taker(store: Store) -> None:
    some = store.request_run("s", "retry", "alice", keys=["[1]", '["a",2]'], note="fixed at the source")
    every = store.request_run("s", "retry", "alice")
    again = store.request_run("s", "reexport", "al@host", keys=["[7]"])
    failed = store.request_run("s", "reexport", "al@host", keys=None, note="ERP was down")
    taken = {r.id: r for r in store.take_requests(["s"], "w1")}
    assert set(taken) == {some, every, again, failed}
    assert (taken[some].kind, taken[some].keys, taken[some].note) == (
        "retry",
        ("[1]", '["a",2]'),
        "fixed at the source",
    )
    assert (taken[every].keys, taken[every].note) == (None, None)
    assert (taken[again].kind, taken[again].keys) == ("reexport", ("[7]",))
    assert (taken[failed].keys, taken[failed].note) == (None, "ERP was down")
    listed = {r.id: r for r in store.requests("s")}
    assert listed[some].keys == ("[1]", '["a",2]') and listed[some].status == "taken"
    assert store.request_run("s", "retry", "alice", keys=[]) and store.requests("s", 1)[0].keys == ()


def test_a_request_refuses_an_unknown_kind_or_one_key_text(store: Store) -> None:
    with pytest.raises(ValueError, match="reexport"):
        store.request_run("s", "repair", "alice")
    with pytest.raises(TypeError, match="sequence"):
        store.request_run("s", "retry", "alice", keys="[1]")
    assert store.requests("s") == []
