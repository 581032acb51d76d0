"""Keys the destination's collation takes for one key, and keys a source read returns twice, are
record errors naming both source keys; they are never merged into one destination row.

The source is a SQLite table with a binary key (it holds `ABC`, `abc`, `abç` and `abc ` as four
keys); the destinations collate: SQLite `NOCASE`, a nondeterministic PostgreSQL ICU collation
(level 1: case and accents ignored) and MariaDB `utf8mb4_unicode_ci` (PAD SPACE).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from mapsync.engine import Engine, RunReport
from mapsync.sheet import loader
from mapsync.state import report, values
from mapsync.state.store import StateStore
from tests import helpers as h

DEST_DDL = {
    "sqlite": ["CREATE TABLE products (sku TEXT COLLATE NOCASE PRIMARY KEY, nm TEXT)"],
    "postgresql": [
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level1', deterministic = false)",
        "CREATE TABLE products (sku VARCHAR(20) COLLATE ci PRIMARY KEY, nm VARCHAR(60))",
    ],
    "mysql": [
        "CREATE TABLE products (sku VARCHAR(20) PRIMARY KEY, nm VARCHAR(60)) "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ],
}
NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"  # after the seed's watermark
# which of the keys below each destination takes for an earlier one (read order: binary)
KEYS = ["ABC", "abc", "abc ", "abç", "x1"]
MERGED = {
    "sqlite": {"abc": "ABC"},
    "postgresql": {"abc": "ABC", "abç": "ABC"},
    "mysql": {"abc": "ABC", "abc ": "ABC", "abç": "ABC"},
}


def _sheet(
    folder: Path, src: str, dst: str, source: str = "table: items", batch: int = 3
) -> loader.LoadedSheet:
    (folder / "sheet.yaml").write_text(f"""
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, {source}}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: {batch}}}
    fields: {{nm: descr}}
""")
    return loader.load(folder / "sheet.yaml")


def _run(loaded: loader.LoadedSheet, kind: str) -> tuple[RunReport, dict[tuple[Any, ...], str], int]:
    """The run's report, the open record errors by key, and the number of keys in the ledger."""
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=kind == "seed")
    engine = Engine(loaded, store)
    try:
        result = engine.run("items", kind)
        errors = {
            tuple(values.decode(r["key"])): r["message"]
            for r in report.record_errors(store, "items", False, 1000)
        }
        return result, errors, store.ledger_count("items")
    finally:
        engine.close()
        store.close()


def _source(url: str, rows: list[tuple[str, str, str]]) -> None:
    h.execute(url, "CREATE TABLE items (sku TEXT PRIMARY KEY, descr TEXT, last_modified TEXT)")
    h.execute(
        url, "INSERT INTO items VALUES (:s, :d, :t)", params=[{"s": s, "d": d, "t": t} for s, d, t in rows]
    )


def _unmixed(src: str, dst: str) -> dict[str, str]:
    """The destination's rows, each checked to be one source row whole (key byte-equal)."""
    source = dict(h.query(src, "SELECT sku, descr FROM items"))
    rows = dict(h.query(dst, "SELECT sku, nm FROM products"))
    for key, nm in rows.items():
        assert source.get(key) == nm, f"destination row {key!r} holds {nm!r}: not source row {key!r}"
    return rows


def test_colliding_keys_are_rejected_within_a_read_and_across_runs(
    database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = sqlite_database(), database()
    kind = h.dialect(dst)
    h.execute(dst, *DEST_DDL[kind])
    _source(src, [(k, f"row {k!r}", "2026-01-01 10:00:00") for k in KEYS])
    loaded = _sheet(tmp_path, src, dst)

    result, errors, ledger = _run(loaded, "seed")
    merged = MERGED[kind]
    assert result.status == "partial", result.message
    assert result.counts.rejected == len(merged)
    rows = _unmixed(src, dst)
    assert sorted(rows) == sorted(k for k in KEYS if k not in merged)
    assert ledger == len(rows)  # every delivered key owns its row
    for key, other in merged.items():
        message = errors[(key,)]
        assert repr(key) in message and repr(other) in message, message

    # a later run: a new spelling collides with the key delivered earlier; that key still updates
    h.execute(
        src,
        f"INSERT INTO items VALUES ('aBC', 'late', {NOW})",
        f"UPDATE items SET descr = 'new', last_modified = {NOW} WHERE sku = 'ABC'",
    )
    result, errors, ledger = _run(loaded, "run")
    assert result.counts.written == 1 and result.counts.rejected == 1
    assert "'aBC'" in errors[("aBC",)] and "'ABC'" in errors[("aBC",)]
    rows = _unmixed(src, dst)
    assert rows["ABC"] == "new" and "aBC" not in rows
    assert ledger == len(rows)


def test_duplicate_keys_of_a_source_query_are_rejected(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = sqlite_database(), sqlite_database()
    h.execute(dst, "CREATE TABLE products (sku TEXT PRIMARY KEY, nm TEXT)")
    _source(src, [(f"k{i}", f"row {i}", "2026-01-01 10:00:00") for i in range(6)])
    query = (
        'query: "SELECT sku, descr, last_modified FROM items UNION ALL '
        "SELECT sku, 'other', last_modified FROM items WHERE sku IN ('k1', 'k3')\""
    )
    # batch 4: k1's two rows share a batch; k3's fall into two batches (ordered k0 k1 k1 k2 | k3 k3 k4 k5)
    result, errors, ledger = _run(_sheet(tmp_path, src, dst, query, batch=4), "seed")
    assert result.status == "partial"
    assert set(errors) == {("k1",), ("k3",)}
    assert "'k1' 2 times" in errors[("k1",)]
    rows = dict(h.query(dst, "SELECT sku, nm FROM products"))
    assert "k1" not in rows  # neither of its rows: which one is "the" row is not defined
    assert {k: v for k, v in rows.items() if k != "k3"} == {f"k{i}": f"row {i}" for i in (0, 2, 4, 5)}
    assert ledger == len(rows)


ADVERSARIAL = st.lists(
    st.tuples(
        st.sampled_from(["ab", "zz", "Éa"]),
        st.sampled_from(["", "upper", "accent", "space", "spaces"]),
    ),
    min_size=1,
    max_size=8,
)


def _variant(base: str, how: str) -> str:
    return {
        "": base,
        "upper": base.upper(),
        "accent": base.replace("a", "á").replace("z", "ž"),
        "space": base + " ",
        "spaces": base + "  ",
    }[how]


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        pytest.param("pg", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_adversarial_keys_end_to_end(
    kind: str,
    sqlite_database: Callable[[], str],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Whatever keys arrive, through the real drivers: every destination row is one source row
    whole, every delivered key owns one row, every other key is a record error."""
    dst = request.getfixturevalue(f"{kind}_database")()  # one database; a fresh table per example
    *setup, table = DEST_DDL[h.dialect(dst)]
    if setup:
        h.execute(dst, *setup)

    @settings(max_examples=12)
    @given(ADVERSARIAL)
    def check(spec: list[tuple[str, str]]) -> None:
        keys = sorted({_variant(b, how) for b, how in spec})
        src = sqlite_database()
        h.execute(dst, "DROP TABLE IF EXISTS products", table)
        _source(src, [(k, f"row {k!r}", "2026-01-01 10:00:00") for k in keys])
        result, errors, ledger = _run(_sheet(tmp_path_factory.mktemp("p"), src, dst, batch=2), "seed")
        rows = _unmixed(src, dst)
        assert ledger == len(rows)
        assert result.counts.rejected == len(errors) == len(keys) - len(rows)
        assert set(errors) == {(k,) for k in keys if k not in rows}

    check()


def test_a_key_the_column_type_refuses_does_not_stop_the_probe(pg_database: Callable[[], str]) -> None:
    """PostgreSQL casts every probed value to the column's type: a value that does not cast
    fails the probe's query; the probe bisects, and that key alone is left to the write."""
    from mapsync.connectors.sql import SqlDatabase
    from mapsync.connectors.sql_keys import KeyProbe

    dst = pg_database()
    h.execute(
        dst,
        DEST_DDL["postgresql"][0],
        "CREATE TABLE lines (sku VARCHAR(20) COLLATE ci, n INTEGER, PRIMARY KEY (sku, n))",
        "INSERT INTO lines VALUES ('abc', 1)",
    )
    db = SqlDatabase("portal", dst, Path.cwd())
    try:
        probe = KeyProbe(db, db.table("lines", "to"), ["sku", "n"])
        found = probe.probe([("ABC", 1), ("x", "not a number"), ("Abc", 1), ("abc", 2)])
    finally:
        db.close()
    assert [(p.group, p.stored) for p in found] == [(0, ("abc", 1)), (1, None), (2, ("abc", 1)), (3, None)]
