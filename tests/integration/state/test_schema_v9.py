"""State schema v9 (the dashboard's sessions, audit log, request keys and resolve notes): a v8
store on SQLite and PostgreSQL upgrades in place, keeping its run requests and record errors;
opening it again changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync.state import schema
from mapsync.state.schema_v9 import RECORD_ERRORS_V9, RUN_REQUESTS_V9
from mapsync.state.store import StateStore


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make().replace("postgresql://", "postgresql+psycopg://")


def _v8_store(state_url: str, tmp_path: Path) -> None:
    """A store as v8 left it: no v9 tables or columns; a run request and an open record error."""
    store = StateStore.open(state_url, tmp_path, create=True)
    q = store.engine.dialect.identifier_preparer.quote
    with store.engine.begin() as conn:
        for table in (schema.web_sessions, schema.audit_log):
            table.drop(conn)
        for table, columns in (
            (schema.run_requests, RUN_REQUESTS_V9),
            (schema.record_errors, RECORD_ERRORS_V9),
        ):
            for name in columns:
                conn.exec_driver_sql(f"ALTER TABLE {q(table.name)} DROP COLUMN {q(name)}")
        conn.exec_driver_sql(
            "INSERT INTO mapsync_run_requests (sync, kind, requested_by, requested_at, status) "
            "VALUES ('s', 'retry', 'al@host', '2026-05-01T08:00:00.000000Z', 'new')"
        )
        conn.exec_driver_sql(
            "INSERT INTO mapsync_record_errors (sync, " + q("key") + ", message, attempts, first_seen, "
            "last_seen) VALUES ('s', '[1]', 'too long', 1, 't', 't')"
        )
        m = schema.meta
        conn.execute(sa.update(m).where(m.c.name == "schema_version").values(value="8"))
    store.close()


def test_a_v8_store_upgrades_in_place(state_url: str, tmp_path: Path) -> None:
    assert schema.SCHEMA_VERSION == 9
    _v8_store(state_url, tmp_path)
    store = StateStore.open(state_url, tmp_path, create=False)
    try:
        with store.engine.connect() as conn:
            version = conn.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.name == "schema_version")
            )
            assert version.scalar() == "9"
        old = store.take_requests(["s"], "w1")
        assert [(r.kind, r.keys, r.note) for r in old] == [("retry", None, None)]
        assert store.request_run("s", "reexport", "alice", keys=["[2]"], note="n") == old[0].id + 1
        assert store.requests("s", 1)[0].keys == ("[2]",)
        assert store.open_error_keys("s") == [(1,)]
        assert store.resolve_errors("s", ["[1]"], "alice", "fixed") == 1 and store.open_error_keys("s") == []
        token, _ = store.sessions.open_session("alice", dt.timedelta(hours=1))
        assert store.sessions.session(token) is not None
        assert store.audit.record_action("alice", "resolve", "s", {"keys": ["[1]"]}) == 1
    finally:
        store.close()
    again = StateStore.open(state_url, tmp_path, create=False)  # opening again changes nothing
    try:
        assert [r["action"] for r in again.audit.actions("s", 10)] == ["resolve"]
    finally:
        again.close()
