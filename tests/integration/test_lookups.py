"""`lookup` (one query per lookup per batch, cached for the run) and `map_from` (a CSV file or a
table, read once), on every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors, records, transforms
from mapsync import mapping as compile_
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.testing import fakes
from tests import helpers as h


def _sheet(folder: Path, url: str, fields: str) -> loader.LoadedSheet:
    (folder / "sheet.yaml").write_text(f"""
version: 1
connections:
  erp: {{url: "{url}"}}
state: {{url: "sqlite:///state.db"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: erp, table: products}}
    key: {{from: id, to: id}}
    changes: {{method: full}}
    delivery: {{batch: 1000}}
    fields:
{fields}
""")
    return loader.load(folder / "sheet.yaml")


def _lookup_tables(url: str, n: int) -> None:
    h.execute(
        url,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, code VARCHAR(10), status VARCHAR(10), kind VARCHAR(10))",
        "CREATE TABLE products (id INTEGER PRIMARY KEY, grp VARCHAR(40), st VARCHAR(20), kd VARCHAR(20))",
        "CREATE TABLE codes (code VARCHAR(10) PRIMARY KEY, label VARCHAR(40))",
    )
    h.execute(
        url,
        "INSERT INTO codes VALUES (:c, :l)",
        params=[{"c": f"C{i}", "l": f"group {i}"} for i in range(n)],
    )


@pytest.fixture
def engines() -> Iterator[Callable[[loader.LoadedSheet], Engine]]:
    made: list[tuple[Engine, StateStore]] = []

    def make(loaded: loader.LoadedSheet) -> Engine:
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
        engine = Engine(loaded, store)
        made.append((engine, store))
        return engine

    yield make
    for engine, store in made:
        engine.close()
        store.close()


def _count_statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    return seen


def _changes(codes: list[str | None]) -> list[records.Change]:
    return [records.Change("upsert", (i,), i, {"id": i, "code": c}) for i, c in enumerate(codes)]


@pytest.mark.parametrize("on_missing", ["reject", "null", "keep"])
def test_a_batch_of_1000_records_makes_one_lookup_query_and_a_repeat_makes_none(
    database: Callable[[], str],
    tmp_path: Path,
    engines: Callable[[loader.LoadedSheet], Engine],
    on_missing: str,
) -> None:
    url = database()
    _lookup_tables(url, 990)  # C990..C999 are missing
    loaded = _sheet(
        tmp_path,
        url,
        "      grp: {from: code, lookup: "
        f"{{connection: erp, table: codes, key: code, value: label, on_missing: {on_missing}}}}}",
    )
    engine = engines(loaded)
    mapping = engine.parts("items").mapping
    statements = _count_statements(engine.database("erp").engine)
    changes = _changes([f"C{i}" for i in range(1000)])

    ctx = mapping.prepare(changes)
    assert len(statements) == 1, statements
    assert "codes" in statements[0] and " IN " in statements[0].upper()
    tally = transforms.Tally()
    out = [mapping.apply(c, ctx, tally) for c in changes]
    assert len(statements) == 1  # apply never queries
    for i, mapped in enumerate(out[:990]):
        assert isinstance(mapped, records.Mapped) and mapped.values["grp"] == f"group {i}"
    misses = out[990:]
    if on_missing == "reject":
        for i, rejection in zip(range(990, 1000), misses, strict=True):
            assert isinstance(rejection, records.Rejection)
            assert (rejection.field, rejection.rule) == ("grp", "lookup")
            assert f"'C{i}'" in rejection.message and "codes" in rejection.message
    else:
        expect = [None if on_missing == "null" else f"C{i}" for i in range(990, 1000)]
        assert [m.values["grp"] for m in misses if isinstance(m, records.Mapped)] == expect
        assert tally.kept["grp"] == (10 if on_missing == "keep" else 0)

    # the next batch with the same values (hits and misses alike) is answered from the cache
    again = _changes([f"C{i}" for i in reversed(range(1000))] + [None])
    ctx = mapping.prepare(again)
    assert len(statements) == 1
    first = mapping.apply(again[0], ctx, transforms.Tally())  # id 0 with C999, a miss
    assert type(first) is type(out[999])
    if isinstance(first, records.Rejection):
        assert isinstance(out[999], records.Rejection) and first.message == out[999].message
    else:
        assert isinstance(first, records.Mapped) and isinstance(out[999], records.Mapped)
        assert first.values["grp"] == out[999].values["grp"]


def test_values_are_chunked_at_1000_and_new_values_only_are_fetched(
    sqlite_database: Callable[[], str], tmp_path: Path, engines: Callable[[loader.LoadedSheet], Engine]
) -> None:
    url = sqlite_database()
    _lookup_tables(url, 2500)
    loaded = _sheet(
        tmp_path,
        url,
        "      grp: {from: code, trim: true, lookup: {connection: erp, table: codes, key: code, value: label}}",
    )
    engine = engines(loaded)
    mapping = engine.parts("items").mapping
    statements = _count_statements(engine.database("erp").engine)
    mapping.prepare(_changes([f" C{i} " for i in range(2500)]))  # the lookup sees the trimmed value
    assert len(statements) == 3
    ctx = mapping.prepare(_changes(["C5", "C6", "C2499"]))
    assert len(statements) == 3
    out = mapping.apply(_changes(["C7"])[0], ctx, transforms.Tally())
    assert isinstance(out, records.Mapped) and out.values["grp"] == "group 7"


def test_lookup_identifiers_are_checked_against_the_catalog(
    sqlite_database: Callable[[], str], tmp_path: Path, engines: Callable[[loader.LoadedSheet], Engine]
) -> None:
    url = sqlite_database()
    _lookup_tables(url, 3)
    bad_table = _sheet(
        tmp_path,
        url,
        "      grp: {from: code, lookup: {connection: erp, table: codez, key: code, value: label}}",
    )
    with pytest.raises(errors.ConfigError, match=r"unknown table 'codez'.*did you mean 'codes'"):
        engines(bad_table).parts("items")
    bad_column = _sheet(
        tmp_path,
        url,
        "      grp: {from: code, lookup: {connection: erp, table: codes, key: code, value: lbl}}",
    )
    with pytest.raises(errors.ConfigError, match=r"field `grp`: lookup: no column 'lbl'"):
        engines(bad_column).parts("items")


def test_lookup_and_map_from_through_a_real_run(
    database: Callable[[], str], tmp_path: Path, engines: Callable[[loader.LoadedSheet], Engine]
) -> None:
    url = database()
    _lookup_tables(url, 3)
    h.execute(
        url,
        "CREATE TABLE kinds (src VARCHAR(10), dst VARCHAR(20))",
        "INSERT INTO kinds VALUES ('p', 'physical'), ('d', 'digital')",
    )
    h.execute(
        url,
        "INSERT INTO items VALUES (:i, :c, :s, :k)",
        params=[
            {"i": 1, "c": "C0", "s": "A", "k": "p"},
            {"i": 2, "c": "C2", "s": "I", "k": "d"},
            {"i": 3, "c": "C9", "s": "X", "k": "p"},
            {"i": 4, "c": None, "s": "A", "k": "z"},
        ],
    )
    (tmp_path / "status.csv").write_text("source,destination\nA,active\nI,inactive\nX,unused\n")
    loaded = _sheet(
        tmp_path,
        url,
        "      grp: {from: code, lookup: {connection: erp, table: codes, key: code, value: label, "
        "on_missing: keep}}\n"
        "      st: {from: status, map_from: {file: status.csv}, map: {X: crossed}}\n"
        "      kd: {from: kind, map_from: {connection: erp, table: kinds, from: src, to: dst}, "
        "on_unknown: default, map_default: other}",
    )
    engine = engines(loaded)
    statements = _count_statements(engine.database("erp").engine)
    report = engine.run("items", "seed")
    assert report.status == "success", report.message
    assert report.kept == {"grp": 1} and report.defaulted == {"kd": 1}
    assert sorted(h.query(url, "SELECT id, grp, st, kd FROM products")) == [
        (1, "group 0", "active", "physical"),
        (2, "group 2", "inactive", "digital"),
        (3, "C9", "crossed", "physical"),  # `map` wins over the file
        (4, None, "active", "other"),
    ]
    # besides the catalog check at compile time, one query for the one batch
    assert len([s for s in statements if s.startswith("SELECT") and "codes" in s]) == 1


def _memory_mapping(folder: Path, field: dict[str, Any]) -> compile_.Mapping:
    loaded = fakes.sheet({"c": {"key": {"from": "id", "to": "ref"}, "fields": {"st": field}}}, folder)
    return compile_.Mapping(loaded.sheet.syncs["c"], {}, {}, folder=folder)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("source,destination\nA,active\nB,x,y\n", ":3:", r"3 columns, expected 2"),
        (
            "source,destination\nA,active\nB,b\nA,other\n",
            ":4:",
            r"'A' maps to 'other' here but to 'active' on line 2",
        ),
        ("source\nA\n", ":1:", r"header has 1 columns"),
        ("", ":1:", r"empty"),
        ('source,destination\n"A,active\n', ":", r"not valid CSV|columns"),
    ],
)
def test_a_bad_map_file_is_a_config_error_naming_file_and_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(errors.ConfigError, match=message) as caught:
        _memory_mapping(tmp_path, {"from": "s", "map_from": {"file": "m.csv"}})
    assert f"{tmp_path / 'm.csv'}{where}" in str(caught.value)


def test_map_from_a_file_behaves_like_map(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("source,destination\nA,active\nA,active\n1,one\n")
    mapping = _memory_mapping(tmp_path, {"from": "s", "map_from": {"file": "m.csv"}})
    tally = transforms.Tally()

    def apply(value: Any) -> Any:
        change = records.Change("upsert", (1,), 1, {"id": 1, "s": value})
        return mapping.apply(change, mapping.prepare([change]), tally)

    assert apply("A").values["st"] == "active"
    assert apply(1).values["st"] == "one"  # keys compare as text, like `map`
    out = apply("Q")
    assert isinstance(out, records.Rejection) and (out.field, out.rule) == ("st", "map")
    assert "'Q'" in out.message and "not in the map" in out.message
    with pytest.raises(errors.ConfigError, match=r"missing\.csv: cannot read"):
        _memory_mapping(tmp_path, {"from": "s", "map_from": {"file": "missing.csv"}})


def test_child_rows_share_the_batch_query(
    sqlite_database: Callable[[], str], tmp_path: Path, engines: Callable[[loader.LoadedSheet], Engine]
) -> None:
    url = sqlite_database()
    _lookup_tables(url, 20)
    h.execute(
        url,
        "CREATE TABLE item_parts (id INTEGER, n INTEGER, code VARCHAR(10), PRIMARY KEY (id, n))",
        "CREATE TABLE product_parts (pid INTEGER, n INTEGER, grp VARCHAR(40), PRIMARY KEY (pid, n))",
    )
    rule = "{from: code, lookup: {connection: erp, table: codes, key: code, value: label}}"
    loaded = _sheet(
        tmp_path,
        url,
        f"      grp: {rule}\n"
        "    children:\n"
        "      parts:\n"
        "        from: {connection: erp, table: item_parts}\n"
        "        to: {connection: erp, table: product_parts}\n"
        "        parent: {from: id, to: pid}\n"
        "        key: {from: [id, n], to: [pid, n]}\n"
        f"        fields: {{grp: {rule}}}",
    )
    engine = engines(loaded)
    mapping = engine.parts("items").mapping
    statements = _count_statements(engine.database("erp").engine)
    changes = [
        records.Change(
            "upsert",
            (i,),
            i,
            {"id": i, "code": f"C{i}"},
            {"parts": [{"id": i, "n": n, "code": f"C{10 + n}"} for n in range(3)]},
        )
        for i in range(5)
    ]
    ctx = mapping.prepare(changes)
    assert len(statements) == 1  # parent and child rules read the same table: one query in all
    out = mapping.apply(changes[1], ctx, transforms.Tally())
    assert isinstance(out, records.Mapped)
    assert out.values["grp"] == "group 1"
    assert [r["grp"] for r in out.children["parts"]] == ["group 10", "group 11", "group 12"]


def test_an_unknown_lookup_connection_is_a_sheet_problem(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"lookup.connection: unknown connection 'ERP'"):
        fakes.sheet(
            {
                "c": {
                    "key": {"from": "id", "to": "ref"},
                    "fields": {
                        "g": {
                            "from": "c",
                            "lookup": {"connection": "ERP", "table": "t", "key": "k", "value": "v"},
                        }
                    },
                }
            },
            tmp_path,
        )
