"""Queue triggers ignore the write-back of an `export_flag` sync reading the same table: a sheet
with both installs (through `mapsync triggers install`) triggers whose UPDATE writes no `edit`
when only the written-back columns changed, on real PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests import helpers as h
from tests.integration.capture.test_triggers import EXPECTED, queue_rows, trigger_count
from tests.queue_world import World

# a second sync of the same source table (appended under the World's `syncs:`)
EXPORT_SYNC = """
  export:
    from: {connection: src, table: items}
    to: {connection: dst, table: items}
    key: {from: id, to: id}
    fields: {name: name}
    changes: {method: export_flag, flag: exported, status: erp_import_status}
"""


def world(src: str, dst: str, folder: Path) -> World:
    w = World(src, dst, folder)
    h.execute(
        src,
        "ALTER TABLE items ADD COLUMN exported INTEGER",
        "ALTER TABLE items ADD COLUMN erp_import_status VARCHAR(20)",
        # case-insensitive, as MariaDB's default collation is
        "ALTER TABLE items ADD COLUMN code VARCHAR(20)"
        + (" COLLATE NOCASE" if w.dialect == "sqlite" else ""),
    )
    sheet = folder / "sheet.yaml"
    sheet.write_text(sheet.read_text() + EXPORT_SYNC)
    w.install()
    return w


def test_an_update_of_only_the_written_back_columns_writes_no_queue_row(
    database: Callable[[], str], tmp_path: Path
) -> None:
    w = world(database(), database(), tmp_path)
    src = w.src
    assert trigger_count(src) == EXPECTED[w.dialect]
    (status,) = w.status_json()  # the presence check accepts them
    assert status["sync"] == "items" and status["triggers"] == "installed"
    w.add((1, "a"), (2, "b"))
    assert queue_rows(src) == [("add", "[1]"), ("add", "[2]")]  # INSERT as before

    # the export's write-back, its reset, and a no-op: nothing comes back as an edit
    h.execute(src, "UPDATE items SET exported = 1, erp_import_status = 'success' WHERE id = 1")
    h.execute(src, "UPDATE items SET erp_import_status = NULL WHERE id = 1")  # NULL-safe
    h.execute(src, "UPDATE items SET exported = NULL, erp_import_status = 'pending'")  # both rows
    h.execute(src, "UPDATE items SET name = 'a' WHERE id = 1")
    assert len(queue_rows(src)) == 2

    # another column, alone or with the written-back ones, is an edit (one row per update)
    h.execute(src, "UPDATE items SET name = 'a2' WHERE id = 1")
    h.execute(src, "UPDATE items SET name = 'b2', exported = 1, erp_import_status = 'success' WHERE id = 2")
    h.execute(src, "UPDATE items SET name = NULL WHERE id = 2")  # to NULL
    h.execute(src, "UPDATE items SET name = 'B2' WHERE id = 2")  # from NULL
    h.execute(src, "UPDATE items SET name = 'b2' WHERE id = 2")  # case only: a change, whatever the collation
    h.execute(src, "UPDATE items SET code = 'x' WHERE id = 2", "UPDATE items SET code = 'X' WHERE id = 2")
    assert queue_rows(src)[2:] == [("edit", "[1]")] + [("edit", "[2]")] * 6

    # a key change is still delete + add, even with only ignored columns beside it; DELETE as before
    h.execute(src, "UPDATE items SET id = 10, exported = 0 WHERE id = 1")
    h.execute(src, "DELETE FROM items WHERE id = 2")
    assert queue_rows(src)[9:] == [("delete", "[1]"), ("add", "[10]"), ("delete", "[2]")]
    images = h.query(src, "SELECT old_image FROM mapsync_changes WHERE change_type = 'delete' ORDER BY id")
    decoded = [json.loads(i) if isinstance(i, str) else i for (i,) in images]
    assert [(d["id"], d["name"], d["code"], d["exported"]) for d in decoded] == [
        (1, "a2", None, None),
        (2, "b2", "X", 1),
    ]


def test_without_an_export_sync_every_update_is_an_edit(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """The control: the same columns, no export_flag sync on the table, nothing ignored."""
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    h.execute(w.src, "ALTER TABLE items ADD COLUMN exported INTEGER")
    w.install()
    w.add((1, "a"))
    h.execute(w.src, "UPDATE items SET exported = 1 WHERE id = 1")
    assert queue_rows(w.src) == [("add", "[1]"), ("edit", "[1]")]


def test_sql_server_ddl_names_the_ignored_columns(sqlite_database: Callable[[], str], tmp_path: Path) -> None:
    w = world(sqlite_database(), sqlite_database(), tmp_path)
    done = w.cli("triggers", "install", "sheet.yaml", "--print", "--dialect", "mssql")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "N'$.\"exported\"', NULL), N'$.\"erp_import_status\"', NULL)" in done.stdout
    assert (
        "FROM inserted AS n\n  WHERE NOT EXISTS (SELECT 1 FROM deleted AS o WHERE o.[id] = n.[id]\n"
        in done.stdout
    )


def test_a_written_back_column_missing_from_the_table_is_a_clear_error(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    w = World(sqlite_database(), sqlite_database(), tmp_path)
    h.execute(w.src, "ALTER TABLE items ADD COLUMN exported INTEGER")  # no erp_import_status
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(sheet.read_text() + EXPORT_SYNC)
    done = w.cli("triggers", "install", "sheet.yaml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "column(s) erp_import_status, written back by an export_flag sync" in " ".join(done.stderr.split())
    assert trigger_count(w.src) == 0
