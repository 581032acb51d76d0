"""Read-only views of the state store for `status`, `errors` and `state show`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from mapsync.state import schema, values
from mapsync.state.store import StateStore, stamp


def sync_status(store: StateStore, sync: str) -> dict[str, Any]:
    r, e = schema.runs, schema.record_errors
    with store.engine.connect() as conn:
        last = (
            conn.execute(sa.select(r).where(r.c.sync == sync).order_by(r.c.id.desc()).limit(1))
            .mappings()
            .first()
        )
        open_errors = conn.execute(
            sa.select(sa.func.count()).where(e.c.sync == sync, e.c.resolved_at.is_(None))
        ).scalar_one()
    cursors = {k: v for k, v in store.cursors(sync).items() if v is not None}
    return {
        "sync": sync,
        "last_run": dict(last) if last else None,
        "cursors": {k: plain(v) for k, v in cursors.items()},
        "ledger_keys": store.ledger_count(sync),
        "open_errors": int(open_errors),
    }


def record_errors(
    store: StateStore, sync: str | None, include_resolved: bool, limit: int
) -> list[dict[str, Any]]:
    e = schema.record_errors
    query = sa.select(e).order_by(e.c.last_seen.desc()).limit(limit)
    if sync:
        query = query.where(e.c.sync == sync)
    if not include_resolved:
        query = query.where(e.c.resolved_at.is_(None))
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def count_record_errors(store: StateStore, sync: str | None, include_resolved: bool) -> int:
    """How many record errors `record_errors` would list without its limit."""
    e = schema.record_errors
    query = sa.select(sa.func.count()).select_from(e)
    if sync:
        query = query.where(e.c.sync == sync)
    if not include_resolved:
        query = query.where(e.c.resolved_at.is_(None))
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def runs(store: StateStore, sync: str | None, limit: int) -> list[dict[str, Any]]:
    r = schema.runs
    query = sa.select(r).order_by(r.c.id.desc()).limit(limit)
    if sync:
        query = query.where(r.c.sync == sync)
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def audit(store: StateStore, sync: str, limit: int) -> list[dict[str, Any]]:
    a = schema.cursor_audit
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(a).where(a.c.sync == sync).order_by(a.c.id.desc()).limit(limit)
        ).mappings()
        return [dict(row) for row in rows]


def audit_plain(store: StateStore, sync: str, limit: int) -> list[dict[str, Any]]:
    """`audit` with the old and new values as plain JSON data (for `state show`)."""
    return [
        {**row, "old_value": decoded(row["old_value"]), "new_value": decoded(row["new_value"])}
        for row in audit(store, sync, limit)
    ]


def decoded(text: str | None) -> Any:
    """An audited cursor value as plain JSON data (the stored text is typed-tagged JSON)."""
    if text is None or text == "reset":
        return text
    try:
        return plain(values.decode(text))
    except (ValueError, TypeError):
        return text


def plain(value: Any) -> Any:
    """Cursor data as plain JSON values: timestamps and decimals as text, structures kept."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def reset(store: StateStore, sync: str) -> dict[str, int]:
    """Forget a sync's cursors, ledger and errors (run history and audit are kept)."""
    out = {}
    with store.engine.begin() as conn:
        for table in (schema.cursors, schema.ledger, schema.record_errors, schema.unmapped, schema.leases):
            out[table.name] = conn.execute(sa.delete(table).where(table.c.sync == sync)).rowcount
        conn.execute(
            sa.insert(schema.cursor_audit).values(
                sync=sync,
                run_id=None,
                name="*",
                old_value=None,
                new_value="reset",
                committed_at=stamp(),
            )
        )
    return out
