"""The plain records that flow through the engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Key = tuple[Any, ...]
Row = dict[str, Any]
Op = Literal["upsert", "delete"]
WriteOp = Literal["upsert", "update", "delete"]  # update: change an existing row only


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One changed source row (or its deletion), carrying the source's version of it."""

    op: Op
    key: Key
    version: Any
    data: Row
    children: Mapping[str, list[Row]] = dataclasses.field(default_factory=dict)


class RunKind(enum.StrEnum):
    """What a run does (stored in the run history as its value)."""

    SEED = "seed"
    RUN = "run"
    OVERLAP = "overlap"  # a run re-reading a window of the watermark
    RETRY = "retry"  # the rows of open record errors, read again by key
    REEXPORT = "reexport"  # transactions of an export set pending again and sent (`mapsync reexport`)
    SWEEP = "sweep"  # orders an API marked exported but mapsync never received, reset (`mapsync sweep`)
    RECONCILE = "reconcile"  # a check of `reconcile:` (its run row's sync is `reconcile:<check>`)
    REPAIR = "repair"  # `mapsync reconcile --repair`: keys a check found, re-sent forced (repair_plan.py)


class RunStatus(enum.StrEnum):
    """How a run ended (`running` until it did), as stored in the run history."""

    RUNNING = "running"
    SUCCESS = "success"
    PARTIAL = "partial"  # delivered, with record errors
    FAILED = "failed"
    SKIPPED = "skipped"  # a scheduled slot not run: the previous run still ran, or the sync was paused
    STOPPED = "stopped"  # ended between two batches by a graceful stop (SIGTERM); the next run goes on


@dataclasses.dataclass(slots=True)
class Batch:
    """An ordered, bounded list of changes and the capture position after them.

    `changes` may be any sequence whose items are made on access (a columnar batch that builds
    each `Change` from its Arrow row only when asked): the engine only iterates it and takes its
    length. `ack` is what the capture that made the batch needs to acknowledge it (the queue
    rows, the inbox items of each key): the batch carries it, so the capture keeps no plan of its
    own between `read` and `acknowledge`; each capture gives it its own type."""

    changes: list[Change]
    position: Any = None
    read: bool = False  # rows read from the source (seed, full, watermark): each key at most once
    ack: object | None = None
    # every change is written whatever the key ledger holds (export_flag: a pending flag is the
    # request to send, also for an unchanged row after a reset)
    force: bool = False
    # the batch's rows as an Arrow record batch (a columnar seed, arrow_batch.py); `changes`
    # then builds each row's Change from it only when asked (the per-record path's rows)
    arrow: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be delivered, with the reason, naming field and rule where known."""

    key: Key
    message: str
    field: str | None = None
    rule: str | None = None
    version: Any = None
    value: Any = None  # the untranslatable value, for rejections of `map`, `country`, `lookup`, …


@dataclasses.dataclass(slots=True)
class Mapped:
    """A translated record, ready for a destination."""

    op: WriteOp
    key: Key  # source key
    dest_key: Key
    version: Any
    values: Row
    children: dict[str, list[Row]] = dataclasses.field(default_factory=dict)
    hash: str = ""


# `Delivered.drift` of a row written (or kept as the destination had it) without a digest:
# the ledger's stored pair no longer describes the row, so it is cleared, never kept
NO_DRIFT: tuple[str, str] = ("", "")
# the digest of a row mapsync delivered but cannot describe (kept as the destination had it by
# `on_exists: skip`, or holding a value the form cannot read): `(dkey, UNCOMPARED)` in the
# ledger; a drift check leaves its bucket out and says so, a backfill leaves it alone
UNCOMPARED = "-"
KEPT = "kept"  # `Delivered.note`: the destination held the record changed and it was left alone
# `Rejection.rule` of a record an export's `on_exists: fail` refused (`already imported`): the
# destination holds it, it did not refuse a write (the breaker does not count it)
ON_EXISTS = "on_exists"


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """The destination confirmed this record."""

    key: Key
    version: Any
    hash: str
    dest_id: str | None
    op: WriteOp = "upsert"
    # "kept": the destination already held the record, changed there, and it was left alone
    # (`on_exists: skip` of an export); None: written
    note: str | None = None
    # (dkey, digest) of the row as written (connectors/drift_form.py); None: the ledger keeps
    # the pair it holds (a row seen unchanged, a destination that computes none, a delete);
    # NO_DRIFT: a row written without a digest, the ledger's pair is cleared (undigested);
    # (dkey, UNCOMPARED): a row the digest cannot describe
    drift: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveredColumns:
    """The upserts of a columnar batch the destination confirmed, as parallel lists (row i of
    each list is one row, no object per row): what a `Delivered` with `op="upsert"` and no
    note says of each, for the state commit."""

    keys: Sequence[str]  # key texts (`key_text`), each once
    versions: Sequence[Any]
    hashes: Sequence[str]
    dest_ids: Sequence[str]  # the destination keys' texts (`Delivered.dest_id`)
    # (dkey, digest), `NO_DRIFT`, (dkey, `UNCOMPARED`), or None: the ledger keeps its pair (a
    # destination that computes none), as `Delivered.drift`
    drift: Sequence[tuple[str, str] | None]
    # each version's stored text (`state.values.encode`), where the caller built them column-wise
    version_texts: Sequence[str] | None = None
    key_values: Sequence[Key] = ()  # the source keys themselves (a run's delivery attempts)

    def __len__(self) -> int:
        return len(self.keys)


@dataclasses.dataclass(slots=True)
class WriteResult:
    """Per-record outcome of one destination write."""

    delivered: list[Delivered] = dataclasses.field(default_factory=list)
    rejected: list[Rejection] = dataclasses.field(default_factory=list)


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


# one encoder for every call: `json.dumps(**options)` would build a new one per value. Rows and
# keys are never self-referencing, so the circular-reference bookkeeping is skipped.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_default, check_circular=False)


def canonical_json(value: Any) -> str:
    """A stable text form of keys and values (sorted, no spaces, exact decimals)."""
    return _ENCODER.encode(value)


def key_text(key: Key) -> str:
    if len(key) == 1 and type(key[0]) is int:  # the common case, same text as the JSON below
        return f"[{key[0]}]"
    return _ENCODER.encode(list(key))


def content_hash(values: Row, children: Mapping[str, list[Row]] | None = None) -> str:
    payload = canonical_json([values, children or {}])
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
