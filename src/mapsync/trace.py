"""One record's journey (`mapsync trace SHEET --sync NAME KEY`): its current status, how it was
captured (the runs that touched it, the sync's capture method and cursors), its delivery attempts
with the destination's answers (the last 3 kept: state/attempts.py), its ledger entry, its record
error, and for queue and inbox syncs the queue rows and inbox items that carry it.

The key is written as on every command line (keys.py: `KEY`, or `col=value,…` for a compound
key). The command line gives text; the state store keeps typed keys (`[1042]` is not `["1042"]`),
so each value is tried as written and, where it reads as one, as an integer or a number
(`candidates`): the first typed key the store knows is the record's.

Record values are customer data: the payload of a rejected attempt is shown only when asked for
(`show_payload`), and every text shown passes through the sheet's secrets (`redact`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from mapsync import errors, keys, records
from mapsync.capture import queue as queue_capture
from mapsync.capture import queue_admin
from mapsync.capture import queue_table as qt
from mapsync.capture.inbox import BadPayload, decode
from mapsync.redact import redact
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.ports import Store

INBOX_SCAN = 10_000  # the newest inbox items of the sync looked through
INBOX_SHOWN = 20
QUEUE_SHOWN = 20
QUEUE_SCAN = 1000  # queue rows of the source table whose key text holds the first key value
RUNS_SHOWN = 10
_INT = re.compile(r"-?[1-9][0-9]*|0")
_NUMBER = re.compile(r"-?[0-9]+\.[0-9]+([eE][-+]?[0-9]+)?")


@dataclasses.dataclass(frozen=True)
class Wanted:
    """A key as written on the command line, for one sync."""

    sync: str
    text: str  # as written
    values: tuple[str, ...]  # text values in key-column order
    columns: list[str]


def wanted(loaded: LoadedSheet, sync: str, text: str) -> Wanted:
    """The key written for `sync`; ConfigError for an unknown sync or a key not in its shape."""
    if sync not in loaded.sheet.syncs:
        raise errors.ConfigError(f"no sync {sync!r} in {loaded.path.name}")
    columns = keys.columns_of(loaded.sheet, sync)
    try:
        return Wanted(sync, text, keys.parse_arg(text, columns), columns)
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from None


def candidates(values: tuple[str, ...]) -> list[records.Key]:
    """The typed keys a command-line key may stand for: each value as text, and as an integer or
    a float where it reads exactly as one (text first only when it cannot be a number)."""
    options: list[list[Any]] = []
    for v in values:
        typed: list[Any] = []
        if _INT.fullmatch(v):
            typed.append(int(v))
        elif _NUMBER.fullmatch(v):
            typed.append(float(v))
        options.append([*typed, v])
    return [tuple(c) for c in itertools.product(*options)]


def trace(
    loaded: LoadedSheet, store: Store, want: Wanted, *, show_payload: bool = False, source: bool = True
) -> dict[str, Any] | None:
    """The record's journey as a JSON-able dict, or None when nothing anywhere knows the key.
    `source=False` (the web: no source read inside a request) leaves out a queue sync's queue rows."""
    cfg = loaded.sheet.syncs[want.sync]
    method = str(getattr(cfg.changes, "method", "watermark"))
    clean: Callable[[str], str] = lambda text: redact(text, loaded.secrets)  # noqa: E731
    found: dict[str, Any] | None = None
    key: records.Key = candidates(want.values)[0]
    for candidate in candidates(want.values):
        parts = _stored(store, want.sync, candidate)
        if any(parts.values()):
            key, found = candidate, parts
            break
    queue = _queue(loaded, want, method, clean) if source else None
    inbox = _inbox(loaded, store, want, method, clean)
    if found is None:
        if not (queue and queue.get("rows")) and not inbox:
            return None
        found = {"ledger": None, "error": None, "attempts": []}
    ledger, error, attempts = found["ledger"], found["error"], found["attempts"]
    run_ids = sorted({a.run_id for a in attempts if a.run_id is not None} | _error_run(error), reverse=True)
    children = sorted(cfg.children)
    return {
        "sync": want.sync,
        "key": keys.as_json(key, want.columns),
        "key_arg": keys.to_arg(key, want.columns),
        "status": _status(ledger, error, queue, inbox),
        "capture": {
            "method": method,
            "cursors": {k: _plain(v) for k, v in store.cursors(want.sync).items()},
            "runs": [r for r in (_run(store, i) for i in run_ids[:RUNS_SHOWN]) if r is not None],
        },
        "attempts": [_attempt(a, clean, show_payload) for a in attempts],
        "ledger": _ledger(ledger),
        "error": _error(error, clean),
        "queue": queue,
        "inbox": inbox,
        "children": children,
        "children_note": (
            f"child rows ({', '.join(children)}) travel inside their parent's payload and content "
            "hash: a changed line is a new attempt of its parent, under the parent's key"
            if children
            else None
        ),
    }


def _stored(store: Store, sync: str, key: records.Key) -> dict[str, Any]:
    return {
        "ledger": store.attempts.ledger_row(sync, key),
        "error": store.attempts.record_error(sync, key),
        "attempts": store.attempts.attempts(sync, key),
    }


def _error_run(error: dict[str, Any] | None) -> set[int]:
    return {int(error["run_id"])} if error is not None and error.get("run_id") is not None else set()


def _status(
    ledger: dict[str, Any] | None,
    error: dict[str, Any] | None,
    queue: dict[str, Any] | None,
    inbox: list[dict[str, Any]] | None,
) -> str:
    """pending in queue | in inbox | rejected | deleted | delivered | unknown: the newest fact first
    (a change waiting to be sent is newer than what was sent or refused)."""
    waiting = {"new", "in-progress", "error"}
    if queue and any(r["status"] in waiting for r in queue.get("rows", [])):
        return "pending in queue"
    if inbox and any(i["status"] == "new" for i in inbox):
        return "in inbox"
    if error is not None and error["resolved_at"] is None:
        return "rejected (dead: no automatic retry)" if error.get("dead_at") else "rejected"
    if ledger is not None:
        return "deleted" if ledger["deleted"] or ledger["hash"] == "deleted" else "delivered"
    return "unknown"


def _plain(value: Any) -> Any:
    """A value as JSON has it (times and decimals as text)."""
    return json.loads(records.canonical_json(value))


def _run(store: Store, run_id: int) -> dict[str, Any] | None:
    try:
        row = store.run(run_id)
    except (LookupError, sa.exc.NoResultFound, errors.StateError):  # purged by retention
        return {"id": run_id, "purged": True}
    names = ("id", "kind", "trigger", "status", "started_at", "finished_at", "worker")
    return {n: row.get(n) for n in names}


def _attempt(a: Any, clean: Callable[[str], str], show_payload: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "at": a.at,
        "run_id": a.run_id,
        "outcome": a.outcome,
        "version": _plain(a.version),
        "hash": a.hash,
        "dest_id": a.dest_id,
        "answer": clean(a.message) if a.message is not None else None,
    }
    if a.payload is not None:
        out["payload_chars"] = len(a.payload)
        if show_payload:
            text = clean(a.payload)
            try:
                out["payload"] = json.loads(text)
            except ValueError:  # cut at PAYLOAD_MAX
                out["payload"] = text
    return out


def _ledger(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    names = ("version", "hash", "dest_id", "deleted", "updated_at")
    return {**{n: _plain(row[n]) for n in names}, "digest": row.get("digest")}  # drift digest (v8)


def _error(row: dict[str, Any] | None, clean: Callable[[str], str]) -> dict[str, Any] | None:
    if row is None:
        return None
    names = ("field", "rule", "attempts", "first_seen", "last_seen", "resolved_at", "dead_at", "run_id")
    return {
        **{n: row.get(n) for n in names},
        "message": clean(row["message"]),
        "open": row["resolved_at"] is None,
    }


def _queue(
    loaded: LoadedSheet, want: Wanted, method: str, clean: Callable[[str], str]
) -> dict[str, Any] | None:
    """The queue rows of the key in the source's queue table (newest first), for a queue sync. A
    source that cannot be reached is said, not raised: the rest of the trace is in the store."""
    if method != "queue":
        return None
    (q,) = queue_admin.queues(loaded, [want.sync])
    source_table = q.sources[want.sync]
    wanted_forms = {queue_capture.same_key(k) for k in candidates(want.values)}
    try:
        handle = queue_admin.connect(loaded, q.connection)
        try:
            db = queue_admin.sql_of(handle)
            t = qt.table(q.table)
            query = (
                sa.select(
                    t.c.id,
                    t.c.created_at,
                    t.c.change_type,
                    t.c.record_key,
                    t.c.sync_status,
                    t.c.retry_count,
                    t.c.error_message,
                    t.c.completed_at,
                )
                .where(
                    t.c.table_name == source_table, t.c.record_key.contains(want.values[0], autoescape=True)
                )
                .order_by(t.c.id.desc())
                .limit(QUEUE_SCAN)
            )
            with db.engine.connect() as conn:
                rows = conn.execute(query).all()
        finally:
            handle.close()
    except (errors.PermanentError, errors.TransientError, sa.exc.SQLAlchemyError, OSError) as exc:
        return {"table": q.table, "error": clean(str(exc).splitlines()[0])[:300], "rows": []}
    out = []
    for r in rows:
        try:
            same = queue_capture.same_key(queue_capture.parse_key(r.record_key)) in wanted_forms
        except errors.PermanentError:
            continue
        if same:
            out.append(
                {
                    "id": r.id,
                    "created_at": str(r.created_at),
                    "change": r.change_type,
                    "status": r.sync_status,
                    "attempts": r.retry_count,
                    "error": clean(r.error_message) if r.error_message else None,
                    "completed_at": None if r.completed_at is None else str(r.completed_at),
                }
            )
        if len(out) >= QUEUE_SHOWN:
            break
    return {"table": q.table, "rows": out}


def _inbox(
    loaded: LoadedSheet, store: Store, want: Wanted, method: str, clean: Callable[[str], str]
) -> list[dict[str, Any]] | None:
    """The inbox items whose payload carries the key (among the newest `INBOX_SCAN`), for an inbox
    sync: found by the first key value's text, then confirmed by decoding the payload's key."""
    if method != "inbox":
        return None
    forms = {records.key_text(k) for k in candidates(want.values)}
    texts = {records.key_text(tuple(str(v) for v in k)) for k in candidates(want.values)}
    needle = want.values[0]
    out = []
    for item in store.attempts.inbox_items(want.sync, needle, scan=INBOX_SCAN, limit=INBOX_SHOWN * 5):
        try:
            _, key, _, _ = decode(item["payload"], want.columns)
        except BadPayload:
            continue
        if records.key_text(key) in forms or records.key_text(tuple(str(v) for v in key)) in texts:
            out.append(
                {
                    "id": item["id"],
                    "event_id": clean(item["event_id"]),
                    "received_at": item["received_at"],
                    "status": item["status"],
                    "processed_at": item["processed_at"],
                    "error": clean(item["error"]) if item["error"] else None,
                }
            )
        if len(out) >= INBOX_SHOWN:
            break
    return out
