"""Bad input on real databases (RELIABILITY G1, G4, G5, H3, H4).

Names from the sheet that look like SQL are refused against the catalog (and always quoted when
they do exist); data values travel as parameters, verbatim; values a destination column cannot
hold become per-record errors naming the field and the limit while the rest is delivered, also
on MariaDB with a lenient server-wide sql_mode.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.dialects import mysql

from mapsync.connectors.sql import SqlDatabase
from tests import helpers as h

INJECTION = "orders; DROP TABLE canary;--"
HOMOGLYPH_TABLE = "\u0441ustomers"  # Cyrillic с: looks like `customers`
HOMOGLYPH_COLUMN = "n\u0430me"  # Cyrillic а: looks like `name`

# values that break naive string-built SQL, printf-style or format-style parameter handling
TRICKY = [
    "O'Brien",
    "'); DROP TABLE canary; --",
    '"; DROP TABLE canary; --',
    "%s",
    "%(id)s",
    "%%",
    "{}",
    "{0}",
    ":txt",
    "?",
    "$1",
    "`tick`",
    "back\\slash \\' \\N",
    "line\nbreak\r\nand\ttab",
    "emoji 😀 and ümlaut",
    "  padded  ",
    "",
    "NULL",
    "\\.",
]


def write_sheet(tmp_path: Path, connections: dict[str, str], syncs: dict[str, Any]) -> Path:
    data = {
        "version": 1,
        "connections": {name: {"url": url} for name, url in connections.items()},
        "syncs": syncs,
    }
    path = tmp_path / "sheet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def sync(
    src: str,
    dst: str,
    fields: dict[str, Any],
    key: tuple[str, str] = ("id", "id"),
    changes: dict[str, str] | None = None,
    src_conn: str = "db",
) -> dict[str, Any]:
    return {
        "from": {"connection": src_conn, "table": src},
        "to": {"connection": "db", "table": dst},
        "key": {"from": key[0], "to": key[1]},
        "fields": fields,
        "changes": changes or {"method": "full"},
    }


def create(url: str, *tables: sa.Table, rows: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Create tables through SQLAlchemy (the dialect quotes every name) and insert rows."""
    engine = h.engine(url)
    try:
        metadata = tables[0].metadata
        metadata.create_all(engine, tables=list(tables))
        with engine.begin() as conn:
            for table in tables:
                if rows and rows.get(table.name):
                    conn.execute(table.insert(), rows[table.name])
    finally:
        engine.dispose()


def select_all(url: str, table: sa.Table) -> list[tuple[Any, ...]]:
    engine = h.engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]
    finally:
        engine.dispose()


def record_errors(sheet: Path) -> dict[str, list[dict[str, Any]]]:
    result = h.mapsync("errors", str(sheet), "--json", cwd=sheet.parent)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    by_sync: dict[str, list[dict[str, Any]]] = {}
    for row in json.loads(result.stdout):
        row["key"] = json.dumps(list(row["key"].values()))  # the key object by column, as list text
        by_sync.setdefault(row["sync"], []).append(row)
    for rows in by_sync.values():
        rows.sort(key=lambda r: json.loads(r["key"]))
    return by_sync


# the tests that set the server's global sql_mode run on one xdist worker, one after the other,
# so that one never records another's '' as the mode to restore (scripts/test: --dist loadgroup)
GLOBAL_SQL_MODE = pytest.mark.xdist_group("mariadb_global_sql_mode")


@contextlib.contextmanager
def lenient_mariadb(url: str) -> Iterator[None]:
    """The server's global sql_mode set to '' (non-strict: it would truncate with a warning).
    A named lock on the server keeps other runs against it (not only this run's workers) from
    doing the same meanwhile and restoring each other's ''."""
    engine = sa.create_engine(h.engine(url).url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as held:
            got = held.execute(sa.text("SELECT GET_LOCK('mapsync_tests_global_sql_mode', 300)"))
            assert got.scalar_one() == 1, "another run kept the server's sql_mode lenient for 5 minutes"
            with engine.connect() as conn:
                old = conn.execute(sa.text("SELECT @@GLOBAL.sql_mode")).scalar_one()
                conn.execute(sa.text("SET GLOBAL sql_mode = ''"))
            try:
                yield
            finally:
                with engine.connect() as conn:
                    conn.execute(sa.text("SET GLOBAL sql_mode = :mode"), {"mode": old})
                held.execute(sa.text("SELECT RELEASE_LOCK('mapsync_tests_global_sql_mode')"))
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- names (H3)


def test_injection_in_names_is_refused_and_the_canary_survives(
    database: Callable[[], str], tmp_path: Path
) -> None:
    url = database()
    md = sa.MetaData()
    canary = sa.Table("canary", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))
    sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200)),
        sa.Column("updated_at", sa.DateTime),
    )
    sa.Table(
        "accounts",
        md,
        sa.Column("erp_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("nm", sa.String(150)),
    )
    create(url, *md.sorted_tables, rows={"canary": [{"id": 1}], "customers": [{"id": 1, "name": "Ada"}]})

    def customers(**change: Any) -> dict[str, Any]:
        base = sync("customers", "accounts", {"nm": "name"}, key=("id", "erp_id"))
        for part, value in change.items():
            if part in ("from", "to"):
                base[part] = {**base[part], "table": value}
            else:
                base[part] = value
        return base

    bad: dict[str, tuple[dict[str, Any], str]] = {
        "src_table": (customers(**{"from": INJECTION}), INJECTION),
        "dst_table": (customers(to='accounts"; DROP TABLE canary; --'), 'accounts"; DROP TABLE canary; --'),
        "src_col_quote": (customers(fields={"nm": {"from": 'a"b'}}), 'a"b'),
        "src_col_tick": (customers(fields={"nm": {"from": "a`b"}}), "a`b"),
        "dst_field": (customers(fields={"nm`; DROP TABLE canary; --": "name"}), "nm`; DROP TABLE canary; --"),
        "src_key": (
            customers(key={"from": "id; DROP TABLE canary", "to": "erp_id"}),
            "id; DROP TABLE canary",
        ),
        "dst_key": (customers(key={"from": "id", "to": 'erp_id" OR "1"="1'}), 'erp_id" OR "1"="1'),
        "homoglyph_table": (customers(**{"from": HOMOGLYPH_TABLE}), HOMOGLYPH_TABLE),
        "homoglyph_col": (customers(fields={"nm": {"from": HOMOGLYPH_COLUMN}}), HOMOGLYPH_COLUMN),
        "ts_column": (
            customers(changes={"method": "watermark", "column": "updated_at; DROP TABLE canary"}),
            "updated_at; DROP TABLE canary",
        ),
    }
    sheet = write_sheet(tmp_path, {"db": url}, {name: cfg for name, (cfg, _) in bad.items()})
    if h.dialect(url) == "sqlite":  # (once) to the sheet, names are only text: the catalog decides
        assert h.mapsync("validate", str(sheet), cwd=tmp_path).returncode == 0

    result = h.mapsync("seed", str(sheet), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad), result.stderr
    for (name, (_, name_used)), line in zip(bad.items(), errors, strict=True):
        assert line.startswith(f"error: sync {name}: "), line
        assert name_used in line, (name_used, line)
    # the look-alike is told apart from the real name
    homoglyph = errors[list(bad).index("homoglyph_table")]
    assert "did you mean 'customers'? the name given is '\\u0441ustomers'" in homoglyph
    # nothing was executed: the canary and every table are intact, nothing was written
    assert select_all(url, canary) == [(1,)]
    assert h.query(url, "SELECT COUNT(*) FROM accounts") == [(0,)]
    engine = h.engine(url)
    try:
        assert set(sa.inspect(engine).get_table_names()) >= {"canary", "customers", "accounts"}
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- values (H4)


def test_names_and_values_that_look_like_sql_travel_verbatim(
    database: Callable[[], str], tmp_path: Path
) -> None:
    """An existing table literally named like an injection, with columns `a"b` and a`b, syncs
    (every name quoted), and every tricky value lands byte for byte: on the seed (PostgreSQL:
    COPY) and on a later run (upsert statements)."""
    url = database()
    md = sa.MetaData()
    canary = sa.Table("canary", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))

    def table(name: str, key: str) -> sa.Table:
        return sa.Table(
            name,
            md,
            sa.Column(key, sa.Integer, primary_key=True, autoincrement=False),
            sa.Column('a"b', sa.Text),
            sa.Column("a`b", sa.String(100)),
        )

    src, dst = table(INJECTION, "id"), table('dest "x"; --', "k")
    values = TRICKY
    rows = [{"id": i, 'a"b': v, "a`b": str(i)} for i, v in enumerate(values)]
    create(url, *md.sorted_tables, rows={"canary": [{"id": 1}], INJECTION: rows})
    sheet = write_sheet(
        tmp_path,
        {"db": url},
        {"weird": sync(INJECTION, 'dest "x"; --', {'a"b': 'a"b', "a`b": "a`b"}, key=("id", "k"))},
    )
    result = h.mapsync("seed", str(sheet), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert select_all(url, dst) == [(r["id"], r['a"b'], r["a`b"]) for r in rows]

    # the same values again, each moved to another row: written by the run's upserts
    engine = h.engine(url)
    try:
        with engine.begin() as conn:
            for i in range(len(values)):
                conn.execute(src.update().where(src.c.id == i).values({'a"b': values[(i + 1) % len(values)]}))
    finally:
        engine.dispose()
    result = h.mapsync("run", str(sheet), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = [(i, values[(i + 1) % len(values)], str(i)) for i in range(len(values))]
    assert select_all(url, dst) == expected
    assert select_all(url, canary) == [(1,)]


# --------------------------------------------------------------------------- per-record errors (G1, G4, G5)


@GLOBAL_SQL_MODE
def test_values_the_destination_cannot_hold_are_record_errors(
    database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    url = database()
    lite = sqlite_database()  # a source that can hold a NUL byte in text
    dialect = h.dialect(url)
    md = sa.MetaData()
    sa.Table(
        "src",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text),
        sa.Column("note", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")),
    )
    sized = sa.Table(
        "sized",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("nm", sa.String(150)),
        sa.Column("note", sa.Text),
    )
    required = sa.Table(
        "required",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("nm", sa.String(150), nullable=False),
    )
    texts = sa.Table(
        "texts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("nm", sa.Text),
    )
    huge_note = "n" * 70_000  # over a MariaDB TEXT (65,535 bytes): lenient mode would cut it
    source_rows = [
        {"id": 1, "name": "short", "note": "ok"},
        {"id": 2, "name": "x" * 212, "note": "ok"},
        {"id": 3, "name": "é" * 150, "note": "ok"},  # 150 characters, 300 bytes: fits
        {"id": 4, "name": "y" * 151, "note": "ok"},
        {"id": 5, "name": "😀" * 150, "note": "ok"},  # 4-byte characters count as one
        {"id": 6, "name": None, "note": huge_note},
        {"id": 7, "name": "last", "note": None},
    ]
    create(url, *md.sorted_tables, rows={"src": source_rows})
    lite_md = sa.MetaData()
    lite_src = sa.Table(
        "src",
        lite_md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text),
    )
    create(
        lite,
        lite_src,
        rows={"src": [{"id": 1, "name": "before"}, {"id": 2, "name": "a\x00b"}, {"id": 3, "name": "after"}]},
    )
    sheet = write_sheet(
        tmp_path,
        {"db": url, "lite": lite},
        {
            "sized": sync("src", "sized", {"nm": "name", "note": "note"}),
            "required": sync("src", "required", {"nm": "name"}),
            "nul": sync("src", "texts", {"nm": "name"}, src_conn="lite"),
        },
    )

    lenient = lenient_mariadb(url) if dialect == "mysql" else contextlib.nullcontext()
    with lenient:
        if dialect == "mysql":
            # the server is lenient now, but mapsync's own sessions are strict
            assert h.query(url, "SELECT @@GLOBAL.sql_mode") == [("",)]
            db = SqlDatabase("db", url, tmp_path)
            try:
                with db.engine.connect() as conn:
                    mode = conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar_one()
            finally:
                db.close()
            assert "STRICT_ALL_TABLES" in mode
        result = h.mapsync("seed", str(sheet), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr  # records failed, the run did not
    assert "Traceback" not in result.stdout + result.stderr
    errors = record_errors(sheet)

    # G1: too long for VARCHAR(150), no truncate rule → error naming field and limit
    expected_sized = {
        "[2]": "field `nm` length 212 > 150",
        "[4]": "field `nm` length 151 > 150",
    }
    if dialect == "mysql":
        expected_sized["[6]"] = "note"  # the database refuses what lenient mode would have cut
    got = {e["key"]: e for e in errors.get("sized", [])}
    assert set(got) == set(expected_sized), errors.get("sized")
    for key, text in expected_sized.items():
        assert text in got[key]["message"], got[key]
        assert got[key]["attempts"] == 1
    assert got["[2]"]["field"] == "nm" and got["[2]"]["rule"] == "length"
    delivered = {r[0]: r for r in select_all(url, sized)}
    assert sorted(delivered) == sorted({1, 3, 5, 6, 7} - ({6} if dialect == "mysql" else set()))
    for row in source_rows:
        if row["id"] in delivered:
            assert delivered[row["id"]] == (row["id"], row["name"], row["note"])  # nothing cut

    # G5: NULL into NOT NULL (no default) → error before sending; the rest is delivered
    got = {e["key"]: e for e in errors.get("required", [])}
    assert set(got) == {"[2]", "[4]", "[6]"}, errors.get("required")
    assert got["[6]"]["field"] == "nm"
    assert "field `nm` is NULL but the destination column is NOT NULL" in got["[6]"]["message"]
    assert [r[0] for r in select_all(url, required)] == [1, 3, 5, 7]

    # G4: NUL bound for PostgreSQL → error; elsewhere it is stored verbatim
    got = {e["key"]: e for e in errors.get("nul", [])}
    if dialect == "postgresql":
        assert set(got) == {"[2]"}, errors.get("nul")
        assert got["[2]"]["field"] == "nm" and "NUL" in got["[2]"]["message"]
        assert select_all(url, texts) == [(1, "before"), (3, "after")]
    else:
        assert got == {}
        assert select_all(url, texts) == [(1, "before"), (2, "a\x00b"), (3, "after")]


@pytest.mark.mariadb
@GLOBAL_SQL_MODE
def test_lenient_mode_is_restored(mariadb_database: Callable[[], str]) -> None:
    url = mariadb_database()
    before = h.query(url, "SELECT @@GLOBAL.sql_mode")
    with lenient_mariadb(url):
        assert h.query(url, "SELECT @@GLOBAL.sql_mode") == [("",)]
    assert h.query(url, "SELECT @@GLOBAL.sql_mode") == before
