"""MariaDB/MySQL row-based binlog through `mysql-replication` (pymysqlreplication).

mapsync connects as a replica (`server_id`), reads from the committed (file, position) without
blocking, and stops at the position the server reported when the read began. A position is
only ever the end of a complete transaction (an Xid event, or a statement outside any
transaction), so a resumed read never starts inside one. Nothing is created on the server.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, errors
from mapsync.capture.log_types import RowChange, Txn
from mapsync.connectors.sql import SqlDatabase
from mapsync.sheet.log_models import LogChanges

# its advice to set binlog_row_metadata=FULL is in docs/capture.md, not on every read's stderr
logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)
REQUIRED = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL"}


def file_no(name: str) -> int:
    return int(name.rsplit(".", 1)[-1])


def at_or_after(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (file_no(a["file"]), int(a["pos"])) >= (file_no(b["file"]), int(b["pos"]))


class BinlogReader:
    """The binlog of one sync's source database, read as replica `server_id`."""

    def __init__(self, db: SqlDatabase, cfg: LogChanges, sync: str, tables: dict[str, sa.Table]) -> None:
        self.db = db
        self.sync = sync
        self.server_id = cfg.replica_id(sync)
        default = db.url.database or ""
        # (database, table) → logical name; a sheet may name `otherdb.table`
        self.names = {(table.schema or default, table.name): name for name, table in tables.items()}

    def _sql(self, stmt: str) -> list[Any]:
        try:
            with self.db.engine.connect() as conn:
                return list(conn.execute(sa.text(stmt)).all())
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(f"sync {self.sync}: binlog", exc, "source") from None

    def settings(self) -> dict[str, str]:
        names = ", ".join(f"'{n}'" for n in (*REQUIRED, "server_id"))
        rows = self._sql(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
        return {str(k).lower(): str(v).upper() for k, v in rows}

    def problems(self) -> list[str]:
        """What the server lacks for the binlog method (empty: ready)."""
        have = self.settings()
        found = [
            f"{name} is {have.get(name, 'unset')}, needs {want}"
            for name, want in REQUIRED.items()
            if have.get(name) != want
        ]
        if have.get("server_id") == str(self.server_id):
            found.append(f"the server's server_id is {self.server_id}: set `changes.server_id` to another")
        return found

    def current(self) -> dict[str, Any]:
        for stmt in ("SHOW BINLOG STATUS", "SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"):
            try:
                with self.db.engine.connect() as conn:
                    row = conn.execute(sa.text(stmt)).first()
            except sa.exc.DBAPIError:  # not this server's statement: try the next name
                continue
            if row is not None:
                return {"file": str(row[0]), "pos": int(row[1])}
        raise errors.ConfigError(
            f"sync {self.sync}: the server reports no binlog position: it needs log_bin=ON and the "
            "BINLOG MONITOR (MariaDB) or REPLICATION CLIENT privilege"
        )

    def files(self) -> set[str]:
        return {str(r[0]) for r in self._sql("SHOW BINARY LOGS")}

    def seed_position(self, existing: dict[str, Any] | None) -> dict[str, Any]:
        """The existing cursor when its file is still there (a re-seed replays from it), else the
        binlog position of a consistent snapshot (MariaDB), else the server's current one."""
        self._ready()
        if existing and existing.get("file") in self.files():
            return existing
        rows: dict[str, Any] = {}
        try:
            with self.db.engine.connect() as conn:
                conn.execute(sa.text("START TRANSACTION WITH CONSISTENT SNAPSHOT"))
                rows = dict(conn.execute(sa.text("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")).all())
                conn.rollback()
        except sa.exc.DBAPIError:  # no consistent snapshot (MySQL): the current position below
            pass
        if rows.get("Binlog_snapshot_file"):
            return {"file": str(rows["Binlog_snapshot_file"]), "pos": int(rows["Binlog_snapshot_position"])}
        return self.current()

    def _ready(self) -> None:
        found = self.problems()
        if found:
            raise errors.ConfigError(
                f"sync {self.sync}: the binlog cannot be read: {'; '.join(found)} "
                "(see `mapsync changelog status`)"
            )

    def check(self, position: dict[str, Any]) -> None:
        self._ready()
        if position["file"] not in self.files():
            raise errors.StateError(
                f"sync {self.sync}: binlog file {position['file']} was purged before mapsync read it: "
                "changes are lost; re-seed with `mapsync seed --again` (and keep binlogs longer: "
                "binlog_expire_logs_seconds)"
            )

    def end(self) -> dict[str, Any]:
        return self.current()

    def confirm(self, position: dict[str, Any]) -> None:
        return None  # the next read starts at the committed position; the server keeps no state

    def describe(self, position: dict[str, Any]) -> str:
        return f"{position['file']}:{position['pos']}"

    def fetch(self, position: dict[str, Any], limit: int, end: dict[str, Any]) -> list[Txn]:
        """Whole transactions from `position`, until `limit` row changes or `end`."""
        if at_or_after(position, end):
            return []
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import QueryEvent, XidEvent
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        url = self.db.url
        settings = {
            "host": url.host or "127.0.0.1",
            "port": url.port or 3306,
            "user": url.username or "",
            "passwd": url.password or "",
        }
        stream = BinLogStreamReader(
            connection_settings=settings,
            server_id=self.server_id,
            resume_stream=True,
            log_file=position["file"],
            log_pos=int(position["pos"]),
            blocking=False,
            # the library's MariaDB mode ignores log_file/log_pos (it dumps from the first binlog
            # or by GTID); the classic COM_BINLOG_DUMP by file and position works on MariaDB too
            is_mariadb=False,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent],
            only_schemas=sorted({schema for schema, _ in self.names}),
            only_tables=sorted({table for _, table in self.names}),
            use_column_name_cache=True,
            enable_logging=False,
        )
        txns: list[Txn] = []
        current: list[RowChange] = []
        rows = 0
        try:
            for event in stream:
                if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                    name = self.names.get((event.schema, event.table))
                    if name is None:
                        continue
                    for row in event.rows:
                        if isinstance(event, WriteRowsEvent):
                            current.append(RowChange(name, "I", row["values"], None))
                        elif isinstance(event, UpdateRowsEvent):
                            current.append(RowChange(name, "U", row["after_values"], row["before_values"]))
                        else:
                            current.append(RowChange(name, "D", None, row["values"]))
                    continue
                if isinstance(event, QueryEvent):
                    query = event.query.strip().upper() if isinstance(event.query, str) else ""
                    if query == "BEGIN" or (current and query != "COMMIT"):
                        continue
                position = {"file": stream.log_file, "pos": int(stream.log_pos)}
                txns.append(Txn(current, position))
                rows += len(current)
                current = []
                if rows >= limit or at_or_after(position, end):
                    break
        except Exception as exc:  # the library raises pymysql and its own errors
            raise errors.TransientError(
                f"sync {self.sync}: reading the binlog failed: {type(exc).__name__}: {exc}",
                failure_class="source",
            ) from None
        finally:
            stream.close()
        return txns
