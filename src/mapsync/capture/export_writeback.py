"""The status write-back of `changes: {method: export_flag}`, and the reset of `mapsync reexport`.

Runs after the destination committed a batch (the capture's `acknowledge`), in two short
transactions on the source: first the delivered rows (flag `done`, status `success` or
`skipped`, error cleared or `already imported`, the destination's document number), then the
refused ones (status `failed`, the message; with `on_failure: hold` the flag `failed_value`).
Each row is locked and compared with the version that was exported before it is written: a row
edited meanwhile is left pending, so the next run exports it again. The write-back sets the
columns that select work for other captures (`touch`, `version`, MariaDB's `ON UPDATE` columns)
to themselves, so it moves no last-modified time; the queue triggers ignore it (triggers.py).

A crash between the two transactions, or before the first, leaves rows pending: the next run
sends them again and the destination's upsert by natural key (or `on_exists`) absorbs it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import crash, db_errors, errors, records
from mapsync import keys as key_forms
from mapsync.capture import queue_table as qt
from mapsync.capture.base import Context
from mapsync.connectors.sql_source import SqlSource
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.state import values

log = logging.getLogger("mapsync.capture.export")
ALREADY = "already imported"
_TEXT_CAP = 4000  # an error written into a column of unlimited length
Versioner = Callable[[records.Row, dict[str, list[records.Row]]], Any]


class WriteBack:
    def __init__(self, source: SqlSource, cfg: ExportFlagChanges, ctx: Context, version: Versioner) -> None:
        self.source, self.cfg, self.ctx, self.version = source, cfg, ctx, version
        assert ctx.config.from_.table is not None
        where = f"sync {ctx.sync}: from.table"
        self.table = source.db.table(ctx.config.from_.table, where)
        info = source.db.columns(self.table)
        wanted = {
            "changes.flag": cfg.flag,
            "changes.status": cfg.status,
            "changes.error": cfg.error,
            "changes.version": cfg.version,
            "changes.since": cfg.since,
            "changes.created": cfg.created,
            "changes.document.to": cfg.document.to if cfg.document else None,
            **{f"changes.touch[{i}]": c for i, c in enumerate(cfg.touch)},
        }
        for field, col in wanted.items():
            if col is not None and col not in info:
                raise errors.ConfigError(
                    f"sync {ctx.sync}: {field}: the source table {ctx.config.from_.table!r} has no "
                    f"column {col!r} (it has: {', '.join(info)})"
                )
        self.caps = {c: (info[c].length or _TEXT_CAP) for c in (cfg.status, cfg.error) if c is not None}
        words = cfg.statuses.model_dump().values()
        if cfg.status is not None and self.caps[cfg.status] < max(len(w) for w in words):
            raise errors.ConfigError(
                f"sync {ctx.sync}: changes.status: column {cfg.status!r} holds {self.caps[cfg.status]} "
                f"characters, too few for the status {max(words, key=len)!r} (`changes.statuses`): a "
                "word cut short would never be read back as that status"
            )
        self.touch = list(
            dict.fromkeys(
                [*cfg.touch, *([cfg.version] if cfg.version else []), *_on_update(source, self.table)]
            )
        )
        self.key = source.key
        # the flag's values in the column's type: 0/1 on a boolean column mean false/true
        boolean = info[cfg.flag].python_type is bool
        self.pending = [as_flag(v, boolean) for v in cfg.pending]
        self.done = as_flag(cfg.done, boolean)
        self.failed_value = as_flag(cfg.failed_value, boolean)
        if boolean and cfg.on_failure == "hold":
            raise errors.ConfigError(
                f"sync {ctx.sync}: changes.on_failure: `hold` needs a flag value of its own "
                f"(`failed_value`), and the boolean column {cfg.flag!r} has none left: use "
                "`on_failure: retry`, or an integer or text flag"
            )

    # ----------------------------------------------------------------- after delivery

    def write_back(self, batch: records.Batch, result: records.WriteResult) -> None:
        changes = {records.key_text(c.key): c for c in batch.changes}
        refused: dict[str, str] = {}
        for r in result.rejected:
            refused.setdefault(records.key_text(r.key), r.message)
        delivered = {records.key_text(d.key): d for d in result.delivered}
        # only what the destination confirmed (a change neither confirmed nor refused stays pending)
        done = {k: c for k, c in changes.items() if k in delivered and k not in refused}
        numbers = self._documents([delivered[k] for k in done if k in delivered])
        edited = 0
        if done:
            edited += self._write(done, lambda k: self._success(delivered.get(k), numbers.get(k)))
        crash.point("during_writeback")  # the delivered rows are marked, the refused ones not yet
        failed = {k: c for k, c in changes.items() if k in refused}
        if failed:
            edited += self._write(failed, lambda k: self._failure(refused[k]))
        if edited:  # edited or deleted at the source since the read: not marked, sent again
            log.info(
                "export_changed_during_sync",
                extra={"action": "export_changed_during_sync", "sync": self.ctx.sync, "count": edited},
            )

    def _success(self, d: records.Delivered | None, number: Any) -> dict[str, Any]:
        cfg = self.cfg
        kept = d is not None and d.note == records.KEPT
        out: dict[str, Any] = {cfg.flag: self.done}
        if cfg.status:
            out[cfg.status] = self._cap(cfg.status, cfg.statuses.skipped if kept else cfg.statuses.success)
        if cfg.error:
            out[cfg.error] = (
                self._cap(cfg.error, f"{ALREADY} (on_exists: skip): left alone") if kept else None
            )
        if cfg.document is not None and number is not None:
            out[cfg.document.to] = number
        return out

    def _failure(self, message: str) -> dict[str, Any]:
        cfg = self.cfg
        out: dict[str, Any] = {}
        if cfg.on_failure == "hold":
            out[cfg.flag] = self.failed_value
        if cfg.status:
            out[cfg.status] = self._cap(cfg.status, cfg.statuses.failed)
        if cfg.error:
            out[cfg.error] = self._cap(cfg.error, message)
        return out

    def _cap(self, column: str, text: str) -> str:
        cap = self.caps[column]
        return text if len(text) <= cap else text[: max(cap - 1, 0)] + "…"

    def _write(self, rows: dict[str, records.Change], assign: Callable[[str], dict[str, Any]]) -> int:
        """Lock the rows, write `assign(key)` where the row is still the exported version;
        returns how many were edited meanwhile (left alone)."""
        what = f"sync {self.ctx.sync}: writing the export status back"
        try:
            with _locked(self.source.db.engine) as conn:
                current = self._current(conn, [c.key for c in rows.values()])
                edited = 0
                # one statement per set of columns written (every delivered row shares one), run
                # for all its rows at once
                shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for text, change in rows.items():
                    now = current.get(text)
                    if now is None or values.encode(now) != values.encode(change.version):
                        edited += 1
                        continue
                    setting = assign(text)
                    if setting:
                        params = {f"k_{i}": v for i, v in enumerate(change.key)}
                        params.update({f"v_{n}": v for n, v in enumerate(setting.values())})
                        shapes.setdefault(tuple(setting), []).append(params)
                for columns, params_list in shapes.items():
                    conn.execute(self._update(columns), params_list)
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(what, exc, "source") from None
        return edited

    def _current(self, conn: sa.Connection, keys: list[records.Key]) -> dict[str, Any]:
        """The version of each of these rows as it is now (rows locked until the commit)."""
        src = self.source
        rows = list(src.rows_by_key(keys, locked=conn))
        # the child rows too, read and locked in this transaction (a line edited meanwhile changes the hash)
        children = src.attach_children(rows, conn) if src.children and self.cfg.version is None else {}
        return {
            records.key_text(src.key_of(r)): self.version(r, children.get(src.key_of(r), {})) for r in rows
        }

    def _update(self, columns: tuple[str, ...]) -> sa.Update:
        """UPDATE of these columns (bound `v_<n>`) and `touch` set to themselves, by key (`k_<i>`)."""
        setting: dict[str, Any] = {c: sa.bindparam(f"v_{n}") for n, c in enumerate(columns)}
        setting.update({c: self.table.c[c] for c in self.touch if c not in setting})
        where = [self.table.c[c] == sa.bindparam(f"k_{i}") for i, c in enumerate(self.key)]
        return sa.update(self.table).where(*where).values(setting)

    def _key_is(self, key: records.Key) -> list[sa.ColumnElement[bool]]:
        return [self.table.c[c] == v for c, v in zip(self.key, key, strict=True)]

    def _documents(self, delivered: list[records.Delivered]) -> dict[str, Any]:
        return documents(self.ctx, self.cfg, delivered)

    # ----------------------------------------------------------------- reexport

    def find(self, keys: Sequence[records.Key] | None) -> list[records.Key]:
        """`mapsync reexport`: the source's keys of these rows (None: every failed one: status
        `failed`, flag `failed_value` under `hold`, or an open record error), within the sync's
        `filter`, as the source spells them."""
        cfg = self.cfg
        key_cols = [self.table.c[c] for c in self.key]
        scope = [sa.text(f"({self.ctx.config.filter})")] if self.ctx.config.filter else []
        try:
            with self.source.db.engine.connect() as conn:

                def rows(*where: Any) -> list[records.Key]:
                    return [tuple(r) for r in conn.execute(sa.select(*key_cols).where(*where, *scope))]

                found: list[records.Key] = []
                if keys is None:
                    failed: list[Any] = []
                    if cfg.status:
                        failed.append(self.table.c[cfg.status] == cfg.statuses.failed)
                    if cfg.on_failure == "hold":
                        failed.append(self.table.c[cfg.flag] == self.failed_value)
                    found = rows(sa.or_(*failed)) if failed else []
                    # and every transaction with an open record error (no status column, or a
                    # crash between the write-back and the state commit)
                    keys = self.ctx.store.open_error_keys(self.ctx.sync)
                seen = {records.key_text(k) for k in found}
                for key in keys:
                    for row in rows(*self._key_is(key)):
                        if records.key_text(row) not in seen:
                            found.append(row)
                            seen.add(records.key_text(row))
                return found
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(
                f"sync {self.ctx.sync}: reading what to export again", exc, "source"
            ) from None

    def reset(self, keys: Sequence[records.Key]) -> None:
        """Set these rows pending again: the flag, status `pending`, the error cleared."""
        cfg = self.cfg
        if not keys:
            return
        setting: dict[str, Any] = {cfg.flag: self.pending[0]}
        if cfg.status:
            setting[cfg.status] = self._cap(cfg.status, cfg.statuses.pending)
        if cfg.error:
            setting[cfg.error] = None
        shared = {f"v_{n}": v for n, v in enumerate(setting.values())}
        try:
            with _locked(self.source.db.engine) as conn:
                conn.execute(
                    self._update(tuple(setting)),
                    [{**shared, **{f"k_{i}": v for i, v in enumerate(key)}} for key in keys],
                )
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(
                f"sync {self.ctx.sync}: resetting the export flag", exc, "source"
            ) from None


@contextlib.contextmanager
def _locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction whose reads lock: `BEGIN IMMEDIATE` on SQLite, FOR UPDATE elsewhere."""
    conn = qt.begin_claim(engine)
    try:
        yield conn
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        conn.close()


def _on_update(source: SqlSource, table: sa.Table) -> list[str]:
    """MariaDB/MySQL columns with `ON UPDATE CURRENT_TIMESTAMP`: the write-back sets them to
    themselves so it does not move them."""
    if source.db.dialect != "mysql":
        return []
    query = sa.text(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table "
        "AND LOWER(EXTRA) LIKE '%on update%'"
    )
    with source.db.engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(query, {"schema": table.schema, "table": table.name})]


def documents(ctx: Context, cfg: ExportFlagChanges, delivered: list[records.Delivered]) -> dict[str, Any]:
    """The destination's document number of each delivered record, by source key text."""
    doc, dest = cfg.document, ctx.destination
    if doc is None or dest is None or not delivered:
        return {}
    by_dest = {d.dest_id: records.key_text(d.key) for d in delivered if d.dest_id}
    keys = [key_forms.from_text(t) for t in by_dest]
    found: dict[str, Any] = {}
    to = list(ctx.config.key.to)
    for row in dest.read_keys(keys):
        text = records.key_text(tuple(row[c] for c in to))
        if text in by_dest:
            found[by_dest[text]] = row.get(doc.from_)
    return found


def as_flag(value: Any, boolean: bool) -> Any:
    """A flag value of the sheet in the column's type (0/1 → False/True on a boolean column)."""
    return bool(value) if boolean and isinstance(value, int) else value
