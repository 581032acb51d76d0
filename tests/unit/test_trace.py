"""The trace's pure parts: the typed keys a command-line key may stand for, and the status."""

from __future__ import annotations

from mapsync import records, trace


def test_a_key_is_tried_as_a_number_where_it_reads_as_one_then_as_text() -> None:
    assert trace.candidates(("1042",)) == [(1042,), ("1042",)]
    assert trace.candidates(("C10013",)) == [("C10013",)]
    assert trace.candidates(("007",)) == [("007",)]  # 7 would be another key's text
    assert trace.candidates(("1.5",)) == [(1.5,), ("1.5",)]
    assert trace.candidates(("50121", "x")) == [(50121, "x"), ("50121", "x")]
    both = trace.candidates(("1", "2"))
    assert both == [(1, 2), (1, "2"), ("1", 2), ("1", "2")]
    assert records.key_text(both[0]) == "[1,2]"


def test_status_says_the_newest_fact_first() -> None:
    ledger = {"deleted": False, "hash": "h"}
    error = {"resolved_at": None, "dead_at": None}
    queue = {"rows": [{"status": "new"}, {"status": "completed"}]}
    assert trace._status(ledger, error, queue, None) == "pending in queue"
    assert trace._status(ledger, error, {"rows": [{"status": "completed"}]}, None) == "rejected"
    assert trace._status(ledger, None, None, [{"status": "new"}]) == "in inbox"
    assert trace._status(ledger, None, None, [{"status": "processed"}]) == "delivered"
    assert trace._status(None, {"resolved_at": None, "dead_at": "t"}, None, None).startswith("rejected (dead")
    assert trace._status({"deleted": True, "hash": "h"}, {"resolved_at": "t"}, None, None) == "deleted"
    assert trace._status({"deleted": False, "hash": "deleted"}, None, None, None) == "deleted"
    assert trace._status(None, None, None, None) == "unknown"
