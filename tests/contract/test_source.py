"""The Source contract: SqlSource on SQLite, PostgreSQL and MariaDB, the REST source (CIMcloud's,
against the sandbox) and the in-memory MemorySource pass the same cases through `ports.Source`:
stream in key order in bounded pages, resume strictly after a key, read by keys (missing keys
simply absent), count, key_of."""

from __future__ import annotations

import random

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
