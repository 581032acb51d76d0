"""Operations on the queue table: claim, mark, purge, count.

Times are the database server's clock (the triggers stamp `created_at` with it), bound as
parameters in each column's own representation: timestamptz on PostgreSQL, naive UTC
DATETIME(6) on MariaDB, `YYYY-MM-DD HH:MM:SS.SSS` UTC text on SQLite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync.capture.triggers import QueueStatus, archive_name
from mapsync.connectors.sql import quoted

COLUMNS = (
    "id",
    "created_at",
    "change_type",
    "table_name",
    "record_key",
    "old_image",
    "sync_status",
    "error_message",
    "retry_count",
    "claim_token",
    "claimed_at",
    "next_attempt_at",
    "completed_at",
)
FINAL = (QueueStatus.COMPLETED, QueueStatus.SUPERSEDED)
PURGE_CHUNK = 500
MESSAGE_MAX = 1000


def table(name: str) -> sa.TableClause:
    return sa.table(quoted(name), *[sa.column(c) for c in COLUMNS])


@dataclasses.dataclass(frozen=True)
class Claimed:
    """One claimed queue row."""

    id: int
    change_type: str
    record_key: str
    old_image: dict[str, Any] | None
    retry_count: int


# --------------------------------------------------------------------------- clock


def now(conn: sa.Connection) -> dt.datetime:
    """The server's clock as an aware UTC datetime."""
    sql = {
        "postgresql": "SELECT clock_timestamp()",
        "mysql": "SELECT UTC_TIMESTAMP(6)",
        "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
    }[conn.dialect.name]
    return parse(conn.execute(sa.text(sql)).scalar_one())


def parse(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def stamp(conn: sa.Connection, moment: dt.datetime) -> Any:
    """`moment` (aware) as the dialect's column value."""
    name = conn.dialect.name
    if name == "postgresql":
        return moment
    naive = moment.astimezone(dt.UTC).replace(tzinfo=None)
    if name == "mysql":
        return naive
    return naive.strftime("%Y-%m-%d %H:%M:%S.") + f"{naive.microsecond // 1000:03d}"


# --------------------------------------------------------------------------- claim


def max_id(conn: sa.Connection, queue: str) -> int | None:
    """The largest id now (of any source table: an upper bound, read from the primary key)."""
    t = table(queue)
    value = conn.execute(sa.select(sa.func.max(t.c.id))).scalar()
    return None if value is None else int(value)


def claim(
    conn: sa.Connection,
    queue: str,
    source_table: str,
    *,
    limit: int,
    up_to: int,
    token: str,
    max_retries: int,
    lease: dt.timedelta,
) -> list[Claimed]:
    """Claim up to `limit` rows inside the caller's transaction: `in-progress` rows whose claim
    is older than `lease` and `error` rows due for a retry (not failed in this run, `token`) first,
    then `new` rows, each status in id order. Rows another open transaction holds are skipped
    (SKIP LOCKED), not waited for.

    One query per status, each an equality on (table_name, sync_status) and a range on id, so the
    claim index returns rows in id order and the scan stops at the limit: a single query with an
    OR of statuses sorts instead, and MariaDB then locks every matching row, starving a
    concurrent claimer."""
    t = table(queue)
    at = now(conn)
    conditions = [
        sa.and_(t.c.sync_status == QueueStatus.IN_PROGRESS, t.c.claimed_at < stamp(conn, at - lease)),
        sa.and_(
            t.c.sync_status == QueueStatus.ERROR,
            t.c.retry_count < max_retries,
            t.c.next_attempt_at <= stamp(conn, at),
            sa.or_(t.c.claim_token.is_(None), t.c.claim_token != token),
        ),
        t.c.sync_status == QueueStatus.NEW,
    ]
    rows: list[Claimed] = []
    for condition in conditions:
        if len(rows) >= limit:
            break
        query = (
            sa.select(t.c.id, t.c.change_type, t.c.record_key, t.c.old_image, t.c.retry_count)
            .where(t.c.table_name == source_table, condition, t.c.id <= up_to)
            .order_by(t.c.id)
            .limit(limit - len(rows))
        )
        if conn.dialect.name in ("postgresql", "mysql"):
            query = query.with_for_update(skip_locked=True)
        rows.extend(
            Claimed(int(r.id), r.change_type, r.record_key, _image(r.old_image), int(r.retry_count))
            for r in conn.execute(query)
        )
    rows.sort(key=lambda r: r.id)
    if rows:
        conn.execute(
            sa.update(t)
            .where(t.c.id.in_([r.id for r in rows]))
            .values(sync_status=QueueStatus.IN_PROGRESS, claim_token=token, claimed_at=stamp(conn, at))
        )
    return rows


def _connect(engine: sa.Engine) -> sa.Connection:
    """A connection for the queue's own statements: READ COMMITTED on MariaDB.

    Under InnoDB's default REPEATABLE READ an UPDATE or DELETE locks every row it scans, and waits
    for a row that another open transaction holds. A slow source transaction holds the queue row
    its trigger wrote (uncommitted), so `release` (by claim token, which no index covers) would
    wait innodb_lock_wait_timeout (50 s) for it and then fail. READ COMMITTED takes no gap locks
    (which would also hold up the triggers' inserts) and reads a locked row's last committed
    version to decide whether it matches (a "semi-consistent read"), so rows of other
    transactions that do not match are passed over, not waited for."""
    conn = engine.connect()
    if engine.dialect.name == "mysql":
        conn = conn.execution_options(isolation_level="READ COMMITTED")
    return conn


def begin_claim(engine: sa.Engine) -> sa.Connection:
    """A connection in a fresh claim transaction: READ COMMITTED on MariaDB (see `_connect`),
    `BEGIN IMMEDIATE` on SQLite (one claimer at a time)."""
    conn = _connect(engine)
    if engine.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    return conn


@contextlib.contextmanager
def begin(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A short transaction marking, releasing or purging queue rows (READ COMMITTED on MariaDB,
    see `_connect`): committed on success, rolled back on an error."""
    with _connect(engine) as conn, conn.begin():
        yield conn


def _image(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------- marking


def mark(
    conn: sa.Connection,
    queue: str,
    token: str,
    status: str,
    ids: Sequence[int],
) -> None:
    """`completed` or `superseded`: only rows this claim still holds."""
    if not ids:
        return
    t = table(queue)
    at = stamp(conn, now(conn))
    for i in range(0, len(ids), 500):
        conn.execute(
            sa.update(t)
            .where(
                t.c.id.in_(list(ids[i : i + 500])),
                t.c.claim_token == token,
                t.c.sync_status == QueueStatus.IN_PROGRESS,
            )
            .values(sync_status=status, completed_at=at, error_message=None)
        )


def fail(
    conn: sa.Connection,
    queue: str,
    token: str,
    failures: Iterable[tuple[int, int, str]],
    backoff: dt.timedelta,
) -> None:
    """`error` rows: (id, retry_count so far, message). The next attempt waits backoff·2^n."""
    t = table(queue)
    at = now(conn)
    params = [
        {
            "k_id": row_id,
            "k_retry": retries + 1,
            "k_msg": message[:MESSAGE_MAX],
            "k_next": stamp(conn, at + backoff * (2 ** min(retries, 30))),
        }
        for row_id, retries, message in failures
    ]
    if not params:
        return
    conn.execute(
        sa.update(t)
        .where(
            t.c.id == sa.bindparam("k_id"),
            t.c.claim_token == token,
            t.c.sync_status == QueueStatus.IN_PROGRESS,
        )
        .values(
            sync_status=QueueStatus.ERROR,
            retry_count=sa.bindparam("k_retry"),
            error_message=sa.bindparam("k_msg"),
            next_attempt_at=sa.bindparam("k_next"),
            completed_at=None,
        ),
        params,
    )


def release(conn: sa.Connection, queue: str, token: str) -> None:
    """Hand back the rows of a claim that will not be marked (its run stopped): `new` again, or
    `error` for a retry, so the next run takes them without waiting for the lease."""
    t = table(queue)
    conn.execute(
        sa.update(t)
        .where(t.c.claim_token == token, t.c.sync_status == QueueStatus.IN_PROGRESS)
        .values(
            sync_status=sa.case((t.c.retry_count > 0, QueueStatus.ERROR), else_=QueueStatus.NEW),
            claim_token=None,
            claimed_at=None,
        )
    )


def supersede_errors(conn: sa.Connection, queue: str, source_table: str, newest: dict[str, int]) -> None:
    """`error` rows of keys whose newer change was just delivered are obsolete: `superseded`."""
    if not newest:
        return
    t = table(queue)
    at = stamp(conn, now(conn))
    conn.execute(
        sa.update(t)
        .where(
            t.c.table_name == source_table,
            t.c.record_key == sa.bindparam("k_key"),
            t.c.id < sa.bindparam("k_id"),
            t.c.sync_status == QueueStatus.ERROR,
        )
        .values(sync_status=QueueStatus.SUPERSEDED, completed_at=at),
        [{"k_key": k, "k_id": v} for k, v in newest.items()],
    )


def has_errors(conn: sa.Connection, queue: str, source_table: str) -> bool:
    t = table(queue)
    query = (
        sa.select(t.c.id).where(t.c.table_name == source_table, t.c.sync_status == QueueStatus.ERROR).limit(1)
    )
    return conn.execute(query).first() is not None


# --------------------------------------------------------------------------- purge and status


def purge(engine: sa.Engine, queue: str, source_table: str, retention: dt.timedelta, archive: bool) -> int:
    """Delete (or move to `<queue>_archive`) `completed`/`superseded` rows finished longer than
    `retention` ago, in small transactions. Only rows in a final state are touched, so a run
    claiming and marking rows at the same time is never disturbed. Returns the rows purged."""
    t = table(queue)
    total = 0
    while True:
        with begin(engine) as conn:
            cutoff = stamp(conn, now(conn) - retention)
            final = sa.and_(
                t.c.table_name == source_table, t.c.sync_status.in_(FINAL), t.c.completed_at < cutoff
            )
            ids = [
                r[0] for r in conn.execute(sa.select(t.c.id).where(final).order_by(t.c.id).limit(PURGE_CHUNK))
            ]
            if not ids:
                return total
            chosen = sa.and_(t.c.id.in_(ids), t.c.sync_status.in_(FINAL))
            if archive:
                a = table(archive_name(queue))
                conn.execute(
                    sa.insert(a).from_select(
                        list(COLUMNS), sa.select(*[t.c[c] for c in COLUMNS]).where(chosen)
                    )
                )
            total += conn.execute(sa.delete(t).where(chosen)).rowcount
        if len(ids) < PURGE_CHUNK:
            return total


def counts(conn: sa.Connection, queue: str, source_table: str) -> tuple[dict[str, int], float | None]:
    """Rows per `sync_status`, and the age in seconds of the oldest `new` row (None: none)."""
    t = table(queue)
    rows = conn.execute(
        sa.select(t.c.sync_status, sa.func.count())
        .where(t.c.table_name == source_table)
        .group_by(t.c.sync_status)
    )
    out = {status: int(n) for status, n in rows}
    oldest = conn.execute(
        sa.select(sa.func.min(t.c.created_at)).where(
            t.c.table_name == source_table, t.c.sync_status == QueueStatus.NEW
        )
    ).scalar()
    age = None if oldest is None else max(0.0, (now(conn) - parse(oldest)).total_seconds())
    return out, age
