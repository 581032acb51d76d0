"""Change-capture health in `mapsync check` and `mapsync status`: a PostgreSQL slot whose
retained WAL is over `max_retained_wal` is a warning (check exits 1, status shows it and carries
it in `--json`), under the threshold it is not; a queue sync shows whether its queue table and
triggers are installed (missing → warning) and its backlog (`new`/`error` rows, age of the
oldest `new`) on SQLite and MariaDB. Real servers, real CLI processes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync.state.store import StateStore
from tests import helpers as h
from tests.conftest import PG_URL, REQUIRED

LOG_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  shop: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, table: items_dst}}
    key: {{from: id, to: item_id}}
    fields: {{title: name}}
    changes: {{method: log, slot: {slot}, plugin: test_decoding, max_retained_wal: {limit}}}
    deletes: {{policy: hard}}
"""

QUEUE_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  shop: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, table: items_dst}}
    key: {{from: id, to: item_id}}
    fields: {{title: name}}
    changes: {{method: queue, backoff: 0s, max_retries: 0}}
    deletes: {{policy: hard}}
"""


def _json_of(done: Any) -> Any:
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout)


def _capture_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["subject"].startswith("sync items: change capture")]


# --------------------------------------------------------------------------- PostgreSQL slot


@pytest.fixture
def slot() -> Iterator[str]:
    """A slot name of this test's own, dropped afterwards whatever happened (it holds WAL)."""
    name = f"mapsync_t_{uuid.uuid4().hex[:12]}"
    yield name
    eng = sa.create_engine(h.engine(PG_URL).url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s"
                ),
                {"s": name},
            )
    finally:
        eng.dispose()


def _log_world(src: str, dst: str, folder: Path, slot: str, limit: str) -> None:
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL)")
    h.execute(dst, "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title VARCHAR(200) NOT NULL)")
    (folder / "sheet.yaml").write_text(LOG_SHEET.format(src=src, dst=dst, slot=slot, limit=limit))


@pytest.mark.changelog
def _need_logical(url: str) -> None:
    """Skip where the server has no logical decoding, unless CI requires PostgreSQL."""
    if h.query(url, "SHOW wal_level")[0][0] != "logical":
        if "postgres" in REQUIRED:
            pytest.fail("PostgreSQL wal_level is not logical (scripts/services configures it)")
        pytest.skip("PostgreSQL wal_level is not logical")


def test_slot_retaining_wal_over_the_threshold_warns(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path, slot: str
) -> None:
    src = pg_database()
    _need_logical(src)
    _log_world(src, sqlite_database(), tmp_path, slot, "1kB")
    done = h.mapsync("changelog", "install", "sheet.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    done = h.mapsync("seed", "sheet.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # ~40 kB of changes the sync has not read yet: the slot keeps that WAL
    h.execute(
        src,
        "INSERT INTO items VALUES (:id, :name)",
        params=[{"id": i, "name": f"item {i} " + "x" * 150} for i in range(200)],
    )

    done = h.mapsync("check", "sheet.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    report = _json_of(done)
    assert report["ok"] is False
    assert [c["status"] for c in report["checks"] if c["status"] == "fail"] == []  # only the warning
    capture = _capture_findings(report)
    assert [c["status"] for c in capture] == ["note", "warn"]
    assert capture[0]["subject"] == "sync items: change capture (log)"
    assert f"slot {slot}" in capture[0]["detail"] and "warn above 1.0 KB" in capture[0]["detail"]
    assert (
        f"slot {slot} retains" in capture[1]["detail"] and "max_retained_wal 1.0 KB" in capture[1]["detail"]
    )
    text = h.mapsync("check", "sheet.yaml", cwd=tmp_path)
    assert text.returncode == 1 and "WARN" in text.stdout and "retains" in text.stdout

    done = h.mapsync("status", "sheet.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = _json_of(done)
    assert row["capture"]["method"] == "log"
    assert row["capture"]["detail"]["slot"] == slot
    assert row["capture"]["detail"]["retained_wal_bytes"] > 30_000
    assert len(row["warnings"]) == 1 and f"slot {slot} retains" in row["warnings"][0]
    text = h.mapsync("status", "sheet.yaml", cwd=tmp_path)
    assert "warning: items: slot" in text.stdout and "retains" in text.stdout


@pytest.mark.changelog
def test_slot_under_the_threshold_is_healthy(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path, slot: str
) -> None:
    src = pg_database()
    _need_logical(src)
    _log_world(src, sqlite_database(), tmp_path, slot, "1GB")
    assert h.mapsync("changelog", "install", "sheet.yaml", cwd=tmp_path).returncode == 0
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    h.execute(src, "INSERT INTO items VALUES (1, 'one')")
    done = h.mapsync("check", "sheet.yaml", "--json", cwd=tmp_path)
    report = _json_of(done)
    (capture,) = _capture_findings(report)
    assert capture["status"] == "ok" and "warn above 1.0 GB" in capture["detail"]
    assert done.returncode == 0, done.stdout
    (row,) = _json_of(h.mapsync("status", "sheet.yaml", "--json", cwd=tmp_path))
    assert row["warnings"] == [] and row["capture"]["detail"]["retained_wal_bytes"] < 1 << 30


def test_missing_slot_warns(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path, slot: str
) -> None:
    _log_world(pg_database(), sqlite_database(), tmp_path, slot, "1GB")
    done = h.mapsync("check", "sheet.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    warn = [c for c in _capture_findings(_json_of(done)) if c["status"] == "warn"]
    assert (
        len(warn) == 1 and "does not exist" in warn[0]["detail"] and "changelog install" in warn[0]["detail"]
    )


# --------------------------------------------------------------------------- queue backlog


@pytest.fixture(
    params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)], ids=["sqlite", "mariadb"]
)
def queue_src(request: pytest.FixtureRequest) -> str:
    factory: Callable[[], str] = request.getfixturevalue(f"{request.param}_database")
    return factory()


def test_queue_installation_and_backlog(
    queue_src: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = queue_src, sqlite_database()
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL)")
    h.execute(
        dst,
        "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title VARCHAR(50) NOT NULL "
        "CONSTRAINT no_bad CHECK (title <> 'bad'))",
    )
    (tmp_path / "sheet.yaml").write_text(QUEUE_SHEET.format(src=src, dst=dst))

    # not installed: a warning each for the queue table and the triggers, exit 1
    done = h.mapsync("check", "sheet.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    capture = _capture_findings(_json_of(done))
    warns = [c["detail"] for c in capture if c["status"] == "warn"]
    assert len(warns) == 2
    assert "queue table mapsync_changes does not exist" in warns[0]
    assert "triggers on items are missing" in warns[1]

    assert h.mapsync("triggers", "install", "sheet.yaml", cwd=tmp_path).returncode == 0
    assert h.mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    h.execute(
        src,
        "INSERT INTO items VALUES (:id, :name)",
        params=[{"id": i, "name": "bad" if i == 3 else f"n{i}"} for i in range(1, 6)],
    )
    h.execute(src, "UPDATE items SET name = 'n1b' WHERE id = 1")

    # installed, 6 `new` rows waiting: no warning, check passes, the backlog is shown
    done = h.mapsync("check", "sheet.yaml", "--json", cwd=tmp_path)
    report = _json_of(done)
    (capture,) = _capture_findings(report)
    assert capture["status"] == "ok"
    assert (
        "triggers installed" in capture["detail"]
        and "backlog 6 new, 0 error, oldest new" in capture["detail"]
    )
    assert done.returncode == 0, done.stdout
    (row,) = _json_of(h.mapsync("status", "sheet.yaml", "--json", cwd=tmp_path))
    assert row["warnings"] == []
    detail = row["capture"]["detail"]
    assert detail["queue_table"] is True and detail["triggers"] == "installed"
    assert detail["counts"]["new"] == 6 and detail["counts"]["error"] == 0
    assert 0 <= detail["oldest_new_seconds"] < 120

    # a run delivers all but the refused row, which stays `error` (max_retries 0)
    h.mapsync("run", "sheet.yaml", cwd=tmp_path)
    (row,) = _json_of(h.mapsync("status", "sheet.yaml", "--json", cwd=tmp_path))
    counts = row["capture"]["detail"]["counts"]
    assert counts["new"] == 0 and counts["error"] == 1
    assert row["capture"]["detail"]["oldest_new_seconds"] is None
    text = h.mapsync("status", "sheet.yaml", cwd=tmp_path)
    assert "items: queue mapsync_changes (there), triggers installed; backlog 0 new, 1 error" in text.stdout
    errors = _json_of(h.mapsync("errors", "sheet.yaml", "--json", cwd=tmp_path))
    assert [e["key"] for e in errors] == [{"id": 3}]  # the `error` row is a record error too

    # triggers removed by hand: a warning again
    assert h.mapsync("triggers", "remove", "sheet.yaml", cwd=tmp_path).returncode == 0
    (row,) = _json_of(h.mapsync("status", "sheet.yaml", "--json", cwd=tmp_path))
    assert len(row["warnings"]) >= 1 and any("triggers on items are missing" in w for w in row["warnings"])
    assert h.mapsync("check", "sheet.yaml", cwd=tmp_path).returncode == 1


def test_unreachable_source_is_a_warning_not_a_traceback(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """The queue's source database does not exist: `status` still answers (exit 0) with a warning
    naming the problem, `check` fails; neither prints a traceback or the password."""
    gone = sa.make_url(pg_database()).set(database="mapsync_t_no_such_db", password="s3cret-pw")
    src = gone.render_as_string(hide_password=False)
    dst = sqlite_database()
    h.execute(dst, "CREATE TABLE items_dst (item_id INTEGER PRIMARY KEY, title VARCHAR(50) NOT NULL)")
    (tmp_path / "sheet.yaml").write_text(QUEUE_SHEET.format(src=src, dst=dst))
    StateStore.open("sqlite:///.mapsync/state.db", tmp_path, create=True).close()
    done = h.mapsync("status", "sheet.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = _json_of(done)
    assert row["capture"]["summary"] == "could not check"
    (warning,) = row["warnings"]
    assert warning.startswith("could not read the queue's status:") and "mapsync_t_no_such_db" in warning
    done = h.mapsync("check", "sheet.yaml", cwd=tmp_path)
    assert done.returncode == 1
    for text in (done.stdout + done.stderr, json.dumps(row)):
        assert "Traceback" not in text and "s3cret-pw" not in text
