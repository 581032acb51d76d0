"""The sandbox's SQLite store: records by resource and user key, tokens, the request log, the
call budget (sliding windows per credential) and the asynchronous queue's jobs.

Every value is stored as a string, as CIMcloud's documented example answers show
(`"status": "1"`); a blank value clears the field ("a blank field = data deletion").
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from typing import Any

PAGE = 50  # records per GET page (documented), OnlineOrders too

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resource TEXT NOT NULL,
    user_key TEXT NOT NULL COLLATE NOCASE,  -- user keys match case-insensitively (INFERRED)
    data TEXT NOT NULL,
    UNIQUE (resource, user_key)
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    credential TEXT NOT NULL,
    counted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_credential ON requests (credential, t);
CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, username TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, created REAL NOT NULL, results TEXT NOT NULL
);
"""


def now_text() -> str:
    """`last_modify_date` style: naive UTC ISO time with microseconds."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


class Store:
    """Thread-safe: one connection behind a lock (FastAPI runs sync handlers in threads)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # ----------------------------------------------------------------- records

    def all(self, resource: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT id, data FROM records WHERE resource = ? ORDER BY id", (resource,)
            ).fetchall()
        return [{**json.loads(data), "key": str(pk)} for pk, data in rows]

    def find(self, resource: str, user_key: str | None, pk: str | None) -> tuple[int, dict[str, Any]] | None:
        with self.lock:
            if pk not in (None, ""):
                row = self.db.execute(
                    "SELECT id, data FROM records WHERE resource = ? AND id = ?", (resource, pk)
                ).fetchone()
            else:
                row = self.db.execute(
                    "SELECT id, data FROM records WHERE resource = ? AND user_key = ?",
                    (resource, user_key),
                ).fetchone()
        return (int(row[0]), json.loads(row[1])) if row else None

    def upsert(
        self, resource: str, key_field: str, record: dict[str, Any], *, update_only: bool
    ) -> str | None:
        """Apply one record: `"imported"`, `"updated"`, or None (PUT of a missing record).

        The primary key (`key`) wins over the user key when both are sent, as documented."""
        values = {k: as_string(v) for k, v in record.items() if k != "key"}
        pk = as_string(record.get("key")) or None
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                found = self.find(resource, values.get(key_field), pk)
                stamp = now_text()
                if found is not None:
                    data = {**found[1], **values, "last_modify_date": stamp}
                    self.db.execute(
                        "UPDATE records SET data = ?, user_key = ? WHERE id = ?",
                        (json.dumps(data), data.get(key_field, ""), found[0]),
                    )
                    outcome: str | None = "updated"
                elif update_only or pk is not None:
                    outcome = None
                else:
                    data = {**values, "create_date": stamp, "last_modify_date": stamp}
                    self.db.execute(
                        "INSERT INTO records (resource, user_key, data) VALUES (?, ?, ?)",
                        (resource, values[key_field], json.dumps(data)),
                    )
                    outcome = "imported"
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return outcome

    def put(self, resource: str, key_field: str, values: dict[str, str]) -> int:
        """Store a record as given, merged into the one with its user key if any (no HTTP:
        the sandbox's test helpers); `create_date` and `last_modify_date` are now unless given.
        The record's id back."""
        stamp = now_text()
        with self.lock:
            found = self.find(resource, values[key_field], None)
            if found is not None:
                data = {**found[1], "last_modify_date": stamp, **values}
                self.db.execute("UPDATE records SET data = ? WHERE id = ?", (json.dumps(data), found[0]))
                return found[0]
            data = {"create_date": stamp, "last_modify_date": stamp, **values}
            cur = self.db.execute(
                "INSERT INTO records (resource, user_key, data) VALUES (?, ?, ?)",
                (resource, values[key_field], json.dumps(data)),
            )
            return int(cur.lastrowid or 0)

    def set_fields(self, pk: int, fields: dict[str, str]) -> None:
        with self.lock:
            row = self.db.execute("SELECT data FROM records WHERE id = ?", (pk,)).fetchone()
            data = {**json.loads(row[0]), **fields}
            self.db.execute("UPDATE records SET data = ? WHERE id = ?", (json.dumps(data), pk))

    # ----------------------------------------------------------------- tokens

    def add_token(self, token: str, username: str, expires: float) -> None:
        with self.lock:
            self.db.execute("INSERT INTO tokens VALUES (?, ?, ?)", (token, username, expires))

    def token_user(self, token: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT username, expires FROM tokens WHERE token = ?", (token,)).fetchone()
        return str(row[0]) if row and row[1] > time.time() else None

    # ----------------------------------------------------------------- the request log

    def log(self, t: float, method: str, path: str, status: int, credential: str, counted: bool) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO requests (t, method, path, status, credential, counted) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (t, method, path, status, credential, int(counted)),
            )

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT t, method, path, status, credential, counted FROM requests ORDER BY id"
            ).fetchall()
        return [
            {"t": t, "method": m, "path": p, "status": s, "credential": c, "counted": bool(n)}
            for t, m, p, s, c, n in rows
        ]

    def spent(self, credential: str, since: float) -> tuple[int, float | None]:
        """Counted calls of a credential after `since`, and the time of the oldest of them."""
        with self.lock:
            n, oldest = self.db.execute(
                "SELECT count(*), min(t) FROM requests WHERE credential = ? AND counted = 1 AND t > ?",
                (credential, since),
            ).fetchone()
        return int(n), oldest

    # ----------------------------------------------------------------- jobs (inferred contract)

    def add_job(self, job: str, created: float) -> None:
        with self.lock:
            self.db.execute("INSERT INTO jobs VALUES (?, 'pending', ?, '[]')", (job, created))

    def finish_job(self, job: str, results: list[dict[str, Any]]) -> None:
        with self.lock:
            self.db.execute(
                "UPDATE jobs SET status = 'done', results = ? WHERE id = ?", (json.dumps(results), job)
            )

    def job(self, job: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT status, results FROM jobs WHERE id = ?", (job,)).fetchone()
        return {"jobId": job, "status": row[0], "results": json.loads(row[1])} if row else None
