"""The state contract suite: every test here runs against each state store, SQLite (a temporary
file), PostgreSQL (one database made and dropped per test module; skipped with the reason when
no server is reachable, unless MAPSYNC_REQUIRE_SERVICES names `postgres`) and the MemoryStore.

Tests use only the ports (state/ports.py), so a store passes exactly when it behaves like the
others; a store that breaks one of these behaviours fails here.

The role suites (test_destination.py, test_source.py, test_capture.py) take every implementation
of their role through one fixture here (`dest_case`, `source_case`) or in test_capture.py
(`world`): a new implementation joins with one param and its builder in ends.py or
capture_world.py. Server databases are one per module (`pg_module_url`, `mariadb_module_url`)
with a table per test; the API destinations share one sandbox per module (`module_sandbox`)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from mapsync import records
from mapsync.state import schema
from mapsync.state.data import Counts, Lease
from mapsync.state.memory import MemoryStore
from mapsync.state.ports import Store
from mapsync.state.store import StateStore
from tests.conftest import MARIADB_URL, PG_URL, REQUIRED
from tests.contract import ends

if TYPE_CHECKING:
    from mapsync.testing.sandbox_serve import InProcess

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


# ----------------------------------------------------------------------------- servers per module


def _server_database(service: str, url: str) -> Iterator[str]:
    """One fresh database on a server for the test module (plain URL, as a sheet names it)."""
    made = sa.make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}[made.drivername]
    admin = sa.create_engine(
        made.set(drivername=driver), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means: not usable here
        admin.dispose()
        reason = f"{service} not reachable at {made.render_as_string()}: {type(exc).__name__}"
        if service in REQUIRED:
            pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
        pytest.skip(reason)
    name = f"mapsync_contract_{uuid.uuid4().hex[:12]}"
    q = '"' if service == "postgres" else "`"
    extra = "" if service == "postgres" else " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {q}{name}{q}{extra}"))
    try:
        yield made.set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if service == "postgres" else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {q}{name}{q}{force}"))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    yield from _server_database("postgres", PG_URL)


@pytest.fixture(scope="module")
def mariadb_module_url() -> Iterator[str]:
    yield from _server_database("mariadb", MARIADB_URL)


def sql_url_of(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    """A database URL of `backend`: a new SQLite file, or the module's server database."""
    if backend == "sqlite":
        return f"sqlite:///{folder}/data.db"
    fixture = {"postgresql": "pg_module_url", "mariadb": "mariadb_module_url"}[backend]
    url: str = request.getfixturevalue(fixture)
    return url


SQL_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(scope="module")
def module_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    """One CIMcloud sandbox for a test module: destination cases keep to their own key prefix,
    and an API destination never claims to be empty, so they can share it. Reached in-process
    through its httpx transport (`sandbox_serve.InProcess`): these cases are about the role, not about
    HTTP (faults, timeouts and processes are tested against `sandbox_serve.Running`'s socket). FastAPI
    loads only when a test asks for it, as in tests/sandbox_fixtures.py."""
    from mapsync.testing.sandbox import Config
    from mapsync.testing.sandbox_serve import InProcess

    with InProcess(Config(db_path=str(tmp_path_factory.mktemp("sandbox") / "sandbox.db"))) as box:
        yield box


@pytest.fixture
def api_sandbox(tmp_path: Path) -> Iterator[InProcess]:
    """An empty sandbox for one test (a source case reads all of a resource), in-process."""
    from mapsync.testing.sandbox import Config
    from mapsync.testing.sandbox_serve import InProcess

    with InProcess(Config(db_path=str(tmp_path / "sandbox.db"))) as box:
        yield box


# ----------------------------------------------------------------------------- the roles


@pytest.fixture(params=["memory", *SQL_BACKENDS, "rest", "cimcloud"])
def dest_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ends.DestCase]:
    """Every Destination implementation in turn (a new one joins here: one param, one builder)."""
    kind: str = request.param
    if kind == "memory":
        case = ends.memory_dest()
    elif kind in ("rest", "cimcloud"):
        case = ends.api_dest(kind, request.getfixturevalue("module_sandbox"), tmp_path)
    else:
        case = ends.sql_dest(sql_url_of(request, kind, tmp_path), tmp_path)
    try:
        yield case
    finally:
        case.close()


@pytest.fixture(params=["memory", *SQL_BACKENDS, "rest", "cimcloud"])
def source_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ends.SourceCase]:
    """Every Source implementation in turn: the generic REST source and CIMcloud's against the
    sandbox (in-process, one empty sandbox per test)."""
    kind: str = request.param
    if kind == "memory":
        case = ends.memory_source()
    elif kind in ("rest", "cimcloud"):
        case = ends.api_source(kind, request.getfixturevalue("api_sandbox"), tmp_path)
    else:
        case = ends.sql_source(sql_url_of(request, kind, tmp_path), tmp_path)
    try:
        yield case
    finally:
        case.close()
