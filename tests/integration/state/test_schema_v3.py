"""State schema v3 (call budget, webhook inbox, async batches): a v2 store on SQLite and
PostgreSQL upgrades in place, keeping what it holds, and the new tables work at once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync.rest.budget import Budget
from mapsync.state import async_batches, inbox, schema
from mapsync.state.store import StateStore

V3_TABLES = ["mapsync_budget_calls", "mapsync_budgets", "mapsync_inbox", "mapsync_async_batches"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make().replace("postgresql://", "postgresql+psycopg://")


def test_a_v2_store_upgrades_in_place_to_v3(state_url: str, tmp_path: Path) -> None:
    assert schema.SCHEMA_VERSION >= 3
    store = StateStore.open(state_url, tmp_path, create=True)
    m = schema.meta
    with store.engine.begin() as conn:  # back to the v2 shape, holding a cursor
        for table in V3_TABLES:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(sa.update(m).where(m.c.name == "schema_version").values(value="2"))
    store.set_cursors("s", {"watermark": "2024-01-01T00:00:00"})
    store.close()

    store = StateStore.open(state_url, tmp_path, create=False)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(m.c.value).where(m.c.name == "schema_version")).scalar() == str(
                schema.SCHEMA_VERSION
            )
            assert all(sa.inspect(conn).has_table(t) for t in V3_TABLES)
        assert store.cursor("s", "watermark") == "2024-01-01T00:00:00"
        first = inbox.append(store, "s", "e1", '{"sku": "A"}')
        assert first is not None and inbox.append(store, "s", "e1", "{}") is None
        budget = Budget(store, "cred", [(2, dt.timedelta(seconds=60))])
        budget.acquire()
        assert budget.remaining()["limits"][0]["remaining"] == 1
        with store.engine.begin() as conn:
            conn.execute(
                sa.insert(schema.async_batches).values(
                    batch_id="b1", sync="s", keys="[[1]]", created_at="x", status="pending", updated_at="x"
                )
            )
            # a client batch id is written once
            with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
                conn.execute(
                    sa.insert(schema.async_batches).values(
                        batch_id="b1",
                        sync="s",
                        keys="[]",
                        created_at="x",
                        status="pending",
                        updated_at="x",
                    )
                )
    finally:
        store.close()
    StateStore.open(state_url, tmp_path, create=False).close()  # opening again changes nothing


def test_a_fresh_store_has_the_v3_tables(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    try:
        with store.engine.connect() as conn:
            assert all(sa.inspect(conn).has_table(t) for t in V3_TABLES)
            unique = sa.inspect(conn).get_unique_constraints("mapsync_inbox")
        assert sorted(sorted(u["column_names"]) for u in unique) == [
            ["event_hash", "sync"],
            ["signature_hash", "sync"],
        ]  # v4: hashes instead of the cut event id
    finally:
        store.close()


def test_async_batch_bookkeeping(state_url: str, tmp_path: Path) -> None:
    store = StateStore.open(state_url, tmp_path, create=True)
    try:
        first = async_batches.record(store, "s", [(1,), (2,)])
        second = async_batches.record(store, "s", [("a", 1)])
        async_batches.submitted(store, first, "job-9")
        assert [
            (b["batch_id"], b["status"], b["job_id"], b["keys"]) for b in async_batches.unfinished(store, "s")
        ] == [
            (first, "submitted", "job-9", [(1,), (2,)]),
            (second, "pending", None, [("a", 1)]),
        ]
        async_batches.finish(store, first, "done", [{"key": [1], "ok": True}, {"key": [2], "ok": False}])
        assert [b["batch_id"] for b in async_batches.unfinished(store, "s")] == [second]
        got = async_batches.get(store, first)
        assert got is not None and got["status"] == "done" and got["results"][1]["ok"] is False
        with pytest.raises(ValueError, match="done or failed"):
            async_batches.finish(store, second, "maybe")
        assert async_batches.unfinished(store, "other") == [] and async_batches.get(store, "nope") is None
    finally:
        store.close()
