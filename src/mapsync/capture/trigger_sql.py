"""Pieces of the trigger DDL (`triggers`): quoting, and the condition under which an UPDATE that
keeps the key writes its `edit` when the target ignores some columns (the write-back of an
`export_flag` sync reading the same table must not come back as an edit).

Such an UPDATE writes its `edit` only when a column outside `ignore` (and outside the key, which
is unchanged there) differs, compared NULL-safely and byte for byte: a change of case, or of
trailing spaces, is a change even where the column's collation calls the values equal.
PostgreSQL compares the rows as JSON without the ignored columns (so a column added after the
install counts too); MariaDB `NOT (BINARY OLD.c <=> BINARY NEW.c AND …)`; SQLite
`OLD.c IS NOT NEW.c COLLATE BINARY OR …`; SQL Server (generated only) the FOR JSON text of the
old and new row without the ignored columns, under a binary collation.
"""

from __future__ import annotations

from collections.abc import Callable


def ident(dialect: str, name: str) -> str:
    """A quoted identifier; `schema.table` is quoted part by part."""
    return ".".join(_quote1(dialect, part) for part in name.split("."))


def _quote1(dialect: str, name: str) -> str:
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    if dialect == "mssql":
        return "[" + name.replace("]", "]]") + "]"
    return '"' + name.replace('"', '""') + '"'


def literal(dialect: str, text: str) -> str:
    """A string literal."""
    body = text.replace("'", "''")
    if dialect == "mysql":
        body = body.replace("\\", "\\\\")
    return ("N'" if dialect == "mssql" else "'") + body + "'"


def differs(
    dialect: str, table: str, key: tuple[str, ...], columns: tuple[str, ...], ignore: tuple[str, ...]
) -> str:
    """PostgreSQL, MariaDB, SQLite: some column outside `ignore` and `key` differs (OLD, NEW)."""
    if dialect == "postgresql":
        names = "ARRAY[" + ", ".join(literal(dialect, c) for c in ignore) + "]::text[]"
        return f"(to_jsonb(OLD) - {names}) IS DISTINCT FROM (to_jsonb(NEW) - {names})"
    if not columns:
        raise ValueError(f"table {table}: ignoring columns needs the table's column list")
    cols = [ident(dialect, c) for c in columns if c not in ignore and c not in key]
    if dialect == "mysql":
        same = " AND ".join(f"BINARY OLD.{c} <=> BINARY NEW.{c}" for c in cols)
        return f"NOT ({same})" if cols else "FALSE"
    return "(" + " OR ".join(f"OLD.{c} IS NOT NEW.{c} COLLATE BINARY" for c in cols) + ")" if cols else "0"


def mssql_unchanged(match: Callable[[str, str], str], ignore: tuple[str, ...]) -> str:
    """SQL Server: the WHERE clause (over `inserted AS n`) that drops the rows whose key stayed and
    whose other columns did not change; `match(a, b)` compares the key of two aliases."""

    def image(alias: str, rows: str) -> str:
        where = match("x", alias)
        expr = f"(SELECT x.* FROM {rows} AS x WHERE {where} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER)"  # noqa: S608
        for c in ignore:  # JSON_MODIFY(…, NULL) removes the property (lax mode)
            path = '$."' + c.replace("\\", "\\\\").replace('"', '\\"') + '"'
            expr = f"JSON_MODIFY({expr}, {literal('mssql', path)}, NULL)"
        return expr

    return (
        f"\n  WHERE NOT EXISTS (SELECT 1 FROM deleted AS o WHERE {match('o', 'n')}\n"  # noqa: S608  (quoted names)
        f"    AND {image('o', 'deleted')} = {image('n', 'inserted')} COLLATE Latin1_General_BIN2)"
    )
