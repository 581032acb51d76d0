"""Contract: web sessions and the operator audit log (schema v9, ports `Sessions` and `Audit`,
state/sessions.py): a session is found by its token while live, not after it expires on the
store's clock or is revoked (one, or all of a user's); only the token's sha256 is stored; audit
rows are appended and listed newest first, by sync, and go with the run history's retention."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import sqlalchemy as sa

from mapsync.state import clock, schema
from mapsync.state.memory import MemoryStore
from mapsync.state.ports import Store
from mapsync.state.store import StateStore

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def _stored_ids(store: Store) -> list[str]:
    if isinstance(store, StateStore):
        with store.engine.connect() as conn:
            return list(conn.execute(sa.select(schema.web_sessions.c.id_hash)).scalars())
    assert isinstance(store, MemoryStore)
    return list(store.memory.tables.web_sessions)


def _later(seconds: float) -> float:
    before = clock.offset()
    clock.set_offset(before + seconds)
    return before


def test_a_session_is_found_by_its_token_while_live(store: Store) -> None:
    token, csrf = store.sessions.open_session("alice", HOUR)
    assert len(token) >= 40 and len(csrf) >= 40 and token != csrf
    live = store.sessions.session(token)
    assert live is not None and (live["user"], live["csrf"]) == ("alice", csrf)
    assert HOUR - dt.timedelta(minutes=1) < live["expires_at"] - clock.utcnow() <= HOUR
    assert store.sessions.session(token + "x") is None and store.sessions.session("") is None
    # only the token's hash is stored, never the token
    assert _stored_ids(store) == [hashlib.sha256(token.encode()).hexdigest()]
    store.sessions.touch_session(token)
    assert store.sessions.session(token) == live
    with pytest.raises(ValueError, match="positive"):
        store.sessions.open_session("alice", dt.timedelta(0))


def test_a_session_expires_on_the_stores_clock(store: Store) -> None:
    token, _ = store.sessions.open_session("alice", HOUR)
    before = _later(HOUR.total_seconds() + 1)
    try:
        assert store.sessions.session(token) is None
        assert store.sessions.close_sessions() == 0  # an expired one is not live to revoke
    finally:
        clock.set_offset(before)
    assert store.sessions.session(token) is not None


def test_sessions_are_revoked_one_or_all_of_a_user(store: Store) -> None:
    a1, _ = store.sessions.open_session("alice", HOUR)
    a2, _ = store.sessions.open_session("alice", HOUR)
    b1, _ = store.sessions.open_session("bob", HOUR)
    b2, _ = store.sessions.open_session("bob", HOUR)
    store.sessions.close_session(a1)
    store.sessions.close_session(a1)  # again: nothing changes
    assert store.sessions.session(a1) is None and store.sessions.session(a2) is not None
    assert store.sessions.close_sessions("alice") == 1
    assert store.sessions.session(a2) is None and store.sessions.session(b1) is not None
    assert store.sessions.close_sessions() == 2 and store.sessions.close_sessions() == 0
    assert store.sessions.session(b1) is None and store.sessions.session(b2) is None


def test_the_audit_log_lists_newest_first_by_sync(store: Store) -> None:
    first = store.audit.record_action("al@host", "pause", "s", {"note": "maintenance"})
    second = store.audit.record_action("alice", "retry", "t", {"keys": ["[1]", "[2]"]})
    third = store.audit.record_action("alice", "ack_alert", None, {"incident": 4})
    assert first < second < third
    rows = store.audit.actions(None, 10)
    assert [r["id"] for r in rows] == [third, second, first]
    assert {k: rows[1][k] for k in ("user", "action", "sync", "detail")} == {
        "user": "alice",
        "action": "retry",
        "sync": "t",
        "detail": {"keys": ["[1]", "[2]"]},
    }
    assert rows[2]["at"] <= rows[1]["at"] <= rows[0]["at"]
    assert [r["id"] for r in store.audit.actions("s", 10)] == [first]
    assert [r["id"] for r in store.audit.actions(None, 2)] == [third, second]
    with pytest.raises(ValueError, match="64"):
        store.audit.record_action("alice", "x" * 65, None, {})


def test_audit_and_ended_sessions_go_with_the_run_history(store: Store) -> None:
    before = _later(-40 * 86400)
    try:
        store.audit.record_action("alice", "pause", "s", {})
        store.audit.record_action("alice", "pause", "t", {})
        old, _ = store.sessions.open_session("alice", HOUR)
    finally:
        clock.set_offset(before)
    kept = store.audit.record_action("alice", "resume", "s", {})
    live, _ = store.sessions.open_session("alice", HOUR)
    assert store.history.purge_tables({"runs": 30 * DAY}, dry_run=True) == {"runs": 0}
    assert len(store.audit.actions(None, 10)) == 3  # a dry run deletes nothing
    store.history.purge_tables({"runs": 30 * DAY}, syncs=["t"])  # the engine's purge after a run of t
    assert [r["sync"] for r in store.audit.actions(None, 10)] == ["s", "s"]
    assert len(_stored_ids(store)) == 2
    assert store.history.purge_tables({"runs": 30 * DAY}) == {"runs": 0}  # not counted as runs
    assert [r["id"] for r in store.audit.actions(None, 10)] == [kept]
    assert _stored_ids(store) == [hashlib.sha256(live.encode()).hexdigest()]
    assert store.sessions.session(old) is None
