"""SQLite text that is not valid UTF-8 is one record error with its key; the other rows go on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mapsync.engine import Engine, RunReport
from mapsync.sheet import loader
from mapsync.state import report, values
from mapsync.state.store import StateStore
from tests import helpers as h

NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def _sheet(folder: Path, src: str, dst: str) -> loader.LoadedSheet:
    (folder / "sheet.yaml").write_text(f"""
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 3}}
    fields: {{nm: descr}}
""")
    return loader.load(folder / "sheet.yaml")


def _run(loaded: loader.LoadedSheet, kind: str) -> tuple[RunReport, dict[tuple[Any, ...], dict[str, Any]]]:
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=kind == "seed")
    engine = Engine(loaded, store)
    try:
        result = engine.run("items", kind)
        errors = {tuple(values.decode(r["key"])): r for r in report.record_errors(store, "items", False, 100)}
        return result, errors
    finally:
        engine.close()
        store.close()


def test_an_undecodable_value_is_a_record_error_with_its_key(
    sqlite_database: Callable[[], str], database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = sqlite_database(), database()
    h.execute(src, "CREATE TABLE items (sku TEXT PRIMARY KEY, descr TEXT, last_modified TEXT)")
    h.execute(dst, "CREATE TABLE products (sku VARCHAR(20) PRIMARY KEY, nm VARCHAR(60))")
    h.execute(
        src,
        "INSERT INTO items VALUES (:s, :d, '2026-01-01 10:00:00')",
        params=[{"s": f"k{i}", "d": f"item {i}"} for i in range(7)],
    )
    # Latin-1 bytes in a TEXT column: what a legacy writer leaves behind; and one in a key
    h.execute(
        src,
        "UPDATE items SET descr = CAST(x'4dfc6c6c6572' AS TEXT) WHERE sku = 'k2'",
        "INSERT INTO items VALUES (CAST(x'6bff' AS TEXT), 'bad key', '2026-01-01 10:00:00')",
    )
    loaded = _sheet(tmp_path, src, dst)

    result, errors = _run(loaded, "seed")
    assert result.status == "partial", result.message
    assert result.counts.rejected == 2 and result.counts.written == 6
    assert sorted(h.query(dst, "SELECT sku, nm FROM products")) == [
        (f"k{i}", f"item {i}") for i in range(7) if i != 2
    ]
    error = errors[("k2",)]
    assert error["rule"] == "undecodable" and error["field"] == "descr"
    assert "'descr'" in error["message"] and "not valid UTF-8" in error["message"]
    assert "M\\\\xfcller" in error["message"]  # the bad byte shown escaped
    assert ("k\\xff",) in errors  # the key, its bad byte escaped

    # fixed at the source: the next run delivers it and the error closes
    h.execute(src, f"UPDATE items SET descr = 'Müller', last_modified = {NOW} WHERE sku = 'k2'")
    result, errors = _run(loaded, "run")
    assert result.counts.written == 1
    assert ("k2",) not in errors
    assert h.query(dst, "SELECT nm FROM products WHERE sku = 'k2'") == [("Müller",)]
