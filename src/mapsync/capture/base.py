"""What every capture method shares: the context it gets, the base class of the methods (the
role itself is `mapsync.ports.Capture`), the typed registry and the helpers that turn source rows
into changes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from mapsync import records
from mapsync.ports import NOTHING, Capabilities, Capture, ColumnarSource, Cursors, Destination, Handle, Source
from mapsync.sheet import models

if TYPE_CHECKING:
    from mapsync.guard import Guard
    from mapsync.state.ports import Store


@dataclasses.dataclass
class RunInput:
    """What one run hands its capture (a new one per run, from the engine's run scope, while
    the capture itself lives across runs): the
    run's mass-delete guard (None: the capture judges with one of the sheet's settings),
    whether `mapsync run --deletes` asked for a key-set delete check, an overlap `--window`,
    and, filled in by the capture, the deletes a key walk found but sent none of (policy
    `ignore`), for the run's report."""

    guard: Guard | None = None
    check_deletes: bool = False
    window: dt.timedelta | None = None
    ignored_deletes: int = 0


@dataclasses.dataclass
class Context:
    """What a capture method may use besides its source: the sync's name and config, the state
    store (key ledger, cursors), the engine's open connections by name, and the current run's
    input (`run`, replaced by the engine before each run: the capture keeps none of it)."""

    sync: str
    config: models.SyncConfig
    store: Store
    database: Callable[[str], Handle]
    run: RunInput = dataclasses.field(default_factory=RunInput)
    # the sync's destination, for a capture that reads back what it wrote (an export's document number)
    destination: Destination | None = None


class CaptureFactory(Protocol):
    """A capture method's class, as the registry holds it: the engine builds one per sync as
    `cls(source, changes_cfg, batch_size, context)` and reuses it across runs (`begin` starts
    each); the class says, from the sheet alone, which
    column is the version and whether the method emits deletes."""

    capabilities: Capabilities

    def __call__(self, source: Source, cfg: models.Changes, batch: int, ctx: Context) -> Capture: ...

    def version_column(self, cfg: models.Changes) -> str | None: ...

    def emits_deletes(self, cfg: models.Changes) -> bool: ...


class CaptureBase:
    """What the capture methods share: the plain seed, no zone, no low version.

    A method inherits it and overrides what it does differently (snapshot: its seed records row
    hashes; watermark: its zone and stored watermark). Each registered class also gives the
    static `version_column(cfg)` and `emits_deletes(cfg)` of `CaptureFactory`."""

    capabilities: Capabilities = NOTHING
    zone: dt.tzinfo | None = None

    def begin(self) -> None:
        """Start of a run: a method with state of its own during a run resets it here."""
        return None

    def seed_batches(
        self, source: Source, cursors: Cursors, batch: int, where: str | None, version_column: str | None
    ) -> Iterator[records.Batch]:
        return seed_batches(source, cursors, batch, where, version_column)

    def low(self) -> Any:
        return None

    def committed(self, batch: records.Batch) -> None:
        return None

    def by_key(
        self, source: Source, rows: list[records.Row], version_column: str | None
    ) -> list[records.Change]:
        """Changes of rows read again by key (retry, reexport), versioned as the read versions them."""
        return to_changes(source, rows, version_column)


class Registry(Mapping[str, CaptureFactory]):
    """`changes.method` name → capture class. A method's module is imported on first use (its
    `@register` fills the entry), so importing the capture package loads no method."""

    def __init__(self, modules: dict[str, str]) -> None:
        self._modules = modules
        self._classes: dict[str, CaptureFactory] = {}

    def add(self, method: str, cls: CaptureFactory) -> None:
        self._classes[method] = cls

    def __getitem__(self, method: str) -> CaptureFactory:
        if method not in self._classes:
            importlib.import_module(self._modules[method])  # KeyError: no such method
        return self._classes[method]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


# the engine builds one per sync as `cls(source, changes_cfg, batch_size, context)`
REGISTRY = Registry(
    {
        m: f"mapsync.capture.{m}"
        for m in ("export_flag", "full", "inbox", "log", "queue", "snapshot", "watermark")
    }
)

C = TypeVar("C", bound=type[CaptureBase])


def register(method: str) -> Callable[[C], C]:
    """Registers a capture class under its method. The registry dispatches on the method's name,
    so a class is only ever built with its own method's changes model (and declares its
    constructor and static methods with that narrower type): the one place where mypy is told
    to take the class as the wider `CaptureFactory`. tests/unit/test_ports.py checks every registered
    class against the role at run time."""

    def deco(cls: C) -> C:
        REGISTRY.add(method, cast(CaptureFactory, cls))
        return cls

    return deco


def to_changes(source: Source, rows: list[records.Row], version_column: str | None) -> list[records.Change]:
    """Source rows as upsert changes, with their child rows attached (one query per child table)."""
    children = source.attach_children(rows) if source.children else {}
    out = []
    for row in rows:
        key = source.key_of(row)
        out.append(
            records.Change(
                "upsert", key, row[version_column] if version_column else None, row, children.get(key, {})
            )
        )
    return out


def seed_batches(
    source: Source, cursors: Cursors, batch: int, where: str | None, version_column: str | None
) -> Iterator[records.Batch]:
    """The seed: every row (or `seed.where`) in key order, resumable after the last committed key."""
    state = cursors.get("seed") or {}
    after = state.get("after")
    if source.capabilities.columnar_read and cast(ColumnarSource, source).columnar:  # a columnar plan
        yield from _columnar_seed(source, after, batch, where, version_column)
        return
    for rows in source.stream(source.key, [], after, batch, extra_where=where):
        last = list(source.key_of(rows[-1]))
        yield records.Batch(
            to_changes(source, rows, version_column),
            {"seed": {"status": "running", "after": last}},
            read=True,
        )


def read_batch(
    source: Source, rows: list[records.Row], version_column: str | None, position: Any, *, columnar: bool
) -> records.Batch:
    """A batch of rows read (each key at most once): held as Arrow columns (`Batch.arrow`) when
    `columnar` (the caller's read may be) and the engine made the source columnar and the rows
    have an exact Arrow form (arrow_batch.py), else as changes."""
    if columnar and source.capabilities.columnar_read and cast(ColumnarSource, source).columnar and rows:
        from mapsync import arrow_batch  # pyarrow: only a columnar run loads it

        arrow = arrow_batch.to_record_batch(list(rows[0]), [tuple(row.values()) for row in rows])
        return _arrow_or_rows(source, arrow, lambda: rows, version_column, position)
    return records.Batch(to_changes(source, rows, version_column), position, read=True)


def _arrow_or_rows(
    source: Source,
    arrow: Any,
    rows: Callable[[], list[records.Row]],
    version_column: str | None,
    position: Any,
) -> records.Batch:
    """A read batch held as Arrow (its changes built on demand), or as the changes of `rows()`
    where it has no Arrow form (`arrow` None)."""
    if arrow is None:
        return records.Batch(to_changes(source, rows(), version_column), position, read=True)
    from mapsync import arrow_batch

    changes = arrow_batch.ArrowChanges(arrow, source.key, version_column)
    return records.Batch(changes, position, read=True, arrow=arrow)  # type: ignore[arg-type]


def _columnar_seed(
    source: Source, after: Any, batch: int, where: str | None, version_column: str | None
) -> Iterator[records.Batch]:
    """`seed_batches` with each batch held as an Arrow record batch (`Batch.arrow`), or as rows
    where the batch's values have no exact Arrow form (arrow_batch.py). Only a SQL source with no
    child tables is made columnar (engine_parts sets `source.columnar`)."""
    from mapsync import arrow_batch  # pyarrow: only a columnar run loads it

    columnar = cast(ColumnarSource, source)
    read = columnar.stream_arrow(after, batch, extra_where=where)
    if read is None:  # no Arrow reader for this source: the driver's rows, made Arrow
        read = columnar.stream_tuples(source.key, after, batch, extra_where=where)
    for item in read:
        if isinstance(item, tuple):
            names, rows = item
            if not rows:
                continue
            arrow = arrow_batch.to_record_batch(names, rows)
            last = list(source.key_of(dict(zip(names, rows[-1], strict=True))))
        else:
            arrow = item
            last = [arrow.column(k)[arrow.num_rows - 1].as_py() for k in source.key]
        position = {"seed": {"status": "running", "after": last}}
        dicts = lambda: [dict(zip(names, r, strict=True)) for r in rows]  # noqa: E731, B023 (used at once)
        yield _arrow_or_rows(source, arrow, dicts, version_column, position)
