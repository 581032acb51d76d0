"""The Destination contract: every implementation (SQL on SQLite, PostgreSQL and MariaDB; REST and
CIMcloud against the sandbox; the in-memory MemoryDestination) passes the same cases, through the
`ports.Destination` role only. `dest_case` (conftest.py) builds each one; `DestCase.stored`
looks at what it really holds, never through the port under test.

Optional behaviour follows `capabilities`: a capability declared True must work; one declared
False must be refused (by the sheet's checks or by the write), never silently accepted.
"""

from __future__ import annotations

import pytest

from mapsync import errors, records
from mapsync.ports import Capabilities
from tests.contract.ends import DestCase, record


def keys(case: DestCase, *ns: int) -> list[str]:
    return [f"{case.prefix}-{n:02d}" for n in ns]


def delivered_keys(result: records.WriteResult) -> list[str]:
    return sorted(str(d.key[0]) for d in result.delivered)


def test_capabilities_are_declared_as_data(dest_case: DestCase) -> None:
    assert isinstance(type(dest_case.dest).capabilities, Capabilities)
    assert dest_case.dest.capabilities is type(dest_case.dest).capabilities


def test_the_same_batch_twice_gives_the_same_rows(dest_case: DestCase) -> None:
    ks = keys(dest_case, 1, 2, 3)
    batch = [record(k, nm=f"Name {k}") for k in ks]
    first = dest_case.dest.write(batch)
    again = dest_case.dest.write(batch)
    for result in (first, again):
        assert result.rejected == []
        assert delivered_keys(result) == ks
    stored = dest_case.stored()
    assert sorted(stored) == ks  # no duplicates, nothing else
    assert {k: r["nm"] for k, r in stored.items()} == {k: f"Name {k}" for k in ks}
    # an upsert of a changed record replaces the stored values
    dest_case.dest.write([record(ks[0], nm="Renamed")])
    assert dest_case.stored()[ks[0]]["nm"] == "Renamed" and len(dest_case.stored()) == 3


def test_delete_by_key(dest_case: DestCase) -> None:
    kept, gone = keys(dest_case, 1, 2)
    dest_case.dest.write([record(kept), record(gone)])
    if not dest_case.dest.capabilities.deletes:
        # declared False: a hard delete is refused, by the sheet and by the write itself
        assert dest_case.variant is not None
        with pytest.raises(errors.ConfigError):
            dest_case.variant("hard")
        with pytest.raises(errors.PermanentError):
            dest_case.dest.write([record(gone, op="delete")])
        assert sorted(dest_case.stored()) == [kept, gone]
        return
    result = dest_case.dest.write([record(gone, op="delete")])
    if not dest_case.server_takes_deletes:
        # the destination sends deletes, the server behind it refuses them: a rejection, not a loss
        assert [r.key for r in result.rejected] == [(gone,)] and result.delivered == []
        assert sorted(dest_case.stored()) == [kept, gone]
        return
    assert result.rejected == [] and delivered_keys(result) == [gone]
    assert sorted(dest_case.stored()) == [kept]
    # deleting what is not there is done, not an error (a retried delete)
    assert dest_case.dest.write([record(gone, op="delete")]).rejected == []


def test_children_travel_with_their_parent(dest_case: DestCase) -> None:
    if not dest_case.dest.capabilities.children:
        assert dest_case.variant is not None
        with pytest.raises(errors.ConfigError, match="child"):
            dest_case.variant("children")
        return
    assert dest_case.child_rows is not None
    a, b = keys(dest_case, 1, 2)

    def lines(key: str, *qtys: int) -> dict[str, list[records.Row]]:
        return {"lines": [{"ref_id": key, "line_no": i + 1, "qty": q} for i, q in enumerate(qtys)]}

    result = dest_case.dest.write([record(a, children=lines(a, 5, 6, 7)), record(b, children=lines(b, 1))])
    assert result.rejected == []
    assert {k: [r["qty"] for r in rows] for k, rows in dest_case.child_rows().items()} == {
        a: [5, 6, 7],
        b: [1],
    }
    # the parent's new children replace the old ones whole (a line gone is gone)
    dest_case.dest.write([record(a, children=lines(a, 8))])
    assert [r["qty"] for r in dest_case.child_rows()[a]] == [8]
    # a refused parent takes its children with it; the other parent is delivered with its own
    c = keys(dest_case, 3)[0]
    bad = dest_case.refuse(record(c, children=lines(c, 9)))
    result = dest_case.dest.write([bad, record(b, children=lines(b, 2, 3))])
    assert [r.key for r in result.rejected] == [(c,)]
    children = dest_case.child_rows()
    assert c not in children and [r["qty"] for r in children[b]] == [2, 3]


def test_one_refused_record_is_rejected_alone(dest_case: DestCase) -> None:
    ks = keys(dest_case, 1, 2, 3, 4, 5)
    batch = [record(k) for k in ks]
    batch[2] = dest_case.refuse(batch[2])
    result = dest_case.dest.write(batch)
    assert [r.key for r in result.rejected] == [(ks[2],)]
    assert result.rejected[0].message
    assert delivered_keys(result) == [k for k in ks if k != ks[2]]
    assert sorted(dest_case.stored()) == [k for k in ks if k != ks[2]]


def test_read_by_keys(dest_case: DestCase) -> None:
    a, b, missing = keys(dest_case, 1, 2, 9)
    dest_case.dest.write([record(a, nm="Ada"), record(b, nm="Bob")])
    if not dest_case.dest.capabilities.read_back:
        with pytest.raises(errors.ConfigError, match="read"):
            dest_case.dest.read_keys([(a,)])
        return
    rows = dest_case.dest.read_keys([(a,), (missing,)])
    assert [(r["ref_id"], r["nm"]) for r in rows] == [(a, "Ada")]
    assert dest_case.dest.read_keys([]) == []


def test_is_empty(dest_case: DestCase) -> None:
    if dest_case.knows_empty:
        assert dest_case.dest.is_empty() is True
    dest_case.dest.write([record(keys(dest_case, 1)[0])])
    assert dest_case.dest.is_empty() is False  # never claimed while it holds a row
