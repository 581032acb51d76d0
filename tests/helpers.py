"""Helpers for tests: run the CLI (in this process or a real one), run SQL, per-dialect DDL, write counters."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mapsync.connectors.sql import normalize_url

# the repository root (README.md, docs/, examples/)
ROOT = Path(__file__).resolve().parents[1]

# a timestamp column with microseconds, per dialect
TS = {"sqlite": "TEXT", "postgresql": "TIMESTAMP(6)", "mysql": "DATETIME(6)"}


def engine(url: str) -> sa.Engine:
    """A new engine of the test's own (the test disposes it)."""
    return sa.create_engine(normalize_url(url, Path.cwd()))


# execute() and query() share one engine per database for the length of a test (a connection set
# up once, not per statement); tests/conftest.py disposes them after each test, before its
# databases are dropped, so no connection outlives the test.
_POOLED: dict[tuple[str, str], sa.Engine] = {}


def _pooled(url: str) -> sa.Engine:
    key = (url, str(Path.cwd()))  # a relative SQLite path depends on the folder
    if key not in _POOLED:
        _POOLED[key] = engine(url)
    return _POOLED[key]


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `check` every 50 ms until it holds (True) or `timeout` seconds passed (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def dispose_pooled() -> None:
    while _POOLED:
        _POOLED.popitem()[1].dispose()


def dialect(url: str) -> str:
    name = sa.make_url(url).get_backend_name()
    return "mysql" if name in ("mysql", "mariadb") else name


def execute(
    url: str, *statements: str, params: Sequence[dict[str, Any]] | dict[str, Any] | None = None
) -> None:
    with _pooled(url).begin() as conn:
        for stmt in statements:
            conn.execute(sa.text(stmt), params) if params is not None else conn.execute(sa.text(stmt))


def query(url: str, stmt: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    with _pooled(url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(stmt), params or {})]


def install_write_counter(url: str, table: str) -> None:
    """Count every row written to `table` (insert or update) in `mapsync_write_log`."""
    d = dialect(url)
    if d == "postgresql":
        execute(
            url,
            "CREATE TABLE mapsync_write_log (id SERIAL PRIMARY KEY, op TEXT)",
            "CREATE FUNCTION mapsync_count_write() RETURNS trigger AS $$ BEGIN "
            "INSERT INTO mapsync_write_log (op) VALUES (TG_OP); RETURN NULL; END $$ LANGUAGE plpgsql",
            f"CREATE TRIGGER mapsync_count AFTER INSERT OR UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION mapsync_count_write()",
        )
    elif d == "mysql":
        execute(
            url,
            "CREATE TABLE mapsync_write_log (id INT AUTO_INCREMENT PRIMARY KEY, op VARCHAR(10))",
            f"CREATE TRIGGER mapsync_count_i AFTER INSERT ON {table} FOR EACH ROW "
            "INSERT INTO mapsync_write_log (op) VALUES ('INSERT')",
            f"CREATE TRIGGER mapsync_count_u AFTER UPDATE ON {table} FOR EACH ROW "
            "INSERT INTO mapsync_write_log (op) VALUES ('UPDATE')",
        )
    else:
        execute(
            url,
            "CREATE TABLE mapsync_write_log (id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT)",
            f"CREATE TRIGGER mapsync_count_i AFTER INSERT ON {table} BEGIN "
            "INSERT INTO mapsync_write_log (op) VALUES ('INSERT'); END",
            f"CREATE TRIGGER mapsync_count_u AFTER UPDATE ON {table} BEGIN "
            "INSERT INTO mapsync_write_log (op) VALUES ('UPDATE'); END",
        )


def writes(url: str) -> int:
    return int(query(url, "SELECT COUNT(*) FROM mapsync_write_log")[0][0])


def mapsync(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    process: bool | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `mapsync ARGS` with the result of `python -m mapsync ARGS` (exit code, stdout, stderr).

    In this process by default (tests/cli_runner.py: about a second less per call), crash points
    included (they raise instead of SIGKILL, see mapsync.crash). A real process when the test
    asks (`process=True`: the process itself is under test), for `serve`, `daemon` and `--follow` (they
    run until a signal), when the test relies on a `timeout`, and when `MAPSYNC_CRASH_AT` is set
    without `process=False` (a real SIGKILL). `MAPSYNC_TEST_CLI=process` makes every call a
    real process (to show both give the same results)."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    if process is None:
        process = (
            timeout is not None
            or "serve" in args
            or "daemon" in args
            or "--follow" in args
            or bool(full_env.get("MAPSYNC_CRASH_AT"))
        )
    if process or os.environ.get("MAPSYNC_TEST_CLI") == "process":
        return subprocess.run(
            [sys.executable, "-m", "mapsync", *args],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout or 120,
            check=False,
        )
    from tests import cli_runner

    return cli_runner.run(args, cwd, full_env)
