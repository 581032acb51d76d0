"""In-memory parts for tests, ours and yours: a source, its capture, a destination with fault
injection, and an engine that runs a sheet's syncs over them. State stays the real StateStore
(on a SQLite file), so what a test asserts about cursors, ledger and errors is what production
would record.

    from mapsync.testing import fakes

    loaded = fakes.sheet({"customers": {"key": {"from": "id", "to": "ref"}, "fields": {"nm": "name"}}})
    store = fakes.state_store(tmp_path)
    source = fakes.MemorySource([{"id": 1, "name": "Ada", "version": 1}])
    dest = fakes.MemoryDestination()
    engine = fakes.MemoryEngine(loaded, store, {"customers": (source, dest)})
    engine.run("customers", "seed")
    assert dest.rows == {(1,): {"ref": 1, "nm": "Ada"}}

Keys are tuples everywhere; the fault-injection methods also take a scalar for a one-column key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mapsync import engine, errors, records
from mapsync import mapping as compile_
from mapsync.capture.base import CaptureBase
from mapsync.ports import Capabilities
from mapsync.sheet import checks, loader, models
from mapsync.state.store import StateStore
from mapsync.testing.memory_destination import Call as Call
from mapsync.testing.memory_destination import MemoryDestination as MemoryDestination
from mapsync.testing.memory_destination import as_key as as_key

Predicate = Callable[[records.Row], bool]


# --------------------------------------------------------------------------- the source


class MemorySource:
    """Rows in a dict by key, each carrying its version in the column `version`.

    `upsert` and `delete` change it the way a source system would; deletes leave a tombstone
    (key and version) that the capture reports as a delete change. `where` maps SQL conditions
    of the sheet (`seed.where`) to Python predicates, since nothing here speaks SQL. Child rows
    (`children`: name → (parent columns, rows)) are attached to their parents like SqlSource does.
    """

    capabilities = Capabilities(children=True, read_back=True)

    def __init__(
        self,
        rows: Iterable[records.Row] = (),
        *,
        key: Sequence[str] = ("id",),
        version: str | None = "version",
        children: Mapping[str, tuple[Sequence[str], Iterable[records.Row]]] | None = None,
        where: Mapping[str, Predicate] | None = None,
    ) -> None:
        self.key = list(key)
        self.version = version
        self.rows: dict[records.Key, records.Row] = {}
        self.tombstones: dict[records.Key, Any] = {}
        self.children: dict[str, tuple[list[str], list[records.Row]]] = {
            name: (list(parent), [dict(r) for r in child_rows])
            for name, (parent, child_rows) in (children or {}).items()
        }
        self.where = dict(where or {})
        self.failure: BaseException | None = None
        self.acknowledged: list[tuple[records.Batch, records.WriteResult]] = []
        self.upsert(*rows)

    # ---- changing it

    def upsert(self, *rows: records.Row) -> None:
        """Insert or replace rows (give each its new version)."""
        for row in rows:
            missing = [c for c in [*self.key, *([self.version] if self.version else [])] if c not in row]
            if missing:
                raise ValueError(f"row {row!r} lacks column(s) {', '.join(missing)}")
            key = self.key_of(row)
            self.tombstones.pop(key, None)
            self.rows[key] = dict(row)

    def delete(self, key: Any, version: Any = None) -> None:
        """Delete a row; the capture reports it as a delete change at `version`."""
        if self.version is not None and version is None:
            raise ValueError("a delete needs the version it happened at")
        k = as_key(key)
        del self.rows[k]
        self.tombstones[k] = version

    def fail_with(self, exc: BaseException | None) -> None:
        """Every read raises `exc` (None: reads work again)."""
        self.failure = exc

    # ---- what SqlSource offers the capture and the engine

    def key_of(self, row: records.Row) -> records.Key:
        return tuple(row[k] for k in self.key)

    def _predicate(self, condition: str | None) -> Predicate:
        if condition is None:
            return lambda row: True
        try:
            return self.where[condition]
        except KeyError:
            raise errors.ConfigError(
                f"MemorySource has no predicate for the condition {condition!r} (pass it in `where`)"
            ) from None

    def count(self, extra_where: str | None = None) -> int:
        keep = self._predicate(extra_where)
        return sum(1 for row in self.rows.values() if keep(row))

    def stream(
        self,
        order: Sequence[str],
        where: Sequence[Any],
        after: Sequence[Any] | None,
        batch: int,
        extra_where: str | None = None,
    ) -> Iterator[list[records.Row]]:
        """Rows in `order`, strictly after the keyset `after`, in lists of `batch` rows."""
        if where:
            raise errors.ConfigError("MemorySource.stream takes no SQL conditions")
        self._check()
        keep = self._predicate(extra_where)
        rows = sorted(
            (dict(r) for r in self.rows.values() if keep(r)), key=lambda r: tuple(r[c] for c in order)
        )
        if after is not None:
            mark = tuple(after)
            rows = [r for r in rows if tuple(r[c] for c in order) > mark]
        for i in range(0, len(rows), batch):
            yield rows[i : i + batch]

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        return [dict(self.rows[k]) for k in keys if k in self.rows]

    def attach_children(self, rows: list[records.Row]) -> dict[records.Key, dict[str, list[records.Row]]]:
        out: dict[records.Key, dict[str, list[records.Row]]] = {self.key_of(r): {} for r in rows}
        for name, (parent, child_rows) in self.children.items():
            for found in out.values():
                found[name] = []
            for child in child_rows:
                owner = tuple(child[c] for c in parent)
                if owner in out:
                    out[owner][name].append(dict(child))
        return out

    def high(self) -> Any:
        """The newest version present (rows and tombstones), or None."""
        if self.version is None:
            return None
        versions = [r[self.version] for r in self.rows.values()]
        versions += [v for v in self.tombstones.values() if v is not None]
        return max(versions, default=None)

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure


class MemoryCapture(CaptureBase):
    """Watermark capture over a MemorySource, with the same contract as WatermarkCapture.

    Runs read versions `>=` the stored watermark (inclusive, the engine skips what the ledger
    holds unchanged), in keyset order `(version, key…)`, committing the position after each
    batch. `overlap` re-reads everything. A source without a version column is re-read in full
    every run, like FullCapture. The changes of one read are taken when the read starts.
    """

    capabilities = Capabilities(emits_deletes=True)  # a tombstone is read as a delete

    def __init__(self, source: MemorySource, batch: int) -> None:
        self.source = source
        self.batch = batch
        self.begin()

    def begin(self) -> None:
        """Start of a run: the read's bounds are the run's own."""
        self._low: Any = None
        self._max: Any = None

    def start_seed(self) -> dict[str, Any]:
        return {"watermark": self.source.high()} if self.source.version else {}

    def low(self) -> Any:
        return self._low

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        source, column = self.source, self.source.version
        source._check()
        if column is None:
            yield from self._read_full(cursors)
            return
        self._low = low = cursors.get("watermark")  # None: a seed of an empty source
        after = None if mode == "overlap" else (cursors.get("position") or {}).get("after")
        if after is not None:
            self._max = after[0]
        changes = [records.Change("upsert", k, row[column], dict(row)) for k, row in source.rows.items()] + [
            records.Change("delete", k, v, {**dict(zip(source.key, k, strict=True)), column: v})
            for k, v in source.tombstones.items()
        ]
        changes = [c for c in changes if mode == "overlap" or low is None or c.version >= low]
        changes.sort(key=lambda c: (c.version, *c.key))
        if after is not None:
            mark = tuple(after)
            changes = [c for c in changes if (c.version, *c.key) > mark]
        for i in range(0, len(changes), self.batch):
            page = self._with_children(changes[i : i + self.batch])
            last = page[-1]
            self._max = last.version if self._max is None else max(self._max, last.version)
            position = {} if mode == "overlap" else {"position": {"after": [last.version, *last.key]}}
            yield records.Batch(page, position)

    def _read_full(self, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        after = (cursors.get("position") or {}).get("after")
        for rows in self.source.stream(self.source.key, [], after, self.batch):
            page = [records.Change("upsert", self.source.key_of(r), None, r) for r in rows]
            yield records.Batch(
                self._with_children(page), {"position": {"after": list(self.source.key_of(rows[-1]))}}
            )

    def _with_children(self, changes: list[records.Change]) -> list[records.Change]:
        if not self.source.children:
            return changes
        kids = self.source.attach_children([c.data for c in changes if c.op == "upsert"])
        return [dataclasses.replace(c, children=kids.get(c.key, {})) for c in changes]

    def finish(self) -> dict[str, Any]:
        if self.source.version is None:
            return {"position": None}
        known = [v for v in (self._low, self._max) if v is not None]
        return {"watermark": max(known, default=None), "position": None}

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        self.source.acknowledged.append((batch, result))


# --------------------------------------------------------------------------- the destination


def sheet(syncs: Mapping[str, Mapping[str, Any]], folder: Path | None = None) -> loader.LoadedSheet:
    """A LoadedSheet from sync specs; `from`, `to` and `changes` default to in-memory ones."""
    data = {
        "version": 1,
        "connections": {"memory": {"url": "memory://"}},
        "syncs": {
            name: {
                "from": {"connection": "memory", "table": name},
                "to": {"connection": "memory", "table": name},
                "changes": {"method": "watermark", "column": "version"},
                **spec,
            }
            for name, spec in syncs.items()
        },
    }
    parsed = models.Sheet.model_validate(data)
    problems = [f"{'.'.join(map(str, path))}: {msg}" for path, msg in checks.cross_check(parsed)]
    if problems:
        raise errors.ConfigError("in-memory sheet", problems)
    return loader.LoadedSheet(parsed, (folder or Path.cwd()) / "memory.yaml", {}, ())


def state_store(folder: Path) -> StateStore:
    """The real StateStore, on a fresh SQLite file in `folder`."""
    return StateStore.open("sqlite:///state.db", folder, create=True)


class MemoryEngine(engine.Engine):
    """An Engine whose syncs run over in-memory sources and destinations (by sync name)."""

    def __init__(
        self,
        loaded: loader.LoadedSheet,
        store: StateStore,
        ends: Mapping[str, tuple[MemorySource, MemoryDestination]],
        observer: engine.Observer | None = None,
    ) -> None:
        super().__init__(loaded, store, observer)
        self.ends = dict(ends)
        self.captures: dict[str, MemoryCapture] = {}  # the capture of each sync's latest run

    def parts(self, name: str) -> engine.Parts:
        cfg = self.sheet.syncs[name]
        if name not in self.ends:
            raise errors.ConfigError(f"sync {name}: no in-memory source and destination given")
        source, dest = self.ends[name]
        if source.key != list(cfg.key.from_):
            raise errors.ConfigError(
                f"sync {name}: the sheet's key {cfg.key.from_} is not the source's key {source.key}"
            )
        mapping = compile_.Mapping(
            cfg, dest.columns, dest.child_columns(), connect=self.database, folder=self.loaded.folder
        )
        capture = self.captures[name] = MemoryCapture(source, cfg.delivery.batch)
        return engine.Parts(source, dest, mapping, capture, source.version)
