"""Shared fixtures. Service tests use real servers, each test in databases of its own.

Servers: MAPSYNC_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test) and
MAPSYNC_TEST_MARIADB_URL (default mysql://root@127.0.0.1:3306/test). When a server is not
reachable its tests skip with the reason, unless MAPSYNC_REQUIRE_SERVICES names it
(`postgres,mariadb`; CI sets it), in which case they fail.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from mapsync.testing.fault_proxy import Proxy as FaultProxy
from tests import helpers

# Property tests: a bounded, derandomised profile in CI (same examples every run, the suite stays
# fast); a wider random search locally with HYPOTHESIS_PROFILE=dev.
settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PG_URL = os.environ.get("MAPSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("MAPSYNC_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
REQUIRED = {s.strip() for s in os.environ.get("MAPSYNC_REQUIRE_SERVICES", "").split(",") if s.strip()}

_probe: dict[str, str | None] = {}


_TIERS = ("unit", "contract", "integration", "e2e", "browser")

# Every test process (the pytest run, and each xdist worker) holds this lock, shared, from start
# to end. `scripts/services` takes it exclusively before it drops what a killed run left behind
# (databases, slots, roles), so it never drops those of a live run: while a run holds it, the
# clean-up is skipped. A lock dies with its process, so a killed run holds nothing.
RUN_LOCK = os.environ.get("MAPSYNC_TEST_LOCK") or os.path.join(tempfile.gettempdir(), "mapsync-tests.lock")
_run_lock: list[int] = []


def pytest_configure(config: pytest.Config) -> None:
    try:
        import fcntl

        fd = os.open(RUN_LOCK, os.O_RDONLY | os.O_CREAT, 0o666)  # not inherited by subprocesses
    except (ImportError, OSError):  # no flock (Windows) or no writable temp dir: nothing to guard
        return
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits while scripts/services is cleaning up
    _run_lock.append(fd)


@pytest.hookimpl(tryfirst=True)  # before xdist's (it turns `xdist_group` marks into node ids)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, from its folder (`-m unit`, `-m "not e2e"`, …). The tests of
    a module that share a module-scoped fixture (a server database, a sandbox, the demo's run) go
    in one `xdist_group`, so that fixture is built once, not once per worker: those that ask for
    one, and every test in tests/contract (its role fixtures take the module's databases and
    sandbox through `request.getfixturevalue`, which the fixture closure does not show)."""
    for item in items:
        parts = item.path.parts
        tier = next((t for t in _TIERS if t in parts[-4:-1]), None)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))
        shares = tier == "contract" or _uses_module_fixture(item)
        if shares and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(f"module:{item.nodeid.split('::')[0]}"))


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest's, on every test function
    if info is None:
        return False
    return any(d.scope in ("module", "package") for defs in info.name2fixturedefs.values() for d in defs)


@pytest.fixture(autouse=True)
def _helper_connections() -> Iterator[None]:
    """tests/helpers.py keeps one engine per database while a test runs: closed after the test
    (the database fixtures close them first, before they drop their databases)."""
    yield
    helpers.dispose_pooled()


def _driver_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("mysql", "mariadb"):
        return parsed.set(drivername="mysql+pymysql")
    return parsed


def _unreachable(service: str, url: str) -> str | None:
    if service not in _probe:
        engine = sa.create_engine(_driver_url(url), connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _probe[service] = None
        except Exception as exc:  # any failure means: not usable here
            _probe[service] = (
                f"{service} not reachable at {sa.make_url(url).render_as_string()}: {type(exc).__name__}"
            )
        finally:
            engine.dispose()
    return _probe[service]


def _need(service: str, url: str) -> None:
    reason = _unreachable(service, url)
    if reason:
        if service in REQUIRED:
            pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
        pytest.skip(reason)


def _name() -> str:
    return f"mapsync_t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases (URLs), dropped after the test."""
    _need("postgres", PG_URL)
    admin = sa.create_engine(_driver_url(PG_URL), isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = _name()
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    helpers.dispose_pooled()  # the helpers' connections to these databases
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def mariadb_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh MariaDB databases (URLs), dropped after the test."""
    _need("mariadb", MARIADB_URL)
    admin = sa.create_engine(_driver_url(MARIADB_URL), isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = _name()
        with admin.connect() as conn:
            conn.execute(
                sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            )
        made.append(name)
        return sa.make_url(MARIADB_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    helpers.dispose_pooled()  # the helpers' connections to these databases
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """A factory of fresh SQLite database files (URLs)."""
    folder = tmp_path_factory.mktemp("sqlite")

    def make() -> str:
        path = folder / f"{_name()}.db"
        sa.create_engine(f"sqlite:///{path}").connect().close()
        return f"sqlite:///{path}"

    return make


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str, int], FaultProxy]]:
    """A factory of TCP fault proxies (src/mapsync/testing/fault_proxy.py) in front of host:port, closed after the test."""
    made: list[FaultProxy] = []

    def make(host: str, port: int) -> FaultProxy:
        made.append(FaultProxy(host, port))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture
def faketime_lib() -> str:
    """The path of libfaketime (Debian's `libfaketime`), which moves a real process's clock
    (LD_PRELOAD + FAKETIME="+2m"). Skipped when it is not installed, unless
    MAPSYNC_REQUIRE_SERVICES names `faketime` (.ci/run installs it and does)."""
    import glob

    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if found:
        return found[0]
    reason = "libfaketime is not installed (Debian: apt-get install libfaketime)"
    if "faketime" in REQUIRED:
        pytest.fail(f"{reason} (required by MAPSYNC_REQUIRE_SERVICES)")
    pytest.skip(reason)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Callable[[], str]:
    """A factory of fresh databases of each backend in turn (tests run once per backend)."""
    fixture = {"sqlite": "sqlite_database", "postgresql": "pg_database", "mariadb": "mariadb_database"}
    factory: Callable[[], str] = request.getfixturevalue(fixture[request.param])
    return factory


@pytest.fixture
def canary() -> Iterator[Callable[..., Any]]:
    """A factory of `mapsync.testing.canary.Canary` (secrets and their derived forms, grepped in every
    artifact); the `mapsync` logs are captured at DEBUG while the test runs."""
    import logging

    from mapsync.testing.canary import Canary, LogCapture

    capture = LogCapture()
    root = logging.getLogger("mapsync")
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield lambda *secrets, **kw: Canary(*secrets, logs=capture.lines, **kw)
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


from tests.sandbox_fixtures import (  # noqa: E402,F401  (fixtures)
    cimcloud_inprocess,
    cimcloud_sandbox,
    cimcloud_sandbox_factory,
)
