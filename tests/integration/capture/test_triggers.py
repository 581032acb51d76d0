"""`mapsync triggers install|remove|status|purge`: idempotent install, the printed DDL applied by
hand with the database's own client, remove, SQL Server DDL, and clear errors for bad setups."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync.capture import triggers
from tests import helpers as h
from tests.queue_world import QUEUE, World

EXPECTED = {"postgresql": 1, "mysql": 3, "sqlite": 4}  # trigger objects per source table


def trigger_count(url: str) -> int:
    d = h.dialect(url)
    sql = {
        "postgresql": "SELECT COUNT(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'mapsync_changes%'",
        "mysql": "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() "
        "AND TRIGGER_NAME LIKE 'mapsync_changes%'",
        "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'mapsync_changes%'",
    }[d]
    return int(h.query(url, sql)[0][0])


def queue_rows(url: str) -> list[tuple[str, str]]:
    rows = h.query(url, f"SELECT change_type, record_key FROM {QUEUE} ORDER BY id")
    return [(str(c), str(k).replace(" ", "")) for c, k in rows]


def has_table(url: str, name: str) -> bool:
    eng = h.engine(url)
    try:
        return name in sa.inspect(eng).get_table_names()
    finally:
        eng.dispose()


def test_install_is_idempotent_and_remove_drops(database: Callable[[], str], tmp_path: Path) -> None:
    w = World(database(), database(), tmp_path)
    src = w.src
    missing = w.status_json()
    assert missing[0]["triggers"] == "missing" and not missing[0]["queue_table"]
    w.install()
    w.add((1, "a"))
    w.install()  # again: triggers replaced, the queued row kept
    assert trigger_count(src) == EXPECTED[w.dialect]
    w.add((2, "b"))  # one queue row per change, not one per install
    assert queue_rows(src) == [("add", "[1]"), ("add", "[2]")]
    (status,) = w.status_json()
    assert status["triggers"] == "installed" and status["counts"]["new"] == 2
    assert status["oldest_new_seconds"] is not None and status["oldest_new_seconds"] < 600

    done = w.cli("triggers", "remove", "sheet.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert trigger_count(src) == 0
    w.add((3, "c"))  # no longer captured
    assert len(queue_rows(src)) == 2 and has_table(src, QUEUE)
    status_done = w.cli("triggers", "status", "sheet.yaml")
    assert status_done.returncode == 1 and "missing" in status_done.stdout
    done = w.cli("triggers", "remove", "sheet.yaml", "--drop-table")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not has_table(src, QUEUE)


def _apply_by_hand(url: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run a script through the database's own command-line client, as a DBA would."""
    parsed = sa.make_url(url)
    d = h.dialect(url)
    if d == "postgresql":
        cmd = [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            parsed.host or "127.0.0.1",
            "-p",
            str(parsed.port or 5432),
        ]
        cmd += ["-U", parsed.username or "postgres", "-d", str(parsed.database)]
    elif d == "mysql":
        cmd = [
            "mariadb",
            "-h",
            parsed.host or "127.0.0.1",
            "-P",
            str(parsed.port or 3306),
            "-u",
            parsed.username or "root",
        ]
        cmd += [str(parsed.database)]
    else:
        cmd = ["sqlite3", "-bail", str(parsed.database)]
    return subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=60, check=False)


def test_printed_ddl_applies_by_hand(database: Callable[[], str], tmp_path: Path) -> None:
    w = World(database(), database(), tmp_path)
    src = w.src
    done = w.cli("triggers", "install", "sheet.yaml", "--print")
    assert done.returncode == 0, done.stdout + done.stderr
    assert trigger_count(src) == 0 and not has_table(src, QUEUE)  # printed, not executed
    applied = _apply_by_hand(src, done.stdout)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    applied = _apply_by_hand(src, done.stdout)  # a DBA may apply it twice
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert trigger_count(src) == EXPECTED[w.dialect]
    (status,) = w.status_json()
    assert status["triggers"] == "installed" and status["queue_table"]
    w.add((1, "a"), (2, "b"))
    h.execute(src, "UPDATE items SET name = 'a2' WHERE id = 1", "DELETE FROM items WHERE id = 2")
    h.execute(src, "UPDATE items SET id = 10 WHERE id = 1")
    assert queue_rows(src) == [
        ("add", "[1]"),
        ("add", "[2]"),
        ("edit", "[1]"),
        ("delete", "[2]"),
        ("delete", "[1]"),
        ("add", "[10]"),
    ]
    images = [
        r[0] for r in h.query(src, f"SELECT old_image FROM {QUEUE} WHERE change_type = 'delete' ORDER BY id")
    ]
    decoded = [json.loads(i) if isinstance(i, str) else i for i in images]
    assert decoded == [{"id": 2, "name": "b"}, {"id": 1, "name": "a2"}]

    removed = w.cli("triggers", "remove", "sheet.yaml", "--print")
    assert removed.returncode == 0 and trigger_count(src) == EXPECTED[w.dialect]
    applied = _apply_by_hand(src, removed.stdout)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert trigger_count(src) == 0


def test_sql_server_ddl_is_generated_without_a_connection(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    done = w.cli("triggers", "install", "sheet.yaml", "--print", "--dialect", "mssql")
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    for part in (
        "CREATE TABLE [mapsync_changes]",
        "IDENTITY(1,1)",
        "CREATE OR ALTER TRIGGER [mapsync_changes_items] ON [items]",
        "AFTER INSERT, UPDATE, DELETE",
        "FROM deleted AS o WHERE NOT EXISTS (SELECT 1 FROM inserted AS n WHERE n.[id] = o.[id])",
        "JSON_MODIFY('[]', 'append $', n.[id])",
        "FOR JSON PATH, WITHOUT_ARRAY_WRAPPER",
        "\nGO\n",
    ):
        assert part in text, part
    removed = w.cli("triggers", "remove", "sheet.yaml", "--print", "--dialect", "mssql", "--drop-table")
    assert "DROP TRIGGER IF EXISTS [mapsync_changes_items]" in removed.stdout
    assert "DROP TABLE IF EXISTS [mapsync_changes]" in removed.stdout


def test_trigger_names_stay_short_and_stable() -> None:
    long = "a_really_long_schema_name.an_even_longer_table_name_for_the_orders_of_customers"
    name = triggers.trigger_name("mapsync_changes", long, "ai")
    assert len(name) <= 63 and name == triggers.trigger_name("mapsync_changes", long, "ai")
    assert triggers.trigger_name("mapsync_changes", long) != triggers.trigger_name(
        "mapsync_changes", long + "2"
    )
    assert (
        triggers.ident("mysql", "we`ird") == "`we``ird`" and triggers.literal("postgresql", "o'k") == "'o''k'"
    )


SHEET_BAD = """
version: 1
connections:
  src: {{url: "{src}"}}
syncs:
  q1:
    from: {{connection: src, {from_}}}
    to: {{connection: src, table: dst}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: queue}}
    deletes: {{policy: hard}}
  q2:
    from: {{connection: src, table: items}}
    to: {{connection: src, table: dst}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: {method}}}
    deletes: {{policy: ignore}}
  w:
    from: {{connection: src, table: items}}
    to: {{connection: src, table: dst}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
"""


@pytest.mark.parametrize(
    ("from_", "method", "args", "message"),
    [
        ('query: "SELECT id, name FROM items"', "full", [], "needs `from.table`"),
        ("table: items", "queue", [], "both read table 'items' through queue 'mapsync_changes'"),
        ("table: items", "full", ["--sync", "w"], "sync w does not use `changes: {method: queue}`"),
        ("table: nope", "full", [], "unknown table 'nope'"),
        ("table: items", "full", ["--print", "--dialect", "oracle"], "--dialect: one of"),
        ("table: items", "full", ["--dialect", "mssql"], "--dialect goes with --print"),
    ],
)
def test_bad_setups_are_clear_errors(
    tmp_path: Path, sqlite_database: Callable[[], str], from_: str, method: str, args: list[str], message: str
) -> None:
    src = sqlite_database()
    h.execute(
        src,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE dst (id INTEGER PRIMARY KEY, name TEXT)",
    )
    (tmp_path / "sheet.yaml").write_text(SHEET_BAD.format(src=src, from_=from_, method=method))
    done = h.mapsync("triggers", "install", "sheet.yaml", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr


def test_running_without_the_queue_table_says_install(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    done = w.cli("seed", "sheet.yaml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "mapsync triggers install" in " ".join(done.stderr.split()) and "Traceback" not in done.stderr
