"""The ADBC SQLite seed read (connectors/sqlite_arrow.py): every batch reads back exactly as the
driver's rows, whatever SQLite's dynamic typing holds. A value of another storage class than its
column promises (text in an INTEGER column), a column of NULLs whose later batch holds text (the
first batch fixed ADBC's type), text that is not UTF-8 and a key Arrow cannot bind all give
batches of rows, the rest Arrow; nothing is read twice or skipped."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mapsync.connectors import sql_source as sql_source_module
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore

SHEET = """
version: 1
connections:
  erp: {{url: "sqlite:///{src}"}}
  crm: {{url: "sqlite:///{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: crm, table: items}}
    key: {{from: id, to: id}}
    changes: {{method: full}}
    fields: {{qty: qty, note: note, late: late}}
"""


def _rows() -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [(i, i * 10, f"n{i}", None if i <= 6 else f"late{i}") for i in range(1, 21)]
    rows[8] = (9, "nine", "n9", "late9")  # text in an INTEGER column: its batch is rows
    return rows


@contextlib.contextmanager
def _source_of(
    tmp_path: Path, key_type: str, fill: Callable[[sqlite3.Connection], None]
) -> Iterator[sql_source_module.SqlSource]:
    """The `items` sync's SQL source over an `erp.db` whose key column is `key_type`, filled by `fill`."""
    ddl = f"CREATE TABLE items (id {key_type} PRIMARY KEY, qty INTEGER, note TEXT, late TEXT)"
    src = tmp_path / "erp.db"
    conn = sqlite3.connect(src)
    conn.execute(ddl)
    fill(conn)
    conn.commit()
    conn.close()
    crm = sqlite3.connect(tmp_path / "crm.db")
    crm.execute(ddl)
    crm.close()
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=tmp_path / "crm.db"))
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, create=True)
    engine = Engine(loader.load(tmp_path / "sheet.yaml", env={}), store)
    try:
        source = engine.parts("items").source
        assert isinstance(source, sql_source_module.SqlSource)
        yield source
    finally:
        engine.close()
        store.close()


def _hostile(conn: sqlite3.Connection) -> None:
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", _rows())
    conn.execute("UPDATE items SET note = CAST(X'6869FF' AS TEXT) WHERE id = 16")  # not UTF-8


@pytest.fixture
def source(tmp_path: Path) -> Iterator[sql_source_module.SqlSource]:
    with _source_of(tmp_path, "INTEGER", _hostile) as source:
        yield source


def _items(source: sql_source_module.SqlSource, batch: int) -> list[tuple[str, list[dict[str, Any]]]]:
    read = source.stream_arrow(None, batch)
    assert read is not None
    out = []
    for item in read:
        if isinstance(item, pa.RecordBatch):
            out.append(("arrow", item.to_pylist()))
        else:
            names, rows = item
            out.append(("rows", [dict(zip(names, r, strict=True)) for r in rows]))
    return out


def test_each_batch_reads_back_as_the_drivers_rows(source: sql_source_module.SqlSource) -> None:
    items = _items(source, 3)
    got = [row for _, rows in items for row in rows]
    want = [row for rows in source.stream(source.key, [], None, 100) for row in rows]  # the driver's
    assert [str(r) for r in got] == [str(r) for r in want]  # the same values and types, in key order
    assert [type(v) for r in got for v in r.values()] == [type(v) for r in want for v in r.values()]
    kinds = [kind for kind, _ in items]
    assert "arrow" in kinds and "rows" in kinds
    by_key = {row["id"]: kind for kind, rows in items for row in rows}
    assert by_key[9] == "rows"  # text in an INTEGER column
    assert by_key[16] == "rows"  # undecodable text: the ADBC stream failed there
    assert by_key[1] == "arrow" and by_key[20] == "arrow"
    # `late` is NULL in the whole first batch (ADBC typed it), text from row 7: read all the same
    assert [row["late"] for row in got[6:8]] == ["late7", "late8"]


def test_a_batch_with_an_arrow_form_has_the_catalogs_types(source: sql_source_module.SqlSource) -> None:
    first = next(iter(source.stream_arrow(None, 3) or []))
    assert isinstance(first, pa.RecordBatch)
    # `late` is NULL in rows 1-3: typed as the catalog's text, not ADBC's guess
    assert first.schema.field("late").type == pa.string()
    assert first.schema.names == source.columns


def test_an_undecodable_text_key_does_not_end_the_read(tmp_path: Path) -> None:
    """A batch read as rows whose last key is not UTF-8: a new query cannot start after it (it
    would bind as a blob, which sorts after every text, and find nothing): the rest is read
    through one driver cursor, every row once, in key order."""

    def fill(conn: sqlite3.Connection) -> None:
        rows = [(f"k{i:02d}", i, "n", "x") for i in range(1, 13)]
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", rows)
        conn.execute("INSERT INTO items VALUES (CAST(X'6B303569FF' AS TEXT), 0, 'n', 'x')")  # 'k05i\xff'

    with _source_of(tmp_path, "TEXT", fill) as source:
        got = [str(row["id"]) for _, rows in _items(source, 3) for row in rows]
        want = [str(row["id"]) for rows in source.stream(source.key, [], None, 100) for row in rows]
    assert got == want and len(got) == 13


def test_a_read_left_after_one_batch_ends_its_read_ahead(source: sql_source_module.SqlSource) -> None:
    """The next batch is read in a thread while the caller works on one: a caller that stops
    after the first batch (a failed write, a stop) closes the read, and the thread's read under
    way is waited for before the reader is closed; no thread stays behind."""
    import threading

    read = source.stream_arrow(None, 3)
    assert read is not None
    first = next(iter(read))
    assert isinstance(first, pa.RecordBatch) and first.column("id").to_pylist() == [1, 2, 3]
    assert any(t.name.startswith("mapsync-read-ahead") for t in threading.enumerate())
    read.close()  # type: ignore[attr-defined]
    assert not any(t.name.startswith("mapsync-read-ahead") for t in threading.enumerate())
    again = _items(source, 3)  # and the source reads again from the start, in full
    assert [r["id"] for _, rows in again for r in rows] == list(range(1, 21))
