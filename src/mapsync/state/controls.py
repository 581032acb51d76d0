"""Operator controls stored in the state store, so every process sees them (schema v5; port
`Controls`): a paused sync (`mapsync_controls`) and runs asked for by an operator
(`mapsync_run_requests`, new → taken → done | failed). A mixin of `StateStore`.

A request is taken by one worker only: `take_requests` moves each row from `new` to `taken`
with a conditional update (a row another taker moved first is not ours), and on PostgreSQL
reads them `FOR UPDATE SKIP LOCKED`, so two takers never wait for or get the same request."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mapsync.state import schema
from mapsync.state.clock import stamp, unstamp
from mapsync.state.data import REQUEST_KINDS, PauseInfo, RunRequest
from mapsync.state.faults import guarded


def check_kind(kind: str) -> None:
    if kind not in REQUEST_KINDS:
        raise ValueError(f"unknown run request kind {kind!r} (known: {', '.join(REQUEST_KINDS)})")


def check_final(status: str) -> None:
    if status not in ("done", "failed"):
        raise ValueError(f"a run request finishes as done or failed, not {status!r}")


def request_of(row: Any) -> RunRequest:
    """A run request row as the port hands it out."""
    return RunRequest(
        id=int(row["id"]),
        sync=row["sync"],
        kind=row["kind"],
        requested_by=row["requested_by"],
        requested_at=unstamp(row["requested_at"]),
        status=row["status"],
        taken_at=unstamp(row["taken_at"]) if row["taken_at"] else None,
        taken_by=row["taken_by"],
        run_id=row["run_id"],
        message=row["message"],
        keys=tuple(json.loads(row["keys"])) if row.get("keys") is not None else None,
        note=row.get("note"),
    )


def request_values(keys: Sequence[str] | None, note: str | None) -> dict[str, Any]:
    """The v9 columns of a new request: `keys` (command-line form, `keys.to_arg`) as a JSON list
    (None: all)."""
    if isinstance(keys, str):
        raise TypeError("keys is a sequence of keys, not one text")
    return {"keys": None if keys is None else json.dumps(list(keys)), "note": note}


class ControlsMixin:
    engine: sa.Engine

    # ----------------------------------------------------------------- pause

    @guarded
    def pause(self, sync: str, by: str, note: str | None = None) -> None:
        """Pause `sync` (again: who, when and the note are replaced)."""
        c = schema.controls
        row = {"paused": True, "paused_by": by, "paused_at": stamp(), "note": note}
        with self.engine.begin() as conn:
            if not conn.execute(sa.update(c).where(c.c.sync == sync).values(**row)).rowcount:
                conn.execute(sa.insert(c).values(sync=sync, **row))

    @guarded
    def resume(self, sync: str) -> bool:
        """Resume `sync`; whether it was paused."""
        c = schema.controls
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    sa.update(c)
                    .where(c.c.sync == sync, c.c.paused.is_(True))
                    .values(paused=False, paused_by=None, paused_at=None, note=None)
                ).rowcount
            )

    @guarded
    def paused(self) -> dict[str, PauseInfo]:
        """The paused syncs, by name."""
        c = schema.controls
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.c.sync, c.c.paused_by, c.c.paused_at, c.c.note).where(c.c.paused.is_(True))
            ).all()
        return {sync: PauseInfo(by or "", unstamp(at), note) for sync, by, at, note in rows}

    # ----------------------------------------------------------------- run requests

    @guarded
    def request_run(
        self, sync: str, kind: str, by: str, keys: Sequence[str] | None = None, note: str | None = None
    ) -> int:
        """Ask for a run of `sync` (kind run | overlap | retry | reexport; retry and reexport of
        only `keys`, in their command-line form, when given); the request's id."""
        check_kind(kind)
        extra = request_values(keys, note)
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.insert(schema.run_requests).values(
                    sync=sync, kind=kind, requested_by=by, requested_at=stamp(), status="new", **extra
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    @guarded
    def take_requests(self, syncs: list[str], worker: str) -> list[RunRequest]:
        """The new requests of these syncs, oldest first, now `taken` by `worker`: each is taken by
        one caller only, however many take at once."""
        if not syncs:
            return []
        q = schema.run_requests
        now = stamp()
        with self.engine.begin() as conn:
            query = sa.select(q.c.id).where(q.c.sync.in_(syncs), q.c.status == "new").order_by(q.c.id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            mine = []
            for request_id in conn.execute(query).scalars().all():
                took = conn.execute(
                    sa.update(q)
                    .where(q.c.id == request_id, q.c.status == "new")
                    .values(status="taken", taken_at=now, taken_by=worker)
                ).rowcount
                if took:
                    mine.append(request_id)
            if not mine:
                return []
            rows = conn.execute(sa.select(q).where(q.c.id.in_(mine)).order_by(q.c.id)).mappings().all()
        return [request_of(r) for r in rows]

    @guarded
    def finish_request(
        self, request_id: int, status: str, run_id: int | None = None, message: str | None = None
    ) -> None:
        """A taken request is `done` or `failed`, with the run that answered it and a message."""
        check_final(status)
        q = schema.run_requests
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(q)
                .where(q.c.id == request_id)
                .values(status=status, run_id=run_id, message=message[:2000] if message else None)
            )

    @guarded
    def requests(
        self, sync: str | None = None, limit: int = 100, *, pending: bool = False
    ) -> list[RunRequest]:
        """Run requests, newest first (of one sync, or all; only new and taken ones, with
        `pending`)."""
        q = schema.run_requests
        query = sa.select(q).order_by(q.c.id.desc()).limit(limit)
        if sync is not None:
            query = query.where(q.c.sync == sync)
        if pending:
            query = query.where(q.c.status.in_(("new", "taken")))
        with self.engine.connect() as conn:
            return [request_of(r) for r in conn.execute(query).mappings().all()]
