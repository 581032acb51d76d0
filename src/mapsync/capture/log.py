"""Database change-log capture (`changes: {method: log}`): PostgreSQL logical decoding through a
replication slot (`pg_logical`), MariaDB/MySQL row binlog (`binlog`).

The position moves only after delivery. Each batch is whole source transactions read from the
committed position and carries the position after its last transaction; the engine commits that
cursor after the destination confirmed. Only then, at the start of the next read (of this run or
the next), is the server told (the PostgreSQL slot is advanced to the committed position; the
binlog is simply read from it). A kill -9 anywhere therefore re-sends at most the batch whose
cursor was not committed and never skips a change.

Inserts and updates become upserts of the row *as it is now*, re-read by key (with its children,
through the sync's `filter`); a row gone by then is left to its own later delete. Deletes carry
the old image from the log. An update that changes the key is a delete of the old key and an
upsert of the new one. A change to a child table re-sends its parent.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from mapsync import errors, records
from mapsync.capture.base import CaptureBase, Context, register, to_changes
from mapsync.capture.binlog import BinlogReader
from mapsync.capture.log_types import RowChange, Txn
from mapsync.capture.pg_logical import PgLog
from mapsync.columns import ColumnInfo
from mapsync.connectors.sql_source import SqlSource
from mapsync.ports import Capabilities
from mapsync.sheet.log_models import LogChanges

log = logging.getLogger("mapsync.capture.log")
MAIN = ""  # the logical name of the sync's own table among the tables a reader watches


class Reader(Protocol):
    """One database's change log (see pg_logical.PgLog, binlog.BinlogReader)."""

    def seed_position(self, existing: dict[str, Any] | None) -> dict[str, Any]: ...

    def check(self, position: dict[str, Any]) -> None: ...

    def end(self) -> Any: ...

    def confirm(self, position: dict[str, Any]) -> None: ...

    def fetch(self, position: dict[str, Any], limit: int, end: Any) -> list[Txn]: ...

    def describe(self, position: dict[str, Any]) -> str: ...


def watched_tables(source: Any, cfg: Any, sync: str) -> dict[str, sa.Table]:
    """MAIN → the sync's source table, child name → child table (reflected, so they exist)."""
    if cfg.from_.table is None:
        raise errors.ConfigError(
            f"sync {sync}: `changes: {{method: log}}` needs `from.table` (a log records tables, not queries)"
        )
    out = {MAIN: source.db.table(cfg.from_.table, f"sync {sync}: from.table")}
    for name, child in cfg.children.items():
        if child.from_.table is not None:
            out[name] = source.db.table(child.from_.table, f"sync {sync}: children.{name}.from.table")
    return out


@register("log")
class LogCapture(CaptureBase):
    capabilities = Capabilities(emits_deletes=True, columnar_read=True)

    def __init__(self, source: Any, cfg: LogChanges, batch: int, ctx: Context | None = None) -> None:
        if ctx is None:
            raise errors.ConfigError("`changes: {method: log}` needs the engine's context")
        self.source = source
        self.cfg = cfg
        self.batch = batch
        self.ctx = ctx
        self.sync = ctx.sync
        dialect = source.db.dialect if isinstance(source, SqlSource) else None
        tables = watched_tables(source, ctx.config, ctx.sync) if dialect in ("postgresql", "mysql") else {}
        self.reader: Reader
        if dialect == "postgresql":
            self.reader = PgLog(source.db, cfg, ctx.sync, tables)
        elif dialect == "mysql":
            self.reader = BinlogReader(source.db, cfg, ctx.sync, tables)
        else:
            raise errors.ConfigError(
                f"sync {ctx.sync}: the source ({dialect or 'this connector'}) has no change log: "
                "use `changes: {method: queue}` or `{method: watermark}`"
            )
        self.parents = {
            name: list(child.parent.from_) for name, child in ctx.config.children.items() if name in tables
        }

    @staticmethod
    def version_column(cfg: LogChanges) -> None:
        return None

    @staticmethod
    def emits_deletes(cfg: LogChanges) -> bool:
        return True

    def start_seed(self) -> dict[str, Any]:
        return {"log": self.reader.seed_position(self.ctx.store.cursor(self.sync, "log"))}

    def finish(self) -> dict[str, Any]:
        return {}  # every batch carried its own position

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        return None  # the server learns the position from the committed cursor, next read

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        # every mode reads the log: `--overlap` has no window to re-read here
        position = cursors.get("log")
        if not position:
            raise errors.StateError(f"sync {self.sync} has no change-log position: run `mapsync seed` first")
        self.reader.check(position)
        end = self.reader.end()
        while True:
            # the engine committed the previous batch before asking for the next one: confirm
            # exactly what the state store holds, never more
            committed = self.ctx.store.cursor(self.sync, "log") or position
            self.reader.confirm(committed)
            txns = self.reader.fetch(committed, self.batch, end)
            if not txns:
                return
            after = txns[-1].position
            changes = self.changes(txns, self.reader.describe(after))
            chunks = [changes[i : i + self.batch] for i in range(0, len(changes), self.batch)] or [[]]
            for n, chunk in enumerate(chunks):
                # a transaction larger than a batch: only its last part moves the position
                yield records.Batch(chunk, {"log": after} if n == len(chunks) - 1 else None)

    # ----------------------------------------------------------------- changes

    def changes(self, txns: Sequence[Txn], version: str) -> list[records.Change]:
        """The net effect of these transactions, one change per key, in order of last change."""
        net: dict[str, tuple[str, records.Key, dict[str, Any]]] = {}

        def put(op: str, key: records.Key, image: dict[str, Any], *, weak: bool = False) -> None:
            text = records.key_text(key)
            if weak and net.get(text, ("",))[0] == "delete":
                return  # a child change after its parent's delete does not revive the parent
            net.pop(text, None)
            net[text] = (op, key, image)

        for txn in txns:
            for rc in txn.changes:
                if rc.table == MAIN:
                    self._main(rc, put)
                else:
                    for image in (rc.old, rc.new):
                        key = self._parent_key(rc.table, image)
                        if key is not None:
                            put("upsert", key, {}, weak=True)
        upserts = [key for op, key, _ in net.values() if op == "upsert"]
        current = {records.key_text(c.key): c for c in to_changes(self.source, self.current(upserts), None)}
        out: list[records.Change] = []
        for text, (op, key, image) in net.items():
            if op == "delete":
                out.append(records.Change("delete", key, version, image))
            elif text in current:
                c = current[text]
                out.append(records.Change("upsert", c.key, version, c.data, c.children))
        return out

    def _main(self, rc: RowChange, put: Any) -> None:
        where = f"sync {self.sync}"
        if rc.op == "D":
            old = self._image(rc.old)
            put("delete", self._key(old, where, "delete"), old)
            return
        new = self._image(rc.new)
        key = self._key(new, where, "insert/update")
        if rc.op == "U" and rc.old:
            old = self._image(rc.old)
            if all(k in old for k in self.source.key):
                old_key = self._key(old, where, "update")
                if records.key_text(old_key) != records.key_text(key):
                    put("delete", old_key, old)
        put("upsert", key, new)

    def _image(self, row: dict[str, Any] | None) -> dict[str, Any]:
        info: dict[str, ColumnInfo] = self.source.info
        return {c: coerce(v, info.get(c)) for c, v in (row or {}).items() if c in info}

    def _key(self, row: dict[str, Any], where: str, what: str) -> records.Key:
        missing = [k for k in self.source.key if k not in row]
        if missing:
            raise errors.PermanentError(
                f"{where}: the change log's {what} carries no key column(s) {', '.join(missing)}: "
                "run `mapsync changelog install` (PostgreSQL: it sets REPLICA IDENTITY FULL)",
                failure_class="source",
            )
        return self.source.key_of(row)  # type: ignore[no-any-return]

    def _parent_key(self, child: str, row: dict[str, Any] | None) -> records.Key | None:
        cols = self.parents.get(child)
        if not row or not cols or any(c not in row for c in cols):
            return None
        info: dict[str, ColumnInfo] = self.source.info
        return tuple(coerce(row[c], info.get(k)) for c, k in zip(cols, self.source.key, strict=False))

    def current(self, keys: list[records.Key]) -> list[records.Row]:
        """The rows of these keys as they are now, through the sync's `filter`."""
        src = self.source
        where = [sa.text(f"({src.filter})")] if src.filter else []
        try:
            out = list(src.rows_by_key(keys, where=where))
        except sa.exc.DBAPIError as exc:  # names only the driver's error class, not its text
            raise errors.TransientError(
                f"sync {self.sync}: reading changed rows failed: {type(exc.orig).__name__}",
                failure_class="source",
            ) from None
        return out


def coerce(value: Any, info: ColumnInfo | None) -> Any:
    """A value from the log (text, JSON or binlog types) as the source driver would return it, so
    keys match the key ledger; left as it is when it does not convert."""
    if value is None or info is None or info.python_type is None:
        return value
    kind = info.python_type
    try:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        if kind is bool:
            return str(value).lower() in ("t", "true", "1")
        if kind is int:
            return int(value)
        if kind is decimal.Decimal:
            return decimal.Decimal(str(value))
        if kind is float:
            return float(value)
        if kind is dt.datetime:
            return dt.datetime.fromisoformat(str(value))
        if kind is dt.date:
            return dt.date.fromisoformat(str(value))
        if kind is uuid.UUID:
            return uuid.UUID(str(value))
        if kind is str:
            return value.decode() if isinstance(value, bytes) else str(value)
        if kind is bytes and isinstance(value, str) and value.startswith("\\x"):
            return bytes.fromhex(value[2:])
    except (ValueError, TypeError, ArithmeticError):
        return value
    return value
