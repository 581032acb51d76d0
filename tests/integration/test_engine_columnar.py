"""The columnar path fits the ports: a batch whose changes are an Arrow record batch, each
`Change` built from its Arrow row only when the engine asks for it, goes through the engine's
batch step (map → ledger → collisions → guard → write → acknowledge → commit) into a real
SQLite or PostgreSQL destination and the state commit, without any change to the engine.

The fast path itself (writing Arrow columns without rows) is not built; this proves that a
capture may hand the engine such a batch and a destination receives ordinary mapped records."""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import pyarrow as pa
import pytest

from mapsync import records
from mapsync.capture.base import CaptureBase
from mapsync.engine import Engine, Parts
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: goods}}
    key: {{from: id, to: ref}}
    changes: {{method: full}}
    fields:
      nm: name
      status: {{from: status, map: {{A: 1, I: 0}}}}
      price: {{from: price, cast: decimal, scale: 2}}
"""


class ArrowChanges(Sequence[records.Change]):
    """The upserts of one Arrow record batch; row `i` becomes a `Change` only when asked for."""

    def __init__(self, rows: pa.RecordBatch, key: list[str]) -> None:
        self.rows, self.key = rows, key
        self.columns = {name: rows.column(name) for name in rows.schema.names}
        self.built = 0  # rows materialised so far

    def __len__(self) -> int:
        return self.rows.num_rows

    @overload
    def __getitem__(self, i: int) -> records.Change: ...

    @overload
    def __getitem__(self, i: slice) -> list[records.Change]: ...

    def __getitem__(self, i: int | slice) -> records.Change | list[records.Change]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        self.built += 1
        row = {name: column[i].as_py() for name, column in self.columns.items()}
        return records.Change("upsert", tuple(row[k] for k in self.key), None, row)


def arrow_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "id": pa.array([r["id"] for r in rows], pa.int64()),
            "name": pa.array([r["name"] for r in rows], pa.string()),
            "status": pa.array([r["status"] for r in rows], pa.string()),
            "price": pa.array([decimal.Decimal(r["price"]) for r in rows], pa.decimal128(10, 2)),
        }
    )


class ArrowCapture(CaptureBase):
    """Hands the engine Arrow-backed batches: for the seed and for a run."""

    zone = None  # the engine's step reads it (no naive versions here)

    def __init__(self, batches: list[pa.RecordBatch]) -> None:
        self.batches = batches
        self.made: list[ArrowChanges] = []
        self.acknowledged: list[records.WriteResult] = []

    def _batches(self, seed: bool) -> Iterator[records.Batch]:
        for rows in self.batches:
            changes = ArrowChanges(rows, ["id"])
            self.made.append(changes)
            after = {"seed": {"status": "running", "after": [rows.column("id")[-1].as_py()]}}
            # a `Sequence[Change]` where the port names a list: the engine only iterates it
            yield records.Batch(changes, after if seed else None, read=True)  # type: ignore[arg-type]

    def begin(self) -> None:
        return None

    def seed_batches(self, *args: Any) -> Iterator[records.Batch]:
        return self._batches(seed=True)

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        return self._batches(seed=False)

    def start_seed(self) -> dict[str, Any]:
        return {}

    def low(self) -> Any:
        return None

    def finish(self) -> dict[str, Any]:
        return {}

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        self.acknowledged.append(result)


class ArrowEngine(Engine):
    arrow: ArrowCapture | None = None

    def parts(self, name: str) -> Parts:
        parts = super().parts(name)
        if self.arrow is not None:
            parts.capture = self.arrow
        return parts


@pytest.fixture(
    params=[
        pytest.param("sqlite_database", id="sqlite"),
        pytest.param("pg_database", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def dst(request: pytest.FixtureRequest) -> str:
    make: Callable[[], str] = request.getfixturevalue(request.param)
    return make()


def test_an_arrow_batch_goes_through_the_engine_step(tmp_path: Path, dst: str) -> None:
    src = f"sqlite:///{tmp_path / 'erp.db'}"
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, status TEXT, price NUMERIC)")
    h.execute(
        dst,
        "CREATE TABLE goods (ref INTEGER PRIMARY KEY, nm VARCHAR(20), status INTEGER, price NUMERIC(10,2))",
    )
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    store = StateStore.open("sqlite:///state.db", tmp_path, create=True)
    engine = ArrowEngine(loader.load(tmp_path / "sheet.yaml", env={}), store)
    try:
        rows = [{"id": i, "name": f"n{i}", "status": "A", "price": f"{i}.50"} for i in range(1, 6)]
        rows[3]["status"] = "X"  # not in the map: a record error, the rest goes on
        engine.arrow = seed = ArrowCapture([arrow_batch(rows[:3]), arrow_batch(rows[3:])])
        out = engine.run("items", "seed")
        assert (out.status, out.counts.read, out.counts.written, out.counts.rejected) == ("partial", 5, 4, 1)
        assert all(made.built >= len(made) for made in seed.made)  # each row was built on demand
        assert [len(r.delivered) for r in seed.acknowledged] == [3, 1]
        got = {r[0]: (r[1], r[2], decimal.Decimal(r[3])) for r in h.query(dst, "SELECT * FROM goods")}
        assert got == {i: (f"n{i}", 1, decimal.Decimal(f"{i}.50")) for i in (1, 2, 3, 5)}
        ledger = store.ledger("items", [(i,) for i in range(1, 7)])
        assert sorted(ledger) == [(1,), (2,), (3,), (5,)]
        first = {k: e.hash for k, e in ledger.items()}

        # a run: one row unchanged (skipped by the ledger), one changed, the rejected one fixed,
        # one new
        rows[1]["name"] = "renamed"
        rows[3]["status"] = "I"
        again = [rows[0], rows[1], rows[3], {"id": 6, "name": "n6", "status": "I", "price": "6"}]
        engine.arrow = ArrowCapture([arrow_batch(again)])
        out = engine.run("items")
        assert (out.status, out.counts.written, out.counts.skipped, out.counts.rejected) == (
            "success",
            3,
            1,
            0,
        )
        got = {r[0]: (r[1], r[2]) for r in h.query(dst, "SELECT ref, nm, status FROM goods")}
        assert got == {
            1: ("n1", 1),
            2: ("renamed", 1),
            3: ("n3", 1),
            4: ("n4", 0),
            5: ("n5", 1),
            6: ("n6", 0),
        }
        ledger = store.ledger("items", [(i,) for i in range(1, 7)])
        assert sorted(ledger) == [(i,) for i in range(1, 7)]
        assert ledger[(1,)].hash == first[(1,)] and ledger[(2,)].hash != first[(2,)]
        assert ledger[(2,)].hash == records.content_hash(
            {"ref": 2, "nm": "renamed", "status": 1, "price": decimal.Decimal("2.50")}
        )
        assert store.open_error_keys("items", None) == []  # the fixed key's error is resolved
    finally:
        engine.close()
        store.close()
