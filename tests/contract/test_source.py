"""The Source contract: SqlSource on SQLite, PostgreSQL and MariaDB, the generic REST source and
CIMcloud's (against the sandbox, in-process) and the in-memory MemorySource pass the same cases
through `ports.Source`: stream in key order in bounded pages, resume strictly after a key, read by
keys (missing keys simply absent), count, key_of, child rows attached to their parents (or, where
`capabilities.children` is False, refused by the sheet)."""

from __future__ import annotations

import random

import pytest

from mapsync import errors
from mapsync.ports import Capabilities
from tests.contract.ends import SourceCase

KEYS = [f"K{n:03d}" for n in range(1, 26)]


def seeded(case: SourceCase) -> SourceCase:
    shuffled = list(KEYS)
    random.Random(12).shuffle(shuffled)  # stored out of order: the order is the source's job
    case.add([(k, f"Name {k}") for k in shuffled])
    return case


def streamed(case: SourceCase, after: list[str] | None = None, batch: int = 10) -> list[list[str]]:
    pages = case.source.stream([case.key], [], after, batch)
    return [[str(row[case.key]) for row in page] for page in pages]


def test_capabilities_are_declared_as_data(source_case: SourceCase) -> None:
    assert isinstance(type(source_case.source).capabilities, Capabilities)
    assert source_case.source.key == [source_case.key]


def test_stream_in_key_order_in_bounded_pages(source_case: SourceCase) -> None:
    assert streamed(source_case) == []
    pages = streamed(seeded(source_case))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [k for p in pages for k in p] == KEYS
    (rows, *_) = source_case.source.stream([source_case.key], [], None, 3)
    assert [r[source_case.name_column] for r in rows] == ["Name K001", "Name K002", "Name K003"]


def test_stream_resumes_strictly_after_a_key(source_case: SourceCase) -> None:
    seeded(source_case)
    assert [k for p in streamed(source_case, after=["K010"], batch=7) for k in p] == KEYS[10:]
    assert streamed(source_case, after=["K025"]) == []
    assert [k for p in streamed(source_case, after=["K0105"]) for k in p] == KEYS[10:]  # between keys


def test_read_by_keys_leaves_missing_keys_out(source_case: SourceCase) -> None:
    seeded(source_case)
    rows = source_case.source.read_keys([("K003",), ("K999",), ("K017",)])
    found = {str(r[source_case.key]): r[source_case.name_column] for r in rows}
    assert found == {"K003": "Name K003", "K017": "Name K017"}
    assert source_case.source.read_keys([("nope",)]) == []


def test_count(source_case: SourceCase) -> None:
    if not source_case.counts:
        assert source_case.source.count() is None  # cannot tell without reading: says so
        return
    assert source_case.source.count() == 0
    assert seeded(source_case).source.count() == len(KEYS)


def test_key_of(source_case: SourceCase) -> None:
    seeded(source_case)
    (row,) = source_case.source.read_keys([("K004",)])
    assert source_case.source.key_of(row) == ("K004",)
    (page, *_) = source_case.source.stream([source_case.key], [], None, 5)
    assert [source_case.source.key_of(r) for r in page] == [(k,) for k in KEYS[:5]]


def test_children_are_attached_to_their_parents(source_case: SourceCase) -> None:
    if not source_case.source.capabilities.children:
        # declared False: a sheet asking for child rows is refused, never read without them
        assert source_case.variant is not None
        with pytest.raises(errors.ConfigError, match="child"):
            source_case.variant("children")
        return
    assert source_case.add_lines is not None
    seeded(source_case).add_lines([("K003", 2, 6), ("K003", 1, 5), ("K017", 1, 7), ("K999", 1, 1)])
    rows = source_case.source.read_keys([("K003",), ("K017",), ("K020",)])
    attached = source_case.source.attach_children(rows)
    lines = {
        str(k[0]): sorted((int(r["line_no"]), r["qty"]) for r in v["lines"]) for k, v in attached.items()
    }
    assert lines == {"K003": [(1, 5), (2, 6)], "K017": [(1, 7)], "K020": []}  # each parent, all its own
