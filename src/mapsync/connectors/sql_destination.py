"""SqlDestination: idempotent upsert by natural key through each dialect's fastest correct path.

PostgreSQL: COPY into a session temp table, then one `INSERT … SELECT … ON CONFLICT` (small
batches: `executemany` of the same upsert); a seed into an empty table may COPY straight in.
MariaDB: multi-row `INSERT … ON DUPLICATE KEY UPDATE`. SQLite: `executemany` upsert.
A batch is first collapsed to the last change per key, so a key repeated in one batch, or a
delete followed by a re-insert, ends as the source ended.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from mapsync import crash, db_errors, deadline, delivery, errors, records
from mapsync.connectors import drift_form, sql_copy, sql_exists, sql_upsert, version_guard
from mapsync.connectors.sql import ColumnInfo, SqlDatabase
from mapsync.connectors.sql_keys import KeyProbe
from mapsync.db_timeouts import UNLIMITED_MYSQL, statement_limit
from mapsync.ports import Capabilities, DestinationBase
from mapsync.sheet import models

_T = TypeVar("_T")

COPY_THRESHOLD = 200
log = logging.getLogger("mapsync.destination")
_MYSQL_PERMANENT = {1044, 1045, 1054, 1142, 1143, 1146}
# a new row without a value for a NOT NULL column (`on_null: omit`); a CHECK constraint (MySQL 3819,
# MariaDB 4025) or a trigger's SIGNAL (1644) refusing the row: PyMySQL raises these as OperationalError
_MYSQL_RECORD = {1364, 1644, 3819, 4025}


class _Table:
    """A destination table, checked against the catalog."""

    def __init__(self, db: SqlDatabase, name: str, key: list[str], fields: list[str], where: str) -> None:
        self.db = db
        self.table = db.table(name, f"{where}.table")
        self.columns: dict[str, ColumnInfo] = db.columns(self.table)
        missing = [f for f in [*key, *fields] if f not in self.columns]
        if missing:
            raise errors.ConfigError(
                f"{where}: destination table {name!r} has no column(s) "
                + ", ".join(repr(m) for m in missing)
                + f" (it has: {', '.join(self.columns)})"
            )
        if not any(s == set(key) for s in db.unique_sets(self.table)):
            raise errors.ConfigError(
                f"{where}: destination table {name!r} needs a primary key or unique index on "
                f"({', '.join(key)}) for idempotent upserts"
            )
        self.key = key
        prep = db.engine.dialect.identifier_preparer
        self.qualified = prep.format_table(self.table)
        self.quote = prep.quote


def _child(db: SqlDatabase, sync: str, name: str, child: models.ChildSync) -> _Table:
    where = f"sync {sync}: children.{name}.to"
    return _Table(db, child.to.table, list(child.key.to), [*child.fields, *child.parent.to], where)


class SqlDestination(DestinationBase):
    """The destination side of one sync."""

    capabilities = Capabilities(
        deletes=True,
        children=True,
        read_back=True,
        key_probe=True,
        version_guard=True,
        bulk_write=True,
        columnar_write=True,
    )

    def __init__(
        self, db: SqlDatabase, sync_name: str, cfg: models.SyncConfig, secrets: tuple[str, ...] = ()
    ) -> None:
        self.db = db
        self.sync = sync_name
        self.secrets = secrets
        where = f"sync {sync_name}: to"
        fields = list(cfg.fields)
        if cfg.deletes.field and (cfg.deletes.policy in ("disable", "by_reason") or cfg.deletes.fallback):
            fields.append(cfg.deletes.field)
        # `deletes.fallback: disable`: a refused hard delete sets this field to this value instead
        self.fallback = (cfg.deletes.field, cfg.deletes.value) if cfg.deletes.fallback == "disable" else None
        self.fell_back = 0  # hard deletes written as `disable` instead, for the run report
        self.main = _Table(db, cfg.to.table, list(cfg.key.to), fields, where)
        # keys the destination's collation takes for one (see mapsync.collisions)
        self.key_probe = KeyProbe(db, self.main.table, self.main.key)
        self.children = {
            name: (_child(db, sync_name, name, c), list(c.parent.to)) for name, c in cfg.children.items()
        }
        # an export's `on_exists` is judged inside the write (sql_exists)
        export = cfg.changes if isinstance(cfg.changes, models.ExportFlagChanges) else None
        self.on_exists, self.started = (export.on_exists, export.started) if export else ("update", None)
        self.attempts = 0  # statements sent, for tests and benchmarks
        self.guard = version_guard.guard_column(cfg, self.main.columns)  # older never replaces newer
        # the drift pair of each upserted row, for the ledger (reconcile/drift.py compares it)
        self.drift_form = drift_form.for_sync(cfg, self.main.columns)

    @property
    def columns(self) -> dict[str, ColumnInfo]:
        return self.main.columns

    def child_columns(self) -> dict[str, dict[str, ColumnInfo]]:
        return {name: t.columns for name, (t, _) in self.children.items()}

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        return self.db.rows_by_key(self.main.table, self.main.key, keys)

    def is_empty(self) -> bool:
        with self.db.engine.connect() as conn:
            return (
                conn.execute(sa.select(sa.literal(1)).select_from(self.main.table).limit(1)).first() is None
            )

    # ----------------------------------------------------------------- writing

    def write(self, batch: Sequence[records.Mapped], *, fresh: bool = False) -> records.WriteResult:
        """Write a batch; rejections carry the database's message for the record(s) at fault."""
        result = delivery.deliver(batch, self._write_retrying, fresh=fresh)
        if self.fallback is not None and result.rejected:
            result = self._fall_back(batch, result)
        result = sql_exists.kept_apart(result) if self.on_exists == "skip" else result
        if self.drift_form is not None:
            self._set_drift(batch, result, self.drift_form)
        return result

    @staticmethod
    def _set_drift(
        batch: Sequence[records.Mapped], result: records.WriteResult, form: drift_form.DriftForm
    ) -> None:
        """Each confirmed upsert's (dkey, digest) of the row as written (the batch's last change of
        its key: what `deliver` wrote). None (the ledger's pair stays) for deletes and disables;
        `(dkey, records.UNCOMPARED)` for rows kept as the destination had them and rows holding
        a value the form cannot read (the old pair would describe a row the destination no
        longer holds; a drift check leaves them out and says so), `records.NO_DRIFT` (the pair
        cleared) when not even the key can be read. Never raises: the rows are written already."""
        latest = {r.key: r for r in batch}
        for i, d in enumerate(result.delivered):
            rec = latest.get(d.key)
            if d.op != "upsert" or rec is None or rec.op != "upsert":
                continue
            pair = form.of_written(rec.values) if d.note is None else None
            if pair is None:  # kept as the destination had it, or a value the form cannot read
                dkey = form.dkey(rec.values)
                pair = records.NO_DRIFT if dkey is None else (dkey, records.UNCOMPARED)
            # the constructor: dataclasses.replace costs as much as the digest
            result.delivered[i] = records.Delivered(d.key, d.version, d.hash, d.dest_id, d.op, d.note, pair)

    def _fall_back(self, batch: Sequence[records.Mapped], result: records.WriteResult) -> records.WriteResult:
        """Hard deletes the destination refused (a foreign key, no DELETE permission), written
        again as `disable`: the sync's `deletes.field` set to `deletes.value`."""
        assert self.fallback is not None
        field, value = self.fallback
        assert field is not None  # DeletesConfig requires it with `fallback: disable`
        latest = {r.dest_key: r for r in batch}  # what `deliver` wrote for each key: the last change
        refused = {
            r.key: r
            for r in latest.values()
            if r.op == "delete" and any(rej.key == r.key for rej in result.rejected)
        }
        if not refused:
            return result
        disable = [
            records.Mapped(
                "update",
                r.key,
                r.dest_key,
                r.version,
                {**dict(zip(self.main.key, r.dest_key, strict=True)), field: value},
                {},
                r.hash,
            )
            for r in refused.values()
        ]
        again = delivery.deliver(disable, self._write_retrying)
        done = {d.key for d in again.delivered}
        self.fell_back += len(done)
        if done:
            log.warning(
                "delete_fell_back",
                extra={
                    "action": "delete_fell_back",
                    "sync": self.sync,
                    "count": len(done),
                    "reasons": sorted({rej.message for rej in result.rejected if rej.key in done})[:3],
                },
            )
        rejected = [rej for rej in result.rejected if rej.key not in done]
        return records.WriteResult(result.delivered + again.delivered, rejected)

    def arrow_targets(self, cols: Sequence[str]) -> dict[str, Any] | None:
        """The Arrow type each written column is written from by `write_arrow` (None: this
        destination has no columnar write: child tables, `on_exists` of an export, a delete
        fallback, or a column type without a binary COPY form here; MariaDB and SQLite take
        the same types, though they are written as rows)."""
        if self.children or self.on_exists != "update":
            return None
        if self.fallback is not None or sql_upsert.lacks_required(self.main.table, list(cols)):
            return None
        from mapsync.connectors import arrow_copy  # pyarrow, pgpq: only a columnar run loads them

        return arrow_copy.targets(self.main.table, cols)

    def write_arrow(self, data: Any, *, fresh: bool = False) -> None:
        """Write an Arrow table of mapped rows (every column in `arrow_targets`, the destination
        key among them) in one transaction, retried as `write` retries. Raises `delivery.Refused`
        when the database refuses a row and `ValueError` when a value does not fit its column's
        binary form: the caller then writes these rows per record, which finds the row at fault.

        PostgreSQL: binary COPY from the columns (arrow_copy). MariaDB and SQLite: the per-record
        write's own upsert statement (`sql_upsert.upsert_stmt`), the rows handed to the driver's
        executemany (arrow_rows), with the values the per-record mapping gives (run_columnar
        checks that)."""
        from mapsync.connectors import arrow_copy, arrow_rows

        targets = self.arrow_targets(data.column_names)
        if targets is None:
            raise ValueError(f"sync {self.sync}: destination {self.db.name} has no columnar write")
        cols = list(data.column_names)
        guard = self.guard if self.guard in cols else None
        copy = self.db.dialect == "postgresql"
        rows = arrow_copy.cast(data, targets) if copy else data
        stmt = (
            None
            if copy
            else sql_upsert.upsert_stmt(self.db.dialect, self.main.table, self.main.key, cols, guard)
        )

        def write(fresh: bool) -> None:
            self.attempts += 1
            with self.db.engine.begin() as conn, self._statement_limit(conn):
                self._not_cut()
                if stmt is not None:
                    arrow_rows.execute(conn, stmt, self.main.table, rows)
                else:
                    with sql_copy.driver_errors(conn):
                        arrow_copy.pg_copy_arrow(
                            conn,
                            self.main.qualified,
                            self.main.quote,
                            self.main.key,
                            rows,
                            fresh=fresh,
                            guard=guard,
                        )
                crash.point("during_write")

        self._retrying(write, fresh)

    def _write_retrying(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        return self._retrying(lambda fresh: self._write(recs, fresh), fresh)

    def _not_cut(self) -> None:
        """Raise when the lease deadline cut this engine's connections: a write whose connection
        was opened again after the cut (the pool reconnects) must not go out under a lease
        another run may hold by now."""
        cut = deadline.aborted(self.db.engine)
        if cut:
            raise errors.TransientError(
                f"sync {self.sync}: destination {self.db.name}: {cut}; the write was cut off "
                "and is sent again by the next run"
            )

    def _retrying(self, write: Callable[[bool], _T], fresh: bool) -> _T:
        """`write(fresh)`, retried on a transient failure (after which it is no longer fresh: the
        first try may have committed); a record-level refusal raises `delivery.Refused`."""
        delay = 0.5
        for attempt in range(4):
            try:
                return write(fresh)
            except sa.exc.DBAPIError as exc:
                if deadline.aborted(self.db.engine):  # never retried: the lease may be another run's
                    self._not_cut()
                kind = self._classify(exc)
                if kind == "record":
                    raise delivery.Refused(db_errors.describe_error(exc, self.secrets)) from None
                if kind == "permanent":
                    what = f"sync {self.sync}: destination {self.db.name} refuses every write"
                    raise db_errors.permanent(what, exc, "destination", self.secrets) from None
                if attempt == 3:
                    what = f"sync {self.sync}: destination {self.db.name} unavailable after 4 attempts"
                    raise db_errors.transient(what, exc, "destination", self.secrets) from None
                time.sleep(delay)
                delay *= 2
                fresh = False
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _classify(self, exc: sa.exc.DBAPIError) -> str:
        if self.fallback is not None and self._delete_denied(exc):
            return "record"  # isolated, then written as `disable` (see _fall_back)
        if exc.connection_invalidated or db_errors.is_transient(exc):
            code = exc.orig.args[0] if self.db.dialect == "mysql" and exc.orig and exc.orig.args else None
            if code in _MYSQL_RECORD:
                return "record"
            return "permanent" if code in _MYSQL_PERMANENT else "transient"
        if isinstance(exc, sa.exc.ProgrammingError | sa.exc.NotSupportedError):
            if getattr(exc.orig, "sqlstate", None) == "P0001":  # a PostgreSQL trigger's RAISE EXCEPTION
                return "record"
            code = exc.orig.args[0] if self.db.dialect == "mysql" and exc.orig and exc.orig.args else None
            return "permanent" if code in _MYSQL_PERMANENT or self.db.dialect != "mysql" else "record"
        return "record"

    def _delete_denied(self, exc: sa.exc.DBAPIError) -> bool:
        """No permission to DELETE from the main table (the rest of the writes may work)."""
        statement = str(exc.statement or "").lstrip().upper()
        if not statement.startswith("DELETE FROM " + self.main.qualified.upper()):  # noqa: S608 (a prefix test, not SQL)
            return False
        orig = exc.orig
        if self.db.dialect == "mysql":
            return bool(orig and orig.args and orig.args[0] in (1142, 1143))
        return getattr(orig, "sqlstate", None) == "42501"

    def _write(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        """One transaction; returns the records `on_exists` turned down (skip: kept; fail: refused)."""
        self.attempts += 1
        with self.db.engine.begin() as conn, self._statement_limit(conn):
            self._not_cut()
            recs, turned = sql_exists.settle(
                conn, self.main.table, self.main.key, recs, self.on_exists, self.started
            )
            deletes = [r for r in recs if r.op == "delete"]
            upserts = [r for r in recs if r.op == "upsert"]
            for child, parent_cols in self.children.values():
                parents = [r.dest_key for r in recs if r.op != "update"]
                self._delete_children(conn, child, parent_cols, parents)
            if deletes:
                self._delete(conn, self.main, [r.dest_key for r in deletes])
            for rec in (r for r in recs if r.op == "update"):
                self._update(conn, self.main, rec)
            if upserts:
                self._upsert(conn, self.main, [r.values for r in upserts], fresh)
                for name, (child, _) in self.children.items():
                    rows = [row for r in upserts for row in r.children.get(name, [])]
                    if rows:
                        self._upsert(conn, child, rows, False)
            crash.point("during_write")
        return turned

    @contextlib.contextmanager
    def _statement_limit(self, conn: sa.Connection) -> Iterator[None]:
        """MariaDB: `max_statement_time` for the statements of this write only (a streamed source
        read on another connection of the pool must not inherit it). PostgreSQL has its
        `statement_timeout` for the session."""
        limit = statement_limit(self.db.dialect, self.db.timeouts)
        if limit is None:
            yield
            return
        conn.exec_driver_sql(limit)
        try:
            yield
        finally:  # on the raw connection: a failed transaction must not keep the limit either
            with contextlib.suppress(Exception), conn.connection.dbapi_connection.cursor() as cur:  # type: ignore[union-attr]
                cur.execute(UNLIMITED_MYSQL)

    def _delete(self, conn: sa.Connection, t: _Table, keys: list[records.Key]) -> None:
        conn.execute(
            sa.delete(t.table).where(sql_upsert.key_cond(t.table, t.key)),
            [{f"k_{i}": v for i, v in enumerate(k)} for k in keys],
        )

    def _delete_children(
        self, conn: sa.Connection, t: _Table, parent_cols: list[str], parents: list[records.Key]
    ) -> None:
        if not parents:
            return
        cond = sa.and_(*[t.table.c[c] == sa.bindparam(f"k_{i}") for i, c in enumerate(parent_cols)])
        conn.execute(
            sa.delete(t.table).where(cond), [{f"k_{i}": v for i, v in enumerate(k)} for k in parents]
        )

    def _update(self, conn: sa.Connection, t: _Table, rec: records.Mapped) -> None:
        values = {c: v for c, v in rec.values.items() if c not in t.key}
        params = {f"k_{i}": v for i, v in enumerate(rec.dest_key)}
        conn.execute(sa.update(t.table).where(sql_upsert.key_cond(t.table, t.key)).values(values), params)

    def _upsert(self, conn: sa.Connection, t: _Table, rows: list[records.Row], fresh: bool) -> None:
        groups: dict[tuple[str, ...], list[records.Row]] = {}
        for row in rows:  # `on_null: omit` leaves fields out: each set of columns is its own write
            groups.setdefault(tuple(row), []).append(row)
        if len(groups) > 1:
            for group in groups.values():
                self._upsert(conn, t, group, fresh)
            return
        cols = list(rows[0])
        guard = self.guard if t is self.main and self.guard in cols else None
        if sql_upsert.lacks_required(t.table, cols):
            sql_upsert.update_then_insert(conn, t.table, t.key, rows, guard)
            return
        if self.db.dialect == "postgresql" and (fresh or len(rows) >= COPY_THRESHOLD):
            with sql_copy.driver_errors(conn):
                sql_copy.pg_copy(conn, t.qualified, t.quote, t.key, cols, rows, fresh=fresh, guard=guard)
            return
        conn.execute(sql_upsert.upsert_stmt(self.db.dialect, t.table, t.key, cols, guard), rows)
