"""What every capture method shares: the context it gets, the `Capture` role, the registry and
the helpers that turn source rows into changes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from mapsync import records
from mapsync.connectors.sql_source import SqlSource

if TYPE_CHECKING:
    from mapsync.guard import Guard
    from mapsync.sheet import models
    from mapsync.state.store import StateStore


@dataclasses.dataclass
class RunInput:
    """What one run hands its capture (a new one per run, from the engine's run scope): the
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
    store: StateStore
    database: Callable[[str], Any]
    run: RunInput = dataclasses.field(default_factory=RunInput)


class Capture(Protocol):
    """Finds what changed at the source."""

    def start_seed(self) -> dict[str, Any]:
        """Cursor values to record *before* a fresh seed reads anything."""

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        """Batches of changes (`mode`: run | overlap), each with the cursor values after it."""

    def finish(self) -> dict[str, Any]:
        """Cursor values to commit once every batch of the run is committed."""

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        """Tell the source what was delivered (queue statuses, status write-back).

        `result.rejected` holds every rejection of the batch (mapping and destination); every
        other change of the batch was delivered or skipped as unchanged."""


class Registry(Mapping[str, type[Any]]):
    """`changes.method` name → capture class. A method's module is imported on first use (its
    `@register` fills the entry), so importing the capture package loads no method."""

    def __init__(self, modules: dict[str, str]) -> None:
        self._modules = modules
        self._classes: dict[str, type[Any]] = {}

    def add(self, method: str, cls: type[Any]) -> None:
        self._classes[method] = cls

    def __getitem__(self, method: str) -> type[Any]:
        if method not in self._classes:
            importlib.import_module(self._modules[method])  # KeyError: no such method
        return self._classes[method]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


# the engine builds one per run as `cls(source, changes_cfg, batch_size, context)`
REGISTRY = Registry(
    {m: f"mapsync.capture.{m}" for m in ("full", "inbox", "log", "queue", "snapshot", "watermark")}
)


def register(method: str) -> Any:
    def deco(cls: type[Any]) -> type[Any]:
        REGISTRY.add(method, cls)
        return cls

    return deco


def to_changes(
    source: SqlSource, rows: list[records.Row], version_column: str | None
) -> list[records.Change]:
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
    source: SqlSource, cursors: dict[str, Any], batch: int, where: str | None, version_column: str | None
) -> Iterator[records.Batch]:
    """The seed: every row (or `seed.where`) in key order, resumable after the last committed key."""
    state = cursors.get("seed") or {}
    after = state.get("after")
    for rows in source.stream(source.key, [], after, batch, extra_where=where):
        last = list(source.key_of(rows[-1]))
        yield records.Batch(
            to_changes(source, rows, version_column),
            {"seed": {"status": "running", "after": last}},
            read=True,
        )
