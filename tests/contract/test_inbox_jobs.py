"""Contract: the inbox of pushed events and the bookkeeping of asynchronous jobs, in the port
form (`store.inbox`, `store.jobs`) and the module form (state/inbox.py, state/async_batches.py)."""

from __future__ import annotations

from collections.abc import Iterator

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


class _Broken(list[tuple[str, str]]):
    """Items that fail after the first: a split cut short by an error."""

    def __iter__(self) -> Iterator[tuple[str, str]]:
        yield list.__getitem__(self, 0)
        raise RuntimeError("the page broke mid-split")


def test_split_turns_a_page_into_its_items_all_or_nothing(store: Store) -> None:
    page = store.inbox.append("s", "page:1", "[raw]", "GET OnlineOrders")
    assert page is not None
    with pytest.raises(RuntimeError, match="mid-split"):
        store.inbox.split("s", page, _Broken([("order:a:1", "{}"), ("order:b:1", "{}")]))
    assert [i.event_id for i in store.inbox.new_items("s", 0, 10)] == ["page:1"]  # nothing split, page new
    store.inbox.split("s", page, [("order:a:1", '{"a":1}'), ("order:b:1", '{"b":1}')], "GET OnlineOrders")
    assert store.inbox.counts("s") == {"processed": 1, "new": 2}
    assert [(i.event_id, i.payload) for i in store.inbox.new_items("s", 0, 10)] == [
        ("order:a:1", '{"a":1}'),
        ("order:b:1", '{"b":1}'),
    ]
    # splitting it again (a crash after the commit, a replay) adds nothing and keeps the page processed
    again = store.inbox.append("s", "page:2", "[raw]")
    assert again is not None
    store.inbox.split("s", again, [("order:a:1", '{"a":2}'), ("order:c:2", '{"c":2}')])
    new = store.inbox.new_items("s", 0, 10)
    assert [(i.event_id, i.payload) for i in new] == [
        ("order:a:1", '{"a":1}'),  # the replayed id kept its first payload
        ("order:b:1", '{"b":1}'),
        ("order:c:2", '{"c":2}'),
    ]
    assert store.inbox.counts("s") == {"processed": 2, "new": 3}
    store.inbox.split("s", page, [])  # a page already processed stays so
    assert store.inbox.counts("s") == {"processed": 2, "new": 3}


def test_latest_gives_the_newest_item_per_prefix_matching_literally(store: Store) -> None:
    ids = {}
    for event_id in [
        'order:["a_1"]:1',
        'order:["a_1"]:7',
        'order:["ab1"]:2',
        'order:["a%"]:3',
        'order:["A_1"]:4',
    ]:
        ids[event_id] = store.inbox.append("s", event_id, f'"{event_id}"')
    store.inbox.append("t", 'order:["a_1"]:9', "{}")  # another sync
    store.inbox.finish([], {ids['order:["a_1"]:7']: "refused"})
    found = store.inbox.latest(
        "s", ['order:["a_1"]:', 'order:["a%"]:', 'order:["a"]:', 'order:["ab1"]:', 'order:["a_1"]:']
    )
    assert {p: (item.event_id, status) for p, (item, status) in found.items()} == {
        'order:["a_1"]:': ('order:["a_1"]:7', "error"),  # the newest, not `ab1`, not `A_1`
        'order:["a%"]:': ('order:["a%"]:3', "new"),
        'order:["ab1"]:': ('order:["ab1"]:2', "new"),
    }
    assert found['order:["a_1"]:'][0].payload == '"order:["a_1"]:7"'
    assert store.inbox.latest("s", []) == {} and store.inbox.latest("nobody", ['order:["a_1"]:']) == {}
