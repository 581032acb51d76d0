"""Bookkeeping of batches handed to an asynchronous destination (a job queue).

The order that makes a crash harmless: `record` the client batch id and its keys *before*
submitting; `submitted` with the job id as soon as the server returns it; `finish` with the
per-record results once they are known. After a crash, `unfinished` lists what to look up (by
job id) or read back (by key) — never to resubmit blindly. Statuses: pending (recorded, maybe not
sent) → submitted (job id known) → done | failed.

`SqlJobs` is the port `Jobs` of a `StateStore` (`store.jobs`); the module functions are the older
form, kept for their callers: each asks `store.jobs`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync import records
from mapsync.state import schema
from mapsync.state.clock import stamp
from mapsync.state.ports import Store


def new_batch_id() -> str:
    return uuid.uuid4().hex


def check_final(status: str) -> None:
    if status not in ("done", "failed"):
        raise ValueError(f"an async batch finishes as done or failed, not {status!r}")


def decoded(row: dict[str, Any]) -> dict[str, Any]:
    """A batch's row with its keys (tuples) and results decoded."""
    return {
        **row,
        "keys": [tuple(k) for k in json.loads(row["keys"])],
        "results": json.loads(row["results"]) if row["results"] else None,
    }


class SqlJobs:
    """The `Jobs` port of a SQL state store (table `mapsync_async_batches`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(
        self,
        sync: str,
        keys: Sequence[records.Key],
        batch_id: str | None = None,
        sent: dict[str, str] | None = None,
    ) -> str:
        """Persist a batch before it is submitted; its client batch id. `sent` (key text → hash of
        the record sent) is kept in `results` until `finish` replaces it, so a recovery can tell a
        job's result for the same record from one for an older version of it."""
        batch_id = batch_id or new_batch_id()
        now = stamp()
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(schema.async_batches).values(
                    batch_id=batch_id,
                    sync=sync,
                    keys=records.canonical_json([list(k) for k in keys]),
                    created_at=now,
                    status="pending",
                    results=records.canonical_json({"sent": sent}) if sent is not None else None,
                    updated_at=now,
                )
            )
        return batch_id

    def submitted(self, batch_id: str, job_id: str | None) -> None:
        """The server accepted the batch (with its job id, if it gives one)."""
        t = schema.async_batches
        now = stamp()
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.batch_id == batch_id)
                .values(job_id=job_id, submitted_at=now, status="submitted", updated_at=now)
            )

    def finish(self, batch_id: str, status: str, results: Any = None) -> None:
        """The batch's outcome: `done` or `failed`, with the per-record results (JSON-able)."""
        check_final(status)
        t = schema.async_batches
        text = records.canonical_json(results) if results is not None else None
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.batch_id == batch_id)
                .values(status=status, results=text, updated_at=stamp())
            )

    def unfinished(self, sync: str) -> list[dict[str, Any]]:
        """Batches of a sync still `pending` or `submitted` (oldest first), keys decoded."""
        t = schema.async_batches
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    t.c.batch_id,
                    t.c["keys"],
                    t.c.job_id,
                    t.c.status,
                    t.c.created_at,
                    t.c.submitted_at,
                    t.c.results,
                )
                .where(t.c.sync == sync, t.c.status.in_(["pending", "submitted"]))
                .order_by(t.c.created_at, t.c.batch_id)
            ).mappings()
            return [decoded(dict(row)) for row in rows]

    def get(self, batch_id: str) -> dict[str, Any] | None:
        t = schema.async_batches
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.batch_id == batch_id)).mappings().first()
        if row is None:
            return None
        return decoded(dict(row))


# ------------------------------------------------------------ the module form (store.jobs)


def record(
    store: Store,
    sync: str,
    keys: Sequence[records.Key],
    batch_id: str | None = None,
    sent: dict[str, str] | None = None,
) -> str:
    """`Jobs.record`: persist a batch before it is submitted; its client batch id."""
    return store.jobs.record(sync, keys, batch_id, sent)


def submitted(store: Store, batch_id: str, job_id: str | None) -> None:
    store.jobs.submitted(batch_id, job_id)


def finish(store: Store, batch_id: str, status: str, results: Any = None) -> None:
    store.jobs.finish(batch_id, status, results)


def unfinished(store: Store, sync: str) -> list[dict[str, Any]]:
    return store.jobs.unfinished(sync)


def get(store: Store, batch_id: str) -> dict[str, Any] | None:
    return store.jobs.get(batch_id)
