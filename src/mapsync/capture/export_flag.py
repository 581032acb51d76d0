"""Transaction export by a flag column (`changes: {method: export_flag}`): orders, payments,
returns picked up where their header's flag is pending (`exported IS NULL OR exported = 0`),
delivered with their child rows as one unit, and marked at the source only after the destination
committed them (`export_writeback.py`).

- The flag is the state: a run reads every pending row beyond the seed's starting point (the
  `since` column's largest value when the seed ran), in key order, one short query per batch (no
  cursor is held open while the write-back updates the same table). No cursor moves.
- Every pending row is sent whatever the key ledger holds (`Batch.force`): a flag reset by a
  worker or by `mapsync reexport` is a request to send again, even unchanged.
- A row's version is its `version` column, or a hash of the exported columns and child rows; the
  write-back is conditional on it, so a row edited during the sync stays pending.
- `on_failure: retry`: a refused row keeps its pending flag; a run leaves it out while its open
  record error is of the same version (the daemon's `retry:` or `mapsync retry` sends it again;
  an edit sends it with the next run). `hold`: the flag becomes `failed_value` until a reset.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, errors, records
from mapsync.capture import export_writeback as wb
from mapsync.capture.base import Context, register
from mapsync.capture.export_base import CURSOR as CURSOR
from mapsync.capture.export_base import ExportBase
from mapsync.capture.export_inbox import InboxExportCapture
from mapsync.connectors.sql_source import SqlSource
from mapsync.ports import Capabilities, Cursors, Source
from mapsync.rest.destructive_source import DestructiveSource
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.state import values

log = logging.getLogger("mapsync.capture.export")


@register("export_flag")
class ExportFlagCapture(ExportBase):
    capabilities = Capabilities()

    def __new__(cls, source: Source, cfg: ExportFlagChanges, batch: int, ctx: Context) -> Any:
        """The method's one class in the registry builds the export of its source: from a SQL
        table (this class) or from an API's order export (`export_inbox.InboxExportCapture`)."""
        if isinstance(source, DestructiveSource):
            return InboxExportCapture(source, cfg, batch, ctx)
        return super().__new__(cls)

    def __init__(self, source: SqlSource, cfg: ExportFlagChanges, batch: int, ctx: Context) -> None:
        self.source = source
        self.cfg = cfg
        self.batch = batch
        self.ctx = ctx
        sync = ctx.sync
        if not isinstance(source, SqlSource) or ctx.config.from_.table is None:
            raise errors.ConfigError(
                f"sync {sync}: changes.method export_flag needs a SQL source with `from.table` "
                "(the flag is written back into that table)"
            )
        self.since = cfg.since or (source.key[0] if len(source.key) == 1 else None)
        if self.since is None and not ctx.config.seed.export_existing:
            raise errors.ConfigError(
                f"sync {sync}: changes.since: the key has {len(source.key)} columns: name the column "
                "that grows with each new transaction (an id or a creation time), or set "
                "`seed: {export_existing: true}`"
            )
        self.writer = wb.WriteBack(source, cfg, ctx, self._version)

    @staticmethod
    def version_column(cfg: ExportFlagChanges) -> str | None:
        return cfg.version

    @staticmethod
    def emits_deletes(cfg: ExportFlagChanges) -> bool:
        return False

    # ----------------------------------------------------------------- selection

    def _pending(self) -> sa.ColumnElement[bool]:
        flag = self.source.col(self.cfg.flag)
        return sa.or_(flag.is_(None), flag.in_(self.writer.pending))

    def start_seed(self) -> Cursors:
        """The starting point, recorded before the seed reads anything: the `since` column's
        largest value now (None: every pending row is in scope, `seed.export_existing`). A seed
        `--again` keeps the point the first seed recorded: moving it would pass over the
        transactions pending between the two."""
        if self.ctx.config.seed.export_existing or self.since is None:
            return {CURSOR: {"since": None}}
        kept = self.ctx.store.cursors(self.ctx.sync).get(CURSOR)
        if kept is not None:
            return {CURSOR: kept}
        col = self.source.col(self.since)
        try:
            with self.source.db.engine.connect() as conn:
                top = conn.execute(sa.select(sa.func.max(col)).select_from(self.source.relation)).scalar()
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(
                f"sync {self.ctx.sync}: reading the export's starting point", exc, "source"
            ) from None
        return {CURSOR: {"since": values.encode(top) if top is not None else None, "empty": top is None}}

    def seed_batches(
        self, source: Source, cursors: Cursors, batch: int, where: str | None, version_column: str | None
    ) -> Iterator[records.Batch]:
        """Exports nothing, unless `seed.export_existing` (every pending row) or `seed.where`
        (the pending rows it selects)."""
        if not self.ctx.config.seed.export_existing and where is None:
            return
        state = cursors.get("seed") or {}
        after = state.get("after")
        while rows := self._page([self._pending()], after, batch, where):
            after = list(self.source.key_of(rows[-1]))
            yield records.Batch(
                self._changes(rows), {"seed": {"status": "running", "after": after}}, read=True, force=True
            )
            if len(rows) < batch:
                return

    def _page(
        self, conditions: list[Any], after: list[Any] | None, batch: int, where: str | None = None
    ) -> list[records.Row]:
        """One page in key order after `after`, its query closed before the page is sent (the
        write-back updates this table while the run goes on: on SQLite an open read would keep
        it from committing)."""
        pages = self.source.stream(self.source.key, conditions, after, batch, extra_where=where)
        try:
            return next(iter(pages), [])
        finally:
            pages.close()  # type: ignore[attr-defined]

    def read(self, mode: str, cursors: Cursors) -> Iterator[records.Batch]:
        """Pending rows beyond the starting point, a page per batch, in key order."""
        conditions: list[Any] = [self._pending()]
        beyond = self.beyond(cursors)
        if beyond is not None:
            conditions.append(beyond)
        skip = self._unchanged_failures()
        after: list[Any] | None = None
        while True:
            rows = self._page(conditions, after, self.batch)
            if not rows:
                return
            after = list(self.source.key_of(rows[-1]))
            changes = [
                c
                for c in self._changes(rows)
                if skip.get(records.key_text(c.key)) != values.encode(c.version)
            ]
            if changes:
                yield records.Batch(changes, read=True, force=True)
            if len(rows) < self.batch:
                return

    def beyond(self, cursors: Cursors) -> Any:
        """Rows in scope of a run: beyond the seed's starting point (None: every row). An older
        row is sent by `mapsync reexport` only (a portal may well write `pending` into the status
        of every order it never exported: the history must not follow)."""
        start = (cursors.get(CURSOR) or {}) if self.since is not None else {}
        if start.get("since") is None:
            return None
        assert self.since is not None
        return self.source.col(self.since) > sa.literal(values.decode(start["since"]))

    def _unchanged_failures(self) -> dict[str, str | None]:
        """`on_failure: retry`: the open record errors by key text and the version they failed
        at: a row still at that version waits for a retry instead of failing again every run."""
        if self.cfg.on_failure != "retry":
            return {}
        return self.ctx.store.open_error_versions(self.ctx.sync)

    def by_key(
        self, source: Source, rows: list[records.Row], version_column: str | None
    ) -> list[records.Change]:
        """Rows read again by key (a retry; a reexport after its reset). A row held at
        `failed_value` (`on_failure: hold`) waits for a person's reset: a retry leaves it."""
        if self.cfg.on_failure == "hold" and rows:
            src = self.source
            try:
                held = {
                    src.key_of(r)
                    for r in src.rows_by_key(
                        [src.key_of(r) for r in rows],
                        select=[src.col(c) for c in src.key],
                        where=[src.col(self.cfg.flag) == self.writer.failed_value],
                    )
                }
            except sa.exc.DBAPIError as exc:
                raise db_errors.transient(f"sync {self.ctx.sync}: reading held rows", exc, "source") from None
            rows = [r for r in rows if src.key_of(r) not in held]
        return self._changes(rows)

    def changes_of(self, rows: list[records.Row]) -> list[records.Change]:
        """Changes of these rows, held ones too (`mapsync reexport`)."""
        return self._changes(rows)

    def _changes(self, rows: list[records.Row]) -> list[records.Change]:
        try:
            children = self.source.attach_children(rows) if self.source.children else {}
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(f"sync {self.ctx.sync}: reading child rows", exc, "source") from None
        out = []
        for row in rows:
            key = self.source.key_of(row)
            kids = children.get(key, {})
            out.append(records.Change("upsert", key, self._version(row, kids), row, kids))
        return out

    def _version(self, row: records.Row, children: dict[str, list[records.Row]]) -> Any:
        """The `version` column's value, else a hash of the exported columns and child rows."""
        if self.cfg.version is not None:
            return row[self.cfg.version]
        own = set(self.cfg.written_columns())
        return records.content_hash({c: v for c, v in row.items() if c not in own}, children)

    # ----------------------------------------------------------------- after delivery

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        self.writer.write_back(batch, result)

    def finish(self) -> Cursors:
        return {}

    def typed_key(self, text: tuple[str, ...]) -> records.Key:
        """A key from the command line in the types of the source's key columns."""
        info = self.source.info
        out: list[Any] = []
        for column, value in zip(self.source.key, text, strict=True):
            kind = info[column].python_type if column in info else None
            try:
                out.append(
                    int(value)
                    if kind is int
                    else decimal.Decimal(value)
                    if kind is decimal.Decimal
                    else value
                )
            except (ValueError, decimal.InvalidOperation):
                raise errors.UsageError(
                    f"sync {self.ctx.sync}: key {value!r} is no value of {column} ({info[column].type_name})"
                ) from None
        return tuple(out)

    def reexport_batches(self, keys: list[records.Key], batch: int) -> Iterator[records.Batch]:
        """The reset rows, read by key and sent at once (held ones too)."""
        for i in range(0, len(keys), batch):
            rows = self.source.read_keys(keys[i : i + batch])
            if rows:
                yield records.Batch(self.changes_of(rows), force=True)

    def find(self, keys: list[records.Key] | None) -> list[records.Key]:
        """`mapsync reexport`: the source's keys of these (None: of every failed transaction)."""
        return self.writer.find(keys)

    def reset(self, keys: list[records.Key]) -> None:
        """`mapsync reexport`: set these pending again."""
        self.writer.reset(keys)
