"""The state contract suite: every test here runs against each state store, SQLite (a temporary
file), PostgreSQL (one database made and dropped per test module; skipped with the reason when
no server is reachable, unless MAPSYNC_REQUIRE_SERVICES names `postgres`) and the MemoryStore.

Tests use only the ports (state/ports.py), so a store passes exactly when it behaves like the
others; a store that breaks one of these behaviours fails here."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import records
from mapsync.state import schema
from mapsync.state.data import Counts, Lease
from mapsync.state.memory import MemoryStore
from mapsync.state.ports import Store
from mapsync.state.store import StateStore
from tests.conftest import PG_URL, REQUIRED

TTL = dt.timedelta(minutes=5)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """One fresh PostgreSQL database for the test module; dropped after it."""
    admin = sa.create_engine(
        sa.make_url(PG_URL).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means: not usable here
        admin.dispose()
        reason = f"postgres not reachable at {sa.make_url(PG_URL).render_as_string()}: {type(exc).__name__}"
        if "postgres" in REQUIRED:
            pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
        pytest.skip(reason)
    name = f"mapsync_contract_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.make_url(PG_URL)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _emptied(store: StateStore) -> StateStore:
    """The module's PostgreSQL store without the rows of the tests before."""
    with store.engine.begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            if table is not schema.meta:
                conn.execute(sa.delete(table))
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = StateStore.open("sqlite:///state.db", tmp_path, create=True)
    else:
        made = _emptied(StateStore.open(request.getfixturevalue("pg_url"), tmp_path, create=True))
    try:
        yield made
    finally:
        made.close()


# ----------------------------------------------------------------------------- helpers


def begin(store: Store, sync: str = "s", ttl: dt.timedelta = TTL) -> tuple[Lease, int]:
    """A lease and a running run of `sync`."""
    lease = store.leases.acquire(sync, ttl)
    return lease, store.start_run(sync, "run", "test", lease.token)


def commit(
    store: Store,
    lease: Lease,
    run_id: int,
    *,
    delivered: list[records.Delivered] | None = None,
    rejected: list[records.Rejection] | None = None,
    cursors: dict[str, Any] | None = None,
    counts: Counts | None = None,
) -> list[dict[str, Any]]:
    return store.commit(
        sync=lease.sync,
        token=lease.token,
        run_id=run_id,
        delivered=delivered or [],
        rejected=rejected or [],
        cursors=cursors or {},
        counts=counts or Counts(),
        lease_ttl=lease.ttl,
    )


def delivered(
    key: Any, version: Any = 1, hash_: str = "h", dest: str | None = "=key", op: Any = "upsert"
) -> records.Delivered:
    k = key if isinstance(key, tuple) else (key,)
    return records.Delivered(k, version, hash_, records.key_text(k) if dest == "=key" else dest, op)


def rejected(
    key: Any, field: str = "nm", rule: str = "length", value: Any = None, message: str = "too long"
) -> records.Rejection:
    k = key if isinstance(key, tuple) else (key,)
    return records.Rejection(k, message, field, rule, 1, value)
