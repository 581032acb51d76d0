"""The trigger DDL text with and without `Target.ignore` (the queue tests run it on real databases:
tests/integration/capture/test_triggers*.py)."""

from __future__ import annotations

import hashlib

import pytest

from mapsync.capture import triggers

PLAIN = triggers.Target("items", ("id",), ("id", "name", "exported", "erp_import_status"))
IGNORING = triggers.Target("items", ("id",), PLAIN.columns, ("exported", "erp_import_status"))
WIDE = triggers.Target("s.orders", ("a", "b"), (*(f"c{i}" for i in range(130)), "a", "b"))

# sha256 of the install and remove statements of the targets below, as generated before `ignore`
# existed: with nothing ignored the DDL stays byte for byte what installed databases hold
BEFORE_IGNORE = {
    ("postgresql", "items"): "97ffe6e3462995f864e9150d2efae1ab67be1933b1140029e52226a2bd7c8cad",
    ("postgresql", "s.orders"): "b70be6be1b32e8ee649de73bc7467124c96ba3ee0fb80f42087258619d337078",
    ("mysql", "items"): "6db325d019f665f50001cd2cf7142f7141a7527b8443b19ed91a66c5833e811b",
    ("mysql", "s.orders"): "fd3acf80d7cb7c0231c388289f0124a356bdc13fa69192a991163dd7a3da466c",
    ("sqlite", "items"): "3f8abe67ff2b8b70876a6550253b58080450dc84b6e81a0b6d4b9c68a2917b0a",
    ("sqlite", "s.orders"): "612aebb2948e05946d46d15c539b17a50aee4f3a76920ed366a7fa96b42a3bb5",
    ("mssql", "items"): "d1e2bd7c845233c4698eed3232bc4796d6778f0aa216133d65ab3d8607e9a00d",
    ("mssql", "s.orders"): "e65f35a8ac3be69f0c4c21c16a7ff7cac418ae13c5cf6e93374a8f86263096fc",
}


def _text(dialect: str, target: triggers.Target) -> str:
    statements = triggers.install_statements(dialect, "mapsync_changes", [target], True)
    return "\n".join(statements + triggers.remove_statements(dialect, "mapsync_changes", [target], True))


@pytest.mark.parametrize(("dialect", "table"), sorted(BEFORE_IGNORE))
def test_without_ignore_the_ddl_is_unchanged(dialect: str, table: str) -> None:
    target = triggers.Target("items", ("id",), ("id", "name")) if table == "items" else WIDE
    assert hashlib.sha256(_text(dialect, target).encode()).hexdigest() == BEFORE_IGNORE[dialect, table]


def _update_trigger(dialect: str, target: triggers.Target) -> str:
    ddl = triggers.trigger_ddl(dialect, "mapsync_changes", target)
    if dialect == "postgresql":
        return ddl[0]
    if dialect == "mysql":
        return ddl[1]
    return ddl[3] if dialect == "sqlite" else ddl[0]  # sqlite: DROP, CREATE ai, DROP, CREATE au, …


def test_postgresql_compares_the_row_without_the_ignored_columns() -> None:
    plain, ignoring = _update_trigger("postgresql", PLAIN), _update_trigger("postgresql", IGNORING)
    assert '    ELSE\n      INSERT INTO "mapsync_changes"' in plain and "to_jsonb(NEW) -" not in plain
    names = "ARRAY['exported', 'erp_import_status']::text[]"
    assert (
        f"    ELSIF (to_jsonb(OLD) - {names}) IS DISTINCT FROM (to_jsonb(NEW) - {names}) THEN\n"
        '      INSERT INTO "mapsync_changes" (change_type, table_name, record_key, old_image) '
        "VALUES ('edit', 'items', json_build_array(NEW.\"id\")::text, NULL);\n"
        "    ELSE\n      RETURN NULL;\n    END IF;\n"
    ) in ignoring
    assert ignoring.count('IF ROW(OLD."id") IS DISTINCT FROM ROW(NEW."id") THEN') == 1  # key change as before


def test_mariadb_compares_the_other_columns_byte_for_byte() -> None:
    plain, ignoring = _update_trigger("mysql", PLAIN), _update_trigger("mysql", IGNORING)
    assert "  ELSE\n    INSERT" in plain and "ELSEIF" not in plain
    assert "  ELSEIF NOT (BINARY OLD.`name` <=> BINARY NEW.`name`) THEN\n    INSERT" in ignoring
    assert "exported`" not in ignoring.split("ELSEIF")[1].split("THEN")[0]
    assert "  IF NOT (OLD.`id` <=> NEW.`id`) THEN\n" in ignoring  # key change as before


def test_sqlite_adds_the_other_columns_to_the_when_clause() -> None:
    plain, ignoring = _update_trigger("sqlite", PLAIN), _update_trigger("sqlite", IGNORING)
    assert 'FOR EACH ROW WHEN NOT (OLD."id" IS NOT NEW."id")\nBEGIN' in plain
    assert (
        'FOR EACH ROW WHEN NOT (OLD."id" IS NOT NEW."id") AND (OLD."name" IS NOT NEW."name" COLLATE BINARY)\n'
        "BEGIN\n  INSERT INTO \"mapsync_changes\" (change_type, table_name, record_key, old_image) VALUES ('edit'"
    ) in ignoring
    moved = triggers.trigger_ddl("sqlite", "mapsync_changes", IGNORING)[5]  # the key-change trigger
    assert moved == triggers.trigger_ddl("sqlite", "mapsync_changes", PLAIN)[5]


def test_sql_server_drops_unchanged_rows_from_the_edits() -> None:
    plain = _update_trigger("mssql", triggers.Target("items", ("id",), ()))
    ignoring = _update_trigger("mssql", triggers.Target("items", ("id",), (), ("exported", 'we"ird')))
    assert plain.endswith("  FROM inserted AS n;\nEND")
    assert ignoring.startswith(plain.removesuffix(";\nEND"))  # the rest as before
    assert 'N\'$."exported"\', NULL), N\'$."we\\"ird"\', NULL)' in ignoring
    assert (
        "FOR JSON PATH, WITHOUT_ARRAY_WRAPPER), N'$" in ignoring
        and "COLLATE Latin1_General_BIN2);\nEND" in ignoring
    )


def test_all_but_the_key_ignored_writes_no_edit_and_no_columns_is_refused() -> None:
    only = triggers.Target("items", ("id",), ("id", "exported"), ("exported",))
    assert "  ELSEIF FALSE THEN\n" in _update_trigger("mysql", only)
    assert 'WHEN NOT (OLD."id" IS NOT NEW."id") AND 0\n' in _update_trigger("sqlite", only)
    blind = triggers.Target("items", ("id",), (), ("exported",))  # MariaDB, SQLite list the columns
    for dialect in ("mysql", "sqlite"):
        with pytest.raises(ValueError, match="column list"):
            triggers.trigger_ddl(dialect, "mapsync_changes", blind)
    assert "to_jsonb(OLD)" in _update_trigger("postgresql", blind)  # PostgreSQL needs none
