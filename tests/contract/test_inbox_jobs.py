"""Contract: the inbox of pushed events and the bookkeeping of asynchronous jobs, in the port
form (`store.inbox`, `store.jobs`) and the module form (state/inbox.py, state/async_batches.py)."""

from __future__ import annotations

import pytest

from mapsync.state import async_batches, inbox
from mapsync.state.ports import Store


def test_append_refuses_a_replay_by_event_id_or_signature(store: Store) -> None:
    first = store.inbox.append("s", "e1", '{"a":1}', "hook", signature="sig1", signed_at=100)
    assert isinstance(first, int)
    assert store.inbox.append("s", "e1", '{"a":2}') is None  # the same event id
    assert store.inbox.append("s", "e2", '{"a":2}', signature="sig1") is None  # the same signature
    assert store.inbox.append("t", "e1", '{"a":1}', signature="sig1") is not None  # per sync
    long_id = "x" * 300
    second = store.inbox.append("s", long_id, "{}")
    third = store.inbox.append("s", long_id + "y", "{}")  # one prefix, two ids
    assert second is not None and third is not None and first < second < third
    items = store.inbox.new_items("s", 0, 10)
    assert [(i.id, i.event_id, i.payload, i.signed_at) for i in items] == [
        (first, "e1", '{"a":1}', 100),
        (second, "x" * 255, "{}", None),
        (third, "x" * 255, "{}", None),
    ]
    assert [i.id for i in store.inbox.new_items("s", first, 1)] == [second]
    assert items[0].received_at.endswith("Z")


def test_finish_marks_items_once(store: Store) -> None:
    ids = [store.inbox.append("s", f"e{n}", "{}") for n in range(4)]
    a, b, c, d = (i for i in ids if i is not None)
    store.inbox.finish([a, b, c], {b: "refused " * 400}, {c: "older than delivered"})
    assert store.inbox.counts("s") == {"processed": 1, "error": 1, "stale": 1, "new": 1}
    assert [i.id for i in store.inbox.new_items("s", 0, 10)] == [d]
    store.inbox.finish([], {a: "late failure"})  # no longer new: unchanged
    assert store.inbox.counts("s")["processed"] == 1
    inbox.append(store, "t", "e0", "{}")  # the module form
    inbox.finish(store, [d], {})
    assert inbox.counts(store) == {"processed": 2, "error": 1, "stale": 1, "new": 1}
    assert [i.id for i in inbox.new_items(store, "t", 0, 10)] != []
    assert store.inbox.counts("nobody") == {}


def test_async_jobs_go_pending_submitted_done(store: Store) -> None:
    first = store.jobs.record("s", [("a", 1), ("b", 2)], sent={'["a",1]': "h1"})
    second = store.jobs.record("s", [(3,)], batch_id="mine")
    assert second == "mine" and len(first) == 32
    store.jobs.record("t", [(9,)])
    pending = store.jobs.unfinished("s")
    assert [(j["batch_id"] in (first, second), j["status"]) for j in pending] == [(True, "pending")] * 2
    by_id = {j["batch_id"]: j for j in pending}
    assert by_id[first]["keys"] == [("a", 1), ("b", 2)]
    assert by_id[first]["results"] == {"sent": {'["a",1]': "h1"}} and by_id[second]["results"] is None
    store.jobs.submitted(first, "job-7")
    got = store.jobs.get(first)
    assert got is not None and (got["status"], got["job_id"], got["sync"]) == ("submitted", "job-7", "s")
    assert got["submitted_at"] is not None and got["keys"] == [("a", 1), ("b", 2)]
    store.jobs.finish(first, "done", [{"key": ["a", 1], "ok": True}])
    async_batches.finish(store, second, "failed")  # the module form
    assert store.jobs.unfinished("s") == []
    done = async_batches.get(store, first)
    assert done is not None and (done["status"], done["results"]) == ("done", [{"key": ["a", 1], "ok": True}])
    assert store.jobs.get("nope") is None
    with pytest.raises(ValueError, match="done or failed"):
        store.jobs.finish(first, "submitted")
