"""Snapshot diff: every run compares a content hash of each source row with the key ledger and
emits only inserted, changed and deleted keys (see `capture.keywalk` for how, and why it needs
no common key order).

The ledger's `version` of a snapshot sync is the source row's hash (computed by the database
where it can: PostgreSQL `md5`, MariaDB `MD5`; SQLite builds the row text and Python hashes
it). The seed records the same hash, so the first run after it reads only what changed.
Changed keys are read in full with `SqlSource.read_keys`, one delivery batch at a time.

Deletes come last, after the guard (`mapsync.guard`) judged the whole read. A run keeps no
position: a crashed run starts the walk again and the ledger skips what was already delivered.
Child rows are not part of the hash: a change to child rows alone is not seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mapsync import errors, records
from mapsync.capture import keysource, keywalk
from mapsync.capture.base import Context, register
from mapsync.connectors.sql_source import SqlSource
from mapsync.guard import Guard
from mapsync.sheet.snapshot_models import SnapshotChanges


def upserts(source: SqlSource, keys: list[tuple[records.Key, str | None]]) -> list[records.Change]:
    """Current rows of `keys` as upsert changes whose version is the row hash (rows deleted
    since the walk saw them are left out: the next run finds them gone)."""
    hashes = {records.key_text(k): h for k, h in keys}
    rows = source.read_keys([k for k, _ in keys])
    children = source.attach_children(rows) if source.children and rows else {}
    out = []
    for row in rows:
        key = source.key_of(row)
        out.append(
            records.Change("upsert", key, hashes.get(records.key_text(key)), row, children.get(key, {}))
        )
    return out


def walk(
    source: SqlSource, ctx: Context, guard: Guard, page: int, batch: int, *, hashed: bool, deletes: bool
) -> Iterator[records.Batch]:
    """The key walk as batches: upserts (when `hashed`: new and changed rows; otherwise none),
    then — after the guard — deletes (when `deletes` and the policy sends any)."""
    tally = keywalk.Tally(live_at_start=ctx.store.live_count(ctx.sync))
    pending: list[tuple[records.Key, str | None]] = []
    for send in keywalk.changed_keys(ctx.store, ctx.sync, source, page, tally, hashed=hashed):
        if not hashed:
            continue
        pending.extend(send)
        while len(pending) >= batch:
            chunk, pending = pending[:batch], pending[batch:]
            yield records.Batch(upserts(source, chunk), {})
    if pending:
        yield records.Batch(upserts(source, pending), {})
    if not deletes:
        return
    if ctx.config.deletes.policy == "ignore":
        ctx.run.ignored_deletes += tally.deletes  # reported, never sent
        return
    guard.check_read(tally.source_rows, tally.deletes, tally.live_at_start)
    if tally.deletes == 0:
        return
    dels: list[records.Change] = []
    for gone in keywalk.deleted_keys(ctx.store, ctx.sync, source, page, tally.seen):
        dels.extend(gone)
        while len(dels) >= batch:
            head, dels = dels[:batch], dels[batch:]
            yield records.Batch(head, {})
    if dels:
        yield records.Batch(dels, {})


@register("snapshot")
class SnapshotCapture:
    def __init__(self, source: SqlSource, cfg: SnapshotChanges, batch: int, ctx: Context) -> None:
        if not isinstance(source, SqlSource):
            raise errors.ConfigError(
                f"sync {ctx.sync}: `changes: {{method: snapshot}}` needs a SQL source (it hashes rows "
                "in the database)"
            )
        self.source = source
        self.cfg = cfg
        self.batch = batch
        self.ctx = ctx

    @staticmethod
    def version_column(cfg: SnapshotChanges) -> None:
        return None  # the version is the row hash, not a column

    @staticmethod
    def emits_deletes(cfg: SnapshotChanges) -> bool:
        return True

    def start_seed(self) -> dict[str, Any]:
        return {}

    def low(self) -> Any:
        return None

    def seed_batches(
        self,
        source: SqlSource,
        cursors: dict[str, Any],
        batch: int,
        where: str | None,
        version_column: str | None,
    ) -> Iterator[records.Batch]:
        """The seed, as `capture.seed_batches`, recording each row's hash as its version."""
        after = (cursors.get("seed") or {}).get("after")
        for chunk in keysource.stream_rows(source, batch, after, where):
            rows = [row for row, _ in chunk]
            children = source.attach_children(rows) if source.children else {}
            changes = []
            for row, row_hash in chunk:
                key = source.key_of(row)
                changes.append(records.Change("upsert", key, row_hash, row, children.get(key, {})))
            position = {"seed": {"status": "running", "after": list(changes[-1].key)}}
            yield records.Batch(changes, position, read=True)

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        page = max(self.cfg.page, 1)
        ctx = self.ctx  # the run's guard, else one with the sheet's settings
        guard = ctx.run.guard or Guard(ctx.sync, ctx.store, ctx.config.deletes)
        return walk(self.source, ctx, guard, page, self.batch, hashed=True, deletes=True)

    def finish(self) -> dict[str, Any]:
        return {}

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        return None
