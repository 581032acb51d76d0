"""The roles a sync is made of, written down: `Source`, `Destination`, `Capture`, the connection
`Handle` a connector opens, and the `Capabilities` each of them declares.

Optional behaviour is data, never discovered: every source, destination and capture class sets
a `capabilities` class attribute, and the engine, the checks and `mapsync check` read its fields
(`dest.capabilities.async_jobs`, `dest.capabilities.key_probe` …) instead of asking an object
with `getattr`/`hasattr` what it happens to have. A role's members below are what the engine,
the capture methods and `mapsync check` really call. mypy checks each implementation (through
the connectors' return types, `Parts`, and `checkup._implements` for what the registries load on
first use); tests/unit/test_ports.py checks them at run time.

This module sits in the bottom layer (with records, errors, columns): it names no sheet model,
no connector and no capture method. The registries, which do know the sheet's models, are typed
with these roles: `mapsync.connectors.Connector` (kind → a connector building a `Handle`, a
`Source`, a `Destination`) and `mapsync.capture.CaptureFactory` (method → a class building a
`Capture`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mapsync import errors, records
from mapsync.columns import ColumnInfo

if TYPE_CHECKING:
    import sqlalchemy as sa

Cursors = dict[str, Any]  # a capture's cursor values (JSON: watermark, positions, seed state)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a source, destination or capture can do beyond its role's required members.

    Declared per class (`capabilities = Capabilities(...)`), never discovered. Fields for what is
    coming (`insert_if_absent`) are False where not built.
    """

    deletes: bool = False  # destination: writes hard deletes (`disable` is an update: any can)
    children: bool = False  # child rows (`children:`) travel with their parent
    async_jobs: bool = False  # destination: delivers through async jobs; `begin(kind)` each run
    read_back: bool = False  # reads current rows by key (`read_keys`)
    server_side_hashing: bool = False  # the database hashes rows (snapshot key walk)
    key_probe: bool = False  # destination: its key collation is probed (`key_probe`)
    version_guard: bool = False  # destination: an upsert keeps a newer row (mapped version column)
    insert_if_absent: bool = False  # destination: writes a row only where none is (not built)
    destructive_read: bool = False  # source/capture: reading removes what was read (an API's order export)
    bulk_write: bool = False  # destination: many records per statement or call
    columnar_write: bool = False  # destination: writes an Arrow table whole (`ColumnarDestination`)
    # source: reads its seed as Arrow batches (`ColumnarSource`); capture: its seed and runs
    # read through `capture.base` (seed_batches, read_batch), which take them (else the
    # columnar plan is never used, and is not built: pyarrow stays unloaded)
    columnar_read: bool = False
    emits_deletes: bool = False  # capture: can emit delete changes (`emits_deletes(cfg)`: when)
    deletes_on_request: bool = False  # capture: runs a key-set delete check when asked (`run --deletes`)


NOTHING = Capabilities()


class Probed(Protocol):
    """One destination key as the destination's collation groups it (see `KeyProbe`)."""

    @property
    def group(self) -> int: ...
    @property
    def stored(self) -> records.Key | None: ...


class KeyProbe(Protocol):
    """The destination's own judgement of which keys it takes for one (mapsync.collisions)."""

    @property
    def active(self) -> bool: ...
    @property
    def qualified(self) -> str: ...
    @property
    def description(self) -> str: ...
    def probe(self, keys: Sequence[records.Key]) -> Sequence[Probed]: ...


class CallBudget(Protocol):
    """A connection's shared call budget, as `mapsync check` reports it."""

    def remaining(self) -> dict[str, Any]: ...


class Handle(Protocol):
    """An open connection (a SQL engine, an HTTP client): one per connection per process."""

    @property
    def name(self) -> str: ...
    @property
    def dialect(self) -> str | None:
        """The SQL dialect (`sqlite`, `postgresql`, `mysql`); None for a connection without SQL."""

    @property
    def engine(self) -> sa.Engine | None:
        """The SQLAlchemy engine of a SQL connection; None otherwise."""

    @property
    def budget(self) -> CallBudget | None:
        """The call budget of an API connection with limits; None otherwise."""

    def check(self) -> dict[str, Any] | None:
        """Reachability and login for `mapsync check`, changing nothing; None: the caller checks
        it (SQL: `mapsync check` runs its own query)."""

    def close(self) -> None: ...


class Source(Protocol):
    """The reading side of a sync: what the engine and the capture methods call on any source."""

    capabilities: Capabilities

    @property
    def key(self) -> list[str]: ...
    @property
    def children(self) -> Mapping[str, object]:
        """Child tables by name (empty: no `children:`)."""

    def key_of(self, row: records.Row) -> records.Key: ...
    def stream(
        self,
        order: Sequence[Any],
        where: Sequence[Any],
        after: Sequence[Any] | None,
        batch: int,
        extra_where: str | None = None,
    ) -> Iterator[list[records.Row]]:
        """Rows in `order` (names, or the connector's own expressions), matching `where` (the
        connector's own conditions), strictly after the keyset `after`, `batch` rows a list."""

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        """Current rows of these keys; missing keys are absent."""

    def count(self, extra_where: str | None = None) -> int | None:
        """Rows of the read (None: the source cannot tell without reading)."""

    def attach_children(self, rows: list[records.Row]) -> dict[records.Key, dict[str, list[records.Row]]]: ...


class Destination(Protocol):
    """The writing side of a sync."""

    capabilities: Capabilities

    @property
    def columns(self) -> dict[str, ColumnInfo]:
        """The catalog of the destination table (from the sheet for an API)."""

    def child_columns(self) -> dict[str, dict[str, ColumnInfo]]: ...
    def is_empty(self) -> bool:
        """True only when the destination holds no row (a fresh seed may then bulk-insert)."""

    def write(self, batch: Sequence[records.Mapped], *, fresh: bool = False) -> records.WriteResult: ...
    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        """The stored rows of these destination keys (`capabilities.read_back`; elsewhere it
        raises ConfigError)."""

    def begin(self, kind: str) -> None:
        """Start of every run, whatever its kind (the engine's run scope calls it): reset what
        is counted per run (`fell_back`); `capabilities.async_jobs`: pick the mode and, for
        seed | run | overlap, settle what a crash left. A destination lives across runs."""

    @property
    def fell_back(self) -> int:
        """Hard deletes refused and written as `disable` instead, so far this run."""

    @property
    def key_probe(self) -> KeyProbe | None:
        """The key-collation probe (`capabilities.key_probe`), else None."""


class ColumnarSource(Source, Protocol):
    """A source with `capabilities.columnar_read`: the columnar seed's reads (run_columnar.py)."""

    columnar: bool  # the engine sets it when the sync has a columnar plan: the seed reads Arrow

    @property
    def info(self) -> Mapping[str, ColumnInfo]:
        """The source table's catalog (empty for a query)."""

    @property
    def columns(self) -> list[str]:
        """The columns a read returns, in order."""

    def stream_tuples(
        self, order: Sequence[str], after: Sequence[Any] | None, batch: int, extra_where: str | None = None
    ) -> Iterator[tuple[list[str], Sequence[Sequence[Any]]]]:
        """`stream` in key order as (column names, row tuples) per batch."""

    def stream_arrow(
        self, after: Sequence[Any] | None, batch: int, extra_where: str | None = None
    ) -> Iterator[Any] | None:
        """The seed read in key order as Arrow record batches, or (names, row tuples) where a
        batch has no exact Arrow form; None: this source has no Arrow reader (`stream_tuples`)."""


class ColumnarDestination(Destination, Protocol):
    """A destination with `capabilities.columnar_write`: the columnar seed's writes."""

    @property
    def drift_form(self) -> Any:
        """The drift form of its rows (connectors/drift_form.py), None when it has none."""

    def arrow_targets(self, cols: Sequence[str]) -> dict[str, Any] | None:
        """The Arrow type each written column is written from, None: no columnar write."""

    def write_arrow(self, data: Any, *, fresh: bool = False) -> None:
        """Write an Arrow table of mapped rows in one transaction; `delivery.Refused` or
        ValueError: the caller writes these rows per record."""


class DestinationBase:
    """What a destination without the optional behaviour answers (inherit it, then declare
    `capabilities`): no async jobs, the run's fallback count reset by `begin`, no key probe, no
    read-back."""

    capabilities: Capabilities = NOTHING
    fell_back: int = 0
    key_probe: KeyProbe | None = None

    def begin(self, kind: str) -> None:
        self.fell_back = 0

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        raise errors.ConfigError(f"{type(self).__name__} cannot read its rows back by key")


class Capture(Protocol):
    """Finds what changed at the source (see mapsync.capture). One capture serves every run of
    its sync in a process: it keeps no state from one run to the next. The run's input (guard,
    `--deletes`, `--window`) is in its context's `run`, replaced before each run."""

    capabilities: Capabilities

    def begin(self) -> None:
        """Start of a run (the engine's run scope calls it): drop whatever the previous run left
        (read bounds, a claim token, the delete check's mark)."""

    @property
    def zone(self) -> dt.tzinfo | None:
        """The zone naive versions are read in (watermark), else None."""

    def start_seed(self) -> Cursors:
        """Cursor values to record *before* a fresh seed reads anything."""

    def seed_batches(
        self, source: Source, cursors: Cursors, batch: int, where: str | None, version_column: str | None
    ) -> Iterator[records.Batch]:
        """The seed: every row (or `seed.where`) in key order, resumable after the last key."""

    def read(self, mode: str, cursors: Cursors) -> Iterator[records.Batch]:
        """Batches of changes (`mode`: run | overlap), each with the cursor values after it."""

    def low(self) -> Any:
        """The version the read started from (the stored watermark), for the overlap's `missed`."""

    def by_key(
        self, source: Source, rows: list[records.Row], version_column: str | None
    ) -> list[records.Change]:
        """Changes of rows read again by key (retry, reexport), with the versions the read gives."""

    def finish(self) -> Cursors:
        """Cursor values to commit once every batch of the run is committed."""

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        """Tell the source what was delivered (queue statuses, status write-back).

        `result.rejected` holds every rejection of the batch (mapping and destination); every
        other change of the batch was delivered or skipped as unchanged."""

    def committed(self, batch: records.Batch) -> None:
        """The batch's state commit (ledger, record errors) is durable: what the source may
        learn only after it (an inbox item closed as `error` once its record error is kept)."""
