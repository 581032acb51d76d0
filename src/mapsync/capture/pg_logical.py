"""PostgreSQL logical decoding through the SQL slot functions (psycopg 3 has no replication
protocol): `pg_logical_slot_peek_changes` reads without consuming, `pg_replication_slot_advance`
confirms, and only ever to a *committed* cursor, which is always the end of a commit record.

Output plugins: `wal2json` (format-version 2, one JSON object per row, filtered to the watched
tables by the server) or `test_decoding` (text, every table; mapsync filters). Old keys and the
old image of deletes come from the table's REPLICA IDENTITY; `mapsync changelog install` sets it
to FULL so a delete carries the whole old row and a key change is always visible.
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from mapsync import db_errors, errors
from mapsync.capture.log_types import RowChange, Txn
from mapsync.connectors.sql import SqlDatabase
from mapsync.db_timeouts import UNLIMITED_PG_LOCAL
from mapsync.sheet.log_models import LogChanges

SEED_WAIT = 30.0  # seconds the seed waits for transactions open when it starts (then: slot position)
UNCHANGED = object()  # test_decoding's `unchanged-toast-datum`: the value is not in the log
# transactions that other databases' sessions hold (they cannot touch our tables); 32-bit xids
_ELSEWHERE = (
    "SELECT CAST(CAST(backend_xid AS text) AS bigint) FROM pg_stat_activity "
    "WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL"
)
_STILL_RUNNING = (
    "SELECT x FROM unnest(CAST(:x AS text[])) AS t(x) WHERE pg_xact_status(CAST(x AS xid8)) = 'in progress'"
)


def lsn_int(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


class PgLog:
    """The replication slot of one sync."""

    def __init__(self, db: SqlDatabase, cfg: LogChanges, sync: str, tables: dict[str, sa.Table]) -> None:
        self.db = db
        self.sync = sync
        self.slot = cfg.slot_name(sync)
        self.plugin = cfg.plugin
        self.by_pair: dict[tuple[str, str], str] = {}  # (schema, table) → logical name
        self.by_text: dict[str, str] = {}  # test_decoding's quoted "schema.table" → logical name
        for name, table in tables.items():
            schema, quoted = self._sql(
                "SELECT s, format('%I.%I', s, CAST(:t AS text)) "
                "FROM (SELECT CAST(coalesce(:s, current_schema()) AS text) AS s) x",
                {"s": table.schema, "t": table.name},
            )[0]
            self.by_pair[(schema, table.name)] = name
            self.by_text[quoted] = name

    def _connect(self) -> Any:
        try:
            return self.db.engine.connect()
        except sa.exc.OperationalError as exc:
            raise db_errors.transient(f"connection {self.db.name}: cannot connect", exc, "source") from None

    def _sql(self, stmt: str, params: dict[str, Any] | None = None, *, commit: bool = False) -> list[Any]:
        try:
            with self._connect() as conn:
                conn.execute(sa.text(UNLIMITED_PG_LOCAL))  # a change-log stream: no statement timeout
                rows = list(conn.execute(sa.text(stmt), params or {}).all())
                if commit:
                    conn.commit()
                return rows
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(f"sync {self.sync}: slot {self.slot}", exc, "source") from None

    # ----------------------------------------------------------------- the slot

    def info(self) -> dict[str, Any] | None:
        rows = self._sql(
            "SELECT plugin, CAST(confirmed_flush_lsn AS text), CAST(restart_lsn AS text), "
            "CAST(wal_status AS text), active FROM pg_replication_slots "
            "WHERE slot_name = :s AND database = current_database()",
            {"s": self.slot},
        )
        if not rows:
            return None
        plugin, confirmed, restart, wal_status, active = rows[0]
        return {
            "plugin": plugin,
            "confirmed": confirmed,
            "restart": restart,
            "wal_status": wal_status,
            "active": active,
        }

    def _slot(self) -> dict[str, Any]:
        info = self.info()
        if info is None:
            raise errors.StateError(
                f"sync {self.sync}: replication slot {self.slot} does not exist: run "
                "`mapsync changelog install SHEET` (if it existed before, it was dropped and the "
                "changes since are lost: re-seed with `mapsync seed --again` after installing)"
            )
        if info["wal_status"] == "lost":
            raise errors.StateError(
                f"sync {self.sync}: replication slot {self.slot} lost its WAL (max_slot_wal_keep_size): "
                "changes are lost; `mapsync changelog remove`, `install`, then `mapsync seed --again`"
            )
        if info["plugin"] != self.plugin:
            raise errors.ConfigError(
                f"sync {self.sync}: slot {self.slot} uses plugin {info['plugin']}, the sheet says "
                f"{self.plugin}: `mapsync changelog remove` and `install` again (then `seed --again`)"
            )
        return info

    def seed_position(self, existing: dict[str, Any] | None) -> dict[str, Any]:
        """The position before the seed reads, such that every transaction committed before it
        is visible to the seed's snapshot (taken later) and every later one is in the slot.

        A re-seed keeps the existing cursor while the slot can replay from it. Otherwise: the
        WAL insert position L, then the transactions holding an xid at that moment (from a
        snapshot and our own new xid, less those `pg_stat_activity` shows in other databases).
        One of them may have its commit record before L and still not be visible (a commit is
        logged, flushed, then leaves the proc array), so wait (up to SEED_WAIT) until each has
        ended. If one stays open longer, fall back to the slot's confirmed position: safe
        (everything before it had ended when the slot was made), only more is replayed."""
        info = self._slot()
        if existing and lsn_int(existing["lsn"]) >= lsn_int(info["confirmed"]):
            return existing
        try:
            with self._connect() as conn:
                lsn = conn.execute(sa.text("SELECT CAST(pg_current_wal_insert_lsn() AS text)")).scalar_one()
                conn.commit()
                mine, snapshot = conn.execute(
                    sa.text("SELECT CAST(pg_current_xact_id() AS text), CAST(pg_current_snapshot() AS text)")
                ).one()
                conn.commit()
                _xmin, xmax, xip = snapshot.split(":")
                candidates = {int(x) for x in xip.split(",") if x} | set(range(int(xmax), int(mine)))
                elsewhere = {int(x) for x in conn.execute(sa.text(_ELSEWHERE)).scalars()}
                running = [str(x) for x in sorted(candidates) if x % (1 << 32) not in elsewhere]
                deadline = time.monotonic() + SEED_WAIT
                while running:
                    running = list(conn.execute(sa.text(_STILL_RUNNING), {"x": running}).scalars())
                    conn.commit()
                    if not running:
                        return {"lsn": lsn}
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                if not running:
                    return {"lsn": lsn}
        except sa.exc.DBAPIError as exc:
            raise db_errors.transient(f"sync {self.sync}: slot {self.slot}", exc, "source") from None
        return {"lsn": info["confirmed"]}

    def check(self, position: dict[str, Any]) -> None:
        info = self._slot()
        if lsn_int(info["confirmed"]) > lsn_int(position["lsn"]):
            raise errors.StateError(
                f"sync {self.sync}: slot {self.slot} is at {info['confirmed']}, past the committed "
                f"position {position['lsn']}: something else consumed it and changes may be lost; "
                "re-seed with `mapsync seed --again`"
            )

    def end(self) -> str:
        return str(self._sql("SELECT CAST(pg_current_wal_lsn() AS text)")[0][0])

    def confirm(self, position: dict[str, Any]) -> None:
        info = self._slot()
        if lsn_int(position["lsn"]) > lsn_int(info["confirmed"]):
            self._sql(
                "SELECT pg_replication_slot_advance(:s, CAST(:l AS pg_lsn))",
                {"s": self.slot, "l": position["lsn"]},
                commit=True,
            )

    def describe(self, position: dict[str, Any]) -> str:
        return str(position["lsn"])

    def fetch(self, position: dict[str, Any], limit: int, end: str) -> list[Txn]:
        """Whole transactions after the slot's confirmed position, up to `end`, stopping after
        the one that brings the watched row changes to `limit`. A peek returns whole
        transactions; what is read beyond the cut is read again by the next peek."""
        if self.plugin == "wal2json":
            options = [
                "format-version",
                "2",
                "include-transaction",
                "true",
                "add-tables",
                ",".join(_escape(s) + "." + _escape(t) for s, t in self.by_pair),
            ]
        else:
            options = ["include-xids", "0", "skip-empty-xacts", "1"]
        rows = self._sql(
            "SELECT CAST(lsn AS text), data FROM pg_logical_slot_peek_changes("
            ":s, CAST(:e AS pg_lsn), :n, VARIADIC CAST(:o AS text[]))",
            {"s": self.slot, "e": end, "n": limit * 3 + 3, "o": options},
        )
        parse = self._wal2json if self.plugin == "wal2json" else self._test_decoding
        txns: list[Txn] = []
        current: list[RowChange] = []
        count = 0
        for lsn, data in rows:
            kind, change = parse(data)
            if kind == "B":
                current = []
            elif kind == "C":
                txns.append(Txn(current, {"lsn": lsn}))
                count += len(current)
                current = []
                if count >= limit:
                    break
            elif change is not None:
                current.append(change)
        return txns

    # ----------------------------------------------------------------- the plugins

    def _wal2json(self, data: str) -> tuple[str, RowChange | None]:
        msg = json.loads(data, parse_float=Decimal)
        action = msg.get("action")
        if action in ("I", "U", "D"):
            name = self.by_pair.get((msg.get("schema"), msg.get("table")))
            if name is None:
                return "", None

            def cols(key: str) -> dict[str, Any] | None:
                items = msg.get(key)
                return None if items is None else {c["name"]: c["value"] for c in items}

            return action, RowChange(name, action, cols("columns"), cols("identity"))
        if action == "T":
            self._truncated(f"{msg.get('schema')}.{msg.get('table')}")
        return str(action), None

    def _test_decoding(self, data: str) -> tuple[str, RowChange | None]:
        if data.startswith("BEGIN"):
            return "B", None
        if data.startswith("COMMIT"):
            return "C", None
        found = _TD_HEAD.match(data)
        if found is None:
            return "", None
        table, action, rest = found.groups()
        name = self.by_text.get(table)
        if name is None:
            return "", None
        if action == "TRUNCATE":
            self._truncated(table)
            return "", None
        op = action[0]
        if op == "U" and rest.startswith("old-key: "):
            old, at = parse_tuple(rest, len("old-key: "))
            new, _ = parse_tuple(rest, at + len("new-tuple: "))
            return op, RowChange(name, op, new, old)
        values, _ = parse_tuple(rest, 0)
        return op, RowChange(name, op, None if op == "D" else values, values if op == "D" else None)

    def _truncated(self, table: str) -> None:
        import logging

        logging.getLogger("mapsync.capture.log").warning(
            "source_truncated",
            extra={
                "action": "source_truncated",
                "sync": self.sync,
                "table": table,
                "hint": "TRUNCATE carries no keys: the destination keeps the rows; check with "
                "`mapsync run --deletes` or a re-seed",
            },
        )


_IDENT = r'(?:"(?:[^"]|"")*"|[^".:\s]+)'
_TD_HEAD = re.compile(rf"^table ({_IDENT}\.{_IDENT}): (INSERT|UPDATE|DELETE|TRUNCATE):\s?(.*)$", re.S)
_TD_COL = re.compile(r'("(?:[^"]|"")*"|[^\[\s"]+)\[(.*?)\]:', re.S)
_TOKEN = re.compile(r"\S*")


def parse_tuple(text: str, at: int) -> tuple[dict[str, Any], int]:
    """Columns `name[type]:value …` of test_decoding from `at`, up to ` new-tuple: ` or the end.
    Returns the values (text, None for null; unchanged TOAST values left out) and where it
    stopped."""
    out: dict[str, Any] = {}
    while at < len(text):
        if text.startswith("new-tuple: ", at) or text.startswith("(no-tuple-data)", at):
            break
        col = _TD_COL.match(text, at)
        if col is None:
            raise errors.PermanentError(f"cannot read test_decoding output near {text[at : at + 40]!r}")
        name = col.group(1)
        if name.startswith('"'):
            name = name[1:-1].replace('""', '"')
        at = col.end()
        value: Any
        if text.startswith("'", at):
            parts, at = [], at + 1
            while True:
                quote = text.index("'", at)
                parts.append(text[at:quote])
                if text.startswith("''", quote):
                    parts.append("'")
                    at = quote + 2
                    continue
                at = quote + 1
                break
            value = "".join(parts)
        else:
            token = _TOKEN.match(text, at)
            assert token is not None
            raw = token.group(0)
            at = token.end()
            value = None if raw == "null" else (UNCHANGED if raw == "unchanged-toast-datum" else raw)
        if value is not UNCHANGED:
            out[name] = value
        if text.startswith(" ", at):
            at += 1
    return out, at


def _escape(name: str) -> str:
    """A name in wal2json's `add-tables` list (`,`, `.`, `*`, space and quote are escaped)."""
    return re.sub(r"([\\,.* '])", r"\\\1", name)
