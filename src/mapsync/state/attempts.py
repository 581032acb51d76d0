"""Delivery attempts (schema v7 `mapsync_attempts`; port `DeliveryAttempts`, `store.attempts`) and
the other per-key reads of `mapsync trace`.

What is kept, per (sync, key): the last `KEEP` (3) attempts. Each says when, in which run, with
which outcome (delivered | deleted | rejected | failed), the version, content hash and dest id,
and the answer (a rejection's message, already redacted by the engine). The mapped record (the
payload, customer data) is kept only for a `rejected` or `failed` attempt, cut to `PAYLOAD_MAX`
characters; a delivered record keeps only its hash. Older attempts of a key are deleted in the
same transaction as the new ones; the retention purge removes the rest by age.

Written **inside the batch commit's transaction** (`StateStore.commit(attempts=…)` calls `write`;
the memory store calls `memory_attempts.write`): an attempt exists exactly when the ledger entry
or record error it explains does, a crash between the two cannot leave one without the other, and
a batch's attempts cost no transaction of their own. The engine decides which attempts a batch
has (`of_batch`): a seed records no `delivered` attempts (its ledger entries already say what was
delivered, and a seed must not write every key twice); rejections are always recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.state import schema, values
from mapsync.state.clock import stamp
from mapsync.state.data import Attempt
from mapsync.state.faults import guarded

KEEP = 3  # attempts kept per (sync, key)
PAYLOAD_MAX = 16_000  # characters of a failed attempt's payload kept (the rest is cut, marked)
MESSAGE_MAX = 2000
WITH_PAYLOAD = frozenset({"rejected", "failed"})
OUTCOMES = ("delivered", "deleted", "rejected", "failed")


def of_batch(
    delivered: Sequence[records.Delivered],
    rejected: Sequence[records.Rejection],
    sent: Sequence[records.Mapped],
    *,
    deliveries: bool,
    redact: Callable[[str], str],
) -> list[Attempt]:
    """A batch's attempts: each record the destination confirmed (when `deliveries`: not a seed's),
    and each rejected one, with the mapped record it was sent as (if it got that far) as payload.
    `delivered` are the destination's confirmations only (not the keys the ledger skipped)."""
    out: list[Attempt] = []
    if deliveries:
        for d in delivered:
            outcome = "deleted" if d.op == "delete" else "delivered"
            out.append(Attempt(d.key, outcome, d.version, d.hash, d.dest_id))
    if rejected:
        by_key = {records.key_text(m.key): m for m in sent}
        for r in rejected:
            m = by_key.get(records.key_text(r.key))
            payload = None
            if m is not None:
                body = {"op": m.op, "values": m.values, **({"children": m.children} if m.children else {})}
                payload = redact(records.canonical_json(body))
            message = redact(r.message)
            where = ", ".join(p for p in (f"field {r.field}" if r.field else "", r.rule or "") if p)
            out.append(
                Attempt(
                    r.key,
                    "rejected",
                    r.version,
                    m.hash if m is not None else None,
                    None,
                    f"{message} ({where})" if where else message,
                    payload,
                )
            )
    return out


def of_columns(columns: records.DeliveredColumns) -> list[Attempt]:
    """The `delivered` attempts of a columnar batch's rows (a run's; a seed records none)."""
    return [
        Attempt(key, "delivered", version, hash_, dest_id)
        for key, version, hash_, dest_id in zip(
            columns.key_values, columns.versions, columns.hashes, columns.dest_ids, strict=True
        )
    ]


def row_of(sync: str, run_id: int | None, a: Attempt, now: str) -> dict[str, Any]:
    """The stored row of an attempt: the payload only for a rejected or failed one."""
    payload = a.payload if a.outcome in WITH_PAYLOAD else None
    if payload is not None and len(payload) > PAYLOAD_MAX:
        payload = payload[:PAYLOAD_MAX] + "…(cut)"
    return {
        "sync": sync,
        "key": records.key_text(a.key),
        "run_id": run_id,
        "at": now,
        "outcome": a.outcome,
        "version": values.encode(a.version) if a.version is not None else None,
        "hash": a.hash,
        "dest_id": a.dest_id,
        "message": a.message[:MESSAGE_MAX] if a.message is not None else None,
        "payload": payload,
    }


def attempt_of(row: Any) -> Attempt:
    """An attempt read back (a row mapping of `mapsync_attempts`)."""
    return Attempt(
        key=tuple(values.decode(row["key"])),
        outcome=row["outcome"],
        version=values.decode(row["version"]),
        hash=row["hash"],
        dest_id=row["dest_id"],
        message=row["message"],
        payload=row["payload"],
        run_id=row["run_id"],
        at=row["at"],
        id=row["id"],
    )


_COLUMNS = ("sync", "key", "run_id", "at", "outcome", "version", "hash", "dest_id", "message", "payload")


def write(conn: sa.Connection, sync: str, run_id: int | None, attempts: Sequence[Attempt], now: str) -> None:
    """Insert the attempts and delete the ones beyond the last `KEEP` of each of their keys, in the
    caller's transaction, in two statements through the driver (SQLAlchemy's per-row parameter
    processing would cost more than the insert): the rows (PostgreSQL: one array per column,
    `unnest`ed; SQLite: a prepared executemany), then a delete that walks the index (sync, key,
    id) down from each key's newest attempt."""
    if not attempts:
        return
    rows = [row_of(sync, run_id, x, now) for x in attempts]
    q = conn.dialect.identifier_preparer.quote
    t = q(schema.attempts.name)
    names = ", ".join(q(c) for c in _COLUMNS)
    if conn.dialect.name == "postgresql":  # one statement: a column array per column
        types = ", ".join(f"%s::{'integer' if c == 'run_id' else 'text'}[]" for c in _COLUMNS)
        conn.exec_driver_sql(
            f"INSERT INTO {t} ({names}) SELECT * FROM unnest({types})",  # noqa: S608 (our own schema)
            tuple([r[c] for r in rows] for c in _COLUMNS),
        )
    else:
        conn.exec_driver_sql(
            f"INSERT INTO {t} ({names}) VALUES ({', '.join('?' for _ in _COLUMNS)})",  # noqa: S608
            [tuple(r[c] for c in _COLUMNS) for r in rows],
        )
    keys = sorted({r["key"] for r in rows})
    i, s, k = q("id"), q("sync"), q("key")
    if conn.dialect.name == "postgresql":
        sql = (  # per key, its attempts after the newest KEEP, by a backward scan of the index; the
            # ids collected first (ARRAY), then deleted through the primary key: no table scan
            f"DELETE FROM {t} WHERE {i} = ANY(ARRAY(SELECT x.{i} FROM unnest(%s::text[]) AS w(k) "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT {i} FROM {t} WHERE {s} = %s AND {k} = w.k "
            f"ORDER BY {i} DESC OFFSET {KEEP}) AS x))"
        )
        conn.exec_driver_sql(sql, (keys, sync))
    else:
        sql = (  # from each key of the batch (json_each drives), its attempts older than its
            # KEEP-th newest (none when it has fewer), deleted by rowid
            f"DELETE FROM {t} WHERE {i} IN (SELECT b.{i} FROM json_each(?) AS w "  # noqa: S608
            f"CROSS JOIN {t} AS b ON b.{s} = ? AND b.{k} = w.value "
            f"WHERE b.{i} < (SELECT c.{i} FROM {t} AS c WHERE c.{s} = b.{s} AND c.{k} = b.{k} "
            f"ORDER BY c.{i} DESC LIMIT 1 OFFSET {KEEP - 1}))"
        )
        conn.exec_driver_sql(sql, (json.dumps(keys), sync))


class SqlAttempts:
    """The `DeliveryAttempts` port of a SQL state store."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @guarded
    def record_attempts(self, sync: str, run_id: int | None, attempts: Sequence[Attempt]) -> None:
        """Attempts outside a batch commit (one transaction of their own)."""
        with self.engine.begin() as conn:
            write(conn, sync, run_id, attempts, stamp())

    @guarded
    def attempts(self, sync: str, key: records.Key) -> list[Attempt]:
        """The kept attempts of one key, newest first."""
        a = schema.attempts
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(a).where(a.c.sync == sync, a.c.key == records.key_text(key)).order_by(a.c.id.desc())
            ).mappings()
            return [attempt_of(r) for r in rows]

    @guarded
    def record_error(self, sync: str, key: records.Key) -> dict[str, Any] | None:
        """The key's record error row (open or resolved), or None."""
        e = schema.record_errors
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(e).where(e.c.sync == sync, e.c.key == records.key_text(key)))
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    @guarded
    def ledger_row(self, sync: str, key: records.Key) -> dict[str, Any] | None:
        """The key's ledger entry with its time (version decoded), or None."""
        t = schema.ledger
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(t).where(t.c.sync == sync, t.c.key == records.key_text(key)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return {**dict(row), "version": values.decode(row["version"]), "deleted": bool(row["deleted"])}

    @guarded
    def inbox_items(self, sync: str, needle: str, *, scan: int, limit: int) -> list[dict[str, Any]]:
        """Among the sync's last `scan` inbox items, the newest `limit` whose payload contains
        `needle` (a bounded search: the caller decodes each payload to confirm its key)."""
        t = schema.inbox
        recent = (
            sa.select(
                t.c.id, t.c.event_id, t.c.received_at, t.c.status, t.c.processed_at, t.c.error, t.c.payload
            )
            .where(t.c.sync == sync)
            .order_by(t.c.id.desc())
            .limit(scan)
            .subquery()
        )
        query = (
            sa.select(recent)
            .where(recent.c.payload.contains(needle, autoescape=True))
            .order_by(recent.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
