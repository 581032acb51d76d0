"""Trigger-fed change queue: triggers (`mapsync triggers install`) write one row per changed
source row into a queue table; each run claims rows, delivers the *current* state of their keys
and marks every row `completed`, `superseded` or `error`.

- Claims are short transactions, in id order, bounded by the batch size, `FOR UPDATE SKIP
  LOCKED` on PostgreSQL and MariaDB (SQLite: `BEGIN IMMEDIATE`), so concurrent workers get
  disjoint rows. There is no "id > last" cursor: a row whose transaction commits late (a smaller
  id becoming visible after larger ones) is claimed by the run that first sees it.
- Several rows of one key in a claim collapse into the newest; the older ones are `superseded`.
  The key's row is read from the source as it is now: present → an upsert, gone → a delete
  carrying the old image. So delete + re-insert ends present, insert + delete ends deleted.
- A rejected key's row becomes `error` with the message and is retried by a later run after
  `backoff`·2^n, up to `max_retries`; a later delivered change of the key supersedes it.
- A row left `in-progress` by a crashed run is claimed again once its claim is older than
  `lease`; the re-send is absorbed by the destination's upsert and the key ledger.
- A run claims only rows up to the largest id it saw at its start, then purges old final rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, errors, records
from mapsync.capture import queue_table as qt
from mapsync.capture.base import CaptureBase, Context, register, to_changes
from mapsync.capture.triggers import QueueStatus
from mapsync.connectors.sql_source import SqlSource
from mapsync.ports import Capabilities
from mapsync.sheet.queue_model import QueueChanges

log = logging.getLogger("mapsync.capture.queue")
_PASSES = "mapsync__passes_filter"


@dataclasses.dataclass
class _Group:
    """The claimed rows of one key: the newest decides, the rest are superseded."""

    key_text: str  # of the change sent (matches `Rejection.key`)
    record_key: str  # as the trigger wrote it
    newest: qt.Claimed
    older: list[int]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A batch's acknowledgement (`Batch.ack`): the claimed rows of each of its keys."""

    groups: list[_Group]


def parse_key(record_key: str) -> records.Key:
    """The key tuple of a queue row's JSON array (integral numbers as int)."""
    try:
        values = json.loads(record_key, parse_float=decimal.Decimal)
    except ValueError:
        raise errors.PermanentError(
            f"queue row key {record_key[:100]!r} is not JSON", failure_class="source"
        ) from None
    if not isinstance(values, list):
        values = [values]
    return tuple(_plain(v) for v in values)


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float | decimal.Decimal):
        d = decimal.Decimal(value)
        return int(d) if d == d.to_integral_value() else d.normalize()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def same_key(key: records.Key) -> str:
    """A text form under which a source row's key and a queue row's key compare equal."""
    return records.canonical_json([_plain(v) for v in key])


@register("queue")
class QueueCapture(CaptureBase):
    capabilities = Capabilities(emits_deletes=True, columnar_read=True)

    def __init__(self, source: SqlSource, cfg: QueueChanges, batch: int, ctx: Context) -> None:
        self.source = source
        self.cfg = cfg
        self.batch = batch
        self.db = source.db
        sync = ctx.sync
        if ctx.config.from_.table is None:
            raise errors.ConfigError(
                f"sync {sync}: changes.method queue needs `from.table` (triggers watch a table, not a query)"
            )
        self.source_table = ctx.config.from_.table
        known = sa.inspect(self.db.engine).get_table_names()
        if cfg.table not in known:
            raise errors.ConfigError(
                f"sync {sync}: queue table {cfg.table!r} not found in connection {self.db.name}: run "
                "`mapsync triggers install SHEET` first (before the seed, so no change is missed)"
            )
        self.begin()

    def begin(self) -> None:
        """Start of a run: a claim token of its own (a run releases only what it claimed), and
        nothing claimed or seen yet."""
        self.token = uuid.uuid4().hex
        self._errors_seen = False
        self._claimed = False

    @staticmethod
    def version_column(cfg: QueueChanges) -> None:
        return None

    @staticmethod
    def emits_deletes(cfg: QueueChanges) -> bool:
        return True

    def start_seed(self) -> dict[str, Any]:
        # queue rows written while the seed runs are processed by the next run (idempotent upserts)
        return {}

    def low(self) -> Any:
        return None

    # ----------------------------------------------------------------- reading

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        engine = self.db.engine
        try:
            with engine.connect() as conn:
                up_to = qt.max_id(conn, self.cfg.table)
                self._errors_seen = qt.has_errors(conn, self.cfg.table, self.source_table)
        except sa.exc.DBAPIError as exc:
            raise self._error("reading the queue", exc) from None
        if up_to is None:
            return
        try:
            while True:
                claimed = self._claim(up_to)
                if not claimed:
                    return
                yield self._batch(claimed)
        finally:  # a run that stopped (not one that was killed) hands back what it did not mark
            self._release()

    def _claim(self, up_to: int) -> list[qt.Claimed]:
        conn = qt.begin_claim(self.db.engine)
        try:
            rows = qt.claim(
                conn,
                self.cfg.table,
                self.source_table,
                limit=self.batch,
                up_to=up_to,
                token=self.token,
                max_retries=self.cfg.max_retries,
                lease=self.cfg.lease,
            )
            conn.commit()
            self._claimed = self._claimed or bool(rows)
            return rows
        except sa.exc.DBAPIError as exc:
            raise self._error("claiming queue rows", exc) from None
        finally:
            conn.close()

    def _batch(self, claimed: list[qt.Claimed]) -> records.Batch:
        by_key: dict[str, list[qt.Claimed]] = {}
        for row in claimed:  # in id order
            by_key.setdefault(row.record_key, []).append(row)
        keys = {raw: parse_key(raw) for raw in by_key}
        current = self._current(list(keys.values()))
        upserts: list[records.Row] = []
        changes: list[records.Change] = []
        groups: list[_Group] = []
        for raw, rows in by_key.items():
            key = keys[raw]
            found = current.get(same_key(key))
            sent = key
            if found is None:
                image = next((r.old_image for r in reversed(rows) if r.old_image), None) or {}
                changes.append(records.Change("delete", key, None, image))
            elif found.pop(_PASSES, 1):
                upserts.append(found)
                sent = self.source.key_of(found)
            # else: the row exists but no longer passes `filter`: nothing to send
            groups.append(_Group(records.key_text(sent), raw, rows[-1], [r.id for r in rows[:-1]]))
        if upserts:
            try:
                changes[:0] = to_changes(self.source, upserts, None)
            except sa.exc.DBAPIError as exc:
                raise self._error("reading child rows", exc) from None
        return records.Batch(changes, ack=_Plan(groups))

    def _current(self, keys: Sequence[records.Key]) -> dict[str, records.Row]:
        """The source rows of these keys as they are now, by `same_key` text; with a `filter`,
        each row says whether it passes it."""
        src = self.source
        select: list[Any] = [src.col(c) for c in src.columns]
        if src.filter:
            select.append(sa.case((sa.text(f"({src.filter})"), 1), else_=0).label(_PASSES))
        out: dict[str, records.Row] = {}
        try:
            for data in src.rows_by_key(keys, select=select):
                out[same_key(src.key_of(data))] = data
        except sa.exc.DBAPIError as exc:
            raise self._error("reading the source", exc) from None
        return out

    # ----------------------------------------------------------------- after delivery

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        groups = batch.ack.groups if isinstance(batch.ack, _Plan) else []
        rejected: dict[str, str] = {}
        for r in result.rejected:
            rejected.setdefault(records.key_text(r.key), r.message)
        completed: list[int] = []
        superseded: list[int] = []
        failures: list[tuple[int, int, str]] = []
        delivered: dict[str, int] = {}
        for g in groups:
            superseded.extend(g.older)
            message = rejected.get(g.key_text)
            if message is None:
                completed.append(g.newest.id)
                delivered[g.record_key] = g.newest.id
            else:
                failures.append((g.newest.id, g.newest.retry_count, message))
        try:
            with qt.begin(self.db.engine) as conn:
                qt.mark(conn, self.cfg.table, self.token, QueueStatus.SUPERSEDED, superseded)
                qt.mark(conn, self.cfg.table, self.token, QueueStatus.COMPLETED, completed)
                qt.fail(conn, self.cfg.table, self.token, failures, self.cfg.backoff)
                if self._errors_seen or failures:
                    qt.supersede_errors(conn, self.cfg.table, self.source_table, delivered)
        except sa.exc.DBAPIError as exc:
            raise self._error("marking queue rows", exc) from None
        self._errors_seen = self._errors_seen or bool(failures)

    def _release(self) -> None:
        if not self._claimed:
            return
        try:
            with qt.begin(self.db.engine) as conn:
                qt.release(conn, self.cfg.table, self.token)
        except sa.exc.DBAPIError as exc:  # only logged: the lease timeout reclaims them instead
            log.warning(
                "queue_release_failed",
                extra={"action": "queue_release_failed", "error": db_errors.describe_error(exc)},
            )

    def finish(self) -> dict[str, Any]:
        try:
            purged = qt.purge(
                self.db.engine, self.cfg.table, self.source_table, self.cfg.retention, self.cfg.archive
            )
            if purged:
                log.info("queue_purged", extra={"action": "queue_purged", "rows": purged})
        except sa.exc.DBAPIError as exc:  # only logged: a failed purge is retried by the next run
            log.warning(
                "queue_purge_failed",
                extra={"action": "queue_purge_failed", "error": db_errors.describe_error(exc)},
            )
        return {}

    def _error(self, what: str, exc: sa.exc.DBAPIError) -> errors.TransientError:
        return db_errors.transient(
            f"sync {self.source.sync}: {what} in {self.cfg.table} failed", exc, "source"
        )
