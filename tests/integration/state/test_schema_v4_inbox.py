"""State schema v4 (the inbox keyed by hashes): a v3 store on SQLite and PostgreSQL upgrades in
place, keeping its items (ids, statuses, payloads) and their duplicate detection; event ids that
share their first 255 characters no longer collide; the verified signature is a second key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync.state import inbox, schema
from mapsync.state.store import StateStore

_V3 = sa.MetaData()
V3_INBOX = sa.Table(  # the v3 shape, as released
    "mapsync_inbox",
    _V3,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sync", sa.String(128), nullable=False),
    sa.Column("source", sa.String(128), nullable=True),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("received_at", sa.String(40), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("processed_at", sa.String(40), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.UniqueConstraint("sync", "event_id", name="uq_mapsync_inbox_event"),
    sa.Index("ix_mapsync_inbox_sync_status", "sync", "status", "id"),
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make().replace("postgresql://", "postgresql+psycopg://")


def _v3_store(state_url: str, tmp_path: Path) -> None:
    """A store as v3 left it, with three inbox items."""
    store = StateStore.open(state_url, tmp_path, create=True)
    with store.engine.begin() as conn:
        schema.inbox.drop(conn)
        V3_INBOX.create(conn)
        conn.execute(
            sa.insert(V3_INBOX),
            [
                {
                    "sync": "s",
                    "event_id": "e1",
                    "received_at": "t",
                    "payload": "{}",
                    "status": "processed",
                },
                {
                    "sync": "s",
                    "event_id": "e2",
                    "received_at": "t",
                    "payload": '{"a": 1}',
                    "status": "new",
                },
                {
                    "sync": "t",
                    "event_id": "e1",
                    "received_at": "t",
                    "payload": "{}",
                    "status": "error",
                },
            ],
        )
        m = schema.meta
        conn.execute(sa.update(m).where(m.c.name == "schema_version").values(value="3"))
    store.close()


def test_a_v3_inbox_upgrades_in_place(state_url: str, tmp_path: Path) -> None:
    assert schema.SCHEMA_VERSION >= 4
    _v3_store(state_url, tmp_path)
    store = StateStore.open(state_url, tmp_path, create=False)
    try:
        t = schema.inbox
        with store.engine.connect() as conn:
            version = conn.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.name == "schema_version")
            )
            assert version.scalar() == str(schema.SCHEMA_VERSION)
            rows = conn.execute(
                sa.select(t.c.id, t.c.sync, t.c.event_id, t.c.event_hash, t.c.status, t.c.payload).order_by(
                    t.c.id
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            (1, "s", "e1", schema.digest("e1"), "processed", "{}"),
            (2, "s", "e2", schema.digest("e2"), "new", '{"a": 1}'),
            (3, "t", "e1", schema.digest("e1"), "error", "{}"),
        ]
        assert inbox.append(store, "s", "e1", "{}") is None  # still a duplicate after the upgrade
        fresh = inbox.append(store, "s", "e3", "{}", signature="abc", signed_at=1_700_000_000)
        assert fresh is not None and fresh > 3  # ids go on after the kept ones
        assert [i.signed_at for i in inbox.new_items(store, "s", 0, 10)] == [None, 1_700_000_000]
    finally:
        store.close()
    StateStore.open(state_url, tmp_path, create=False).close()  # opening again changes nothing


def test_long_event_ids_sharing_a_prefix_do_not_collide(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    try:
        prefix = "evt-" + "x" * 300
        first = inbox.append(store, "s", prefix + "-A", '{"n": 1}')
        second = inbox.append(store, "s", prefix + "-B", '{"n": 2}')  # cut to 255, it was a "duplicate"
        assert first is not None and second is not None and first != second
        assert inbox.append(store, "s", prefix + "-A", '{"n": 3}') is None  # the same long id again
        items = inbox.new_items(store, "s", 0, 10)
        assert [i.payload for i in items] == ['{"n": 1}', '{"n": 2}']
        assert all(len(i.event_id) == 255 for i in items)  # shown cut, keyed by the whole id
    finally:
        store.close()


def test_a_signature_is_stored_once_whatever_the_event_id(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    try:
        assert inbox.append(store, "s", "e1", "{}", signature="sig-1") is not None
        assert inbox.append(store, "s", "e2", "{}", signature="sig-1") is None  # a replay, new id
        assert inbox.append(store, "t", "e2", "{}", signature="sig-1") is not None  # per sync
        assert inbox.append(store, "s", "e3", "{}") is not None  # no signature: ids alone
        assert inbox.append(store, "s", "e4", "{}") is not None
        assert inbox.counts(store, "s") == {"new": 3}
    finally:
        store.close()
