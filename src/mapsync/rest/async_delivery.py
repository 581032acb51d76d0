"""Asynchronous delivery (`delivery.mode: async`) for REST destinations with a job API and CIMcloud.

The order that makes a crash harmless, per submitted batch of `async_batch` records:

1. `async_batches.record` persists a client batch id, the records' read-back keys and the hash
   of each record sent, *before* the submit (crash point `after_async_record`);
2. the submit; the job id (if the API gives one) is persisted as soon as it returns
   (`async_batches.submitted`, crash point `after_async_submit`);
3. the job is polled (bounded, backoff from `poll_every` doubling to 30 s, every call under the
   call budget) until it is done, or the batch is read back by key and compared with what was
   sent; per-record results become a `records.WriteResult`; `async_batches.finish`.

A run that finds unfinished batches of its sync (`begin`, called by the engine before reading)
settles them first: a job id is looked up; only a batch id (or an expired job) is read back by
key. The outcome is kept per record: when the engine re-reads the same rows (its cursor did not
move), a record that the destination already holds as it would be sent now — or that the job
confirmed for the same hash — counts as delivered without a call; only records missing or
different are resubmitted. Nothing is resubmitted blindly. A job that does not finish within
`async_timeout` fails the run (TransientError); the batch stays unfinished for the next run.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from mapsync import crash, delivery, errors, records
from mapsync.rest.text import as_text
from mapsync.state import async_batches

MAX_POLL_WAIT = 30.0
STALL_POLLS = 3  # read-backs without progress before a partly applied batch counts as settled
Key = tuple[str, ...]
Row = dict[str, Any]


def text(value: Any) -> str:
    """A value as compared on read-back: strings, NULL as `""`, booleans as 1/0."""
    return as_text(value)


@dataclasses.dataclass
class JobState:
    """What a job endpoint says: running | done | failed | expired | check (read back)."""

    status: str
    results: list[str | None] | None = None  # per record: None = applied, text = refused
    reason: str = ""


@dataclasses.dataclass
class _Started:
    """A batch submitted and persisted, its results not yet known."""

    batch_id: str
    job_id: str | None
    recs: list[records.Mapped]
    keys: list[Key]
    payloads: list[dict[str, Any]]


@dataclasses.dataclass
class Settled:
    """How one record of an unfinished batch ended, as learned by a recovery."""

    sent_hash: str | None
    row: Row | None = None  # read back (None: missing, or not read back)
    read_back: bool = False
    refused: str | None = None  # the job refused it, with this message
    applied: bool = False  # the job applied it


class AsyncDelivery:
    """Mixed into RestDestination; the subclass gives `_submit`, `_job_state`, `_fetch_back`."""

    sync: str
    store: Any
    delivery_cfg: Any
    async_mode: bool
    read_key: list[str]
    sleep: Callable[[float], None]
    settled: dict[str, Settled]
    polls: int  # job polls and read-back GETs of async batches, for tests and benchmarks
    submits: int

    # ---------------------------------------------------------------- hooks of the subclass

    def payload(self, rec: records.Mapped) -> dict[str, Any]:
        raise NotImplementedError

    def _submit(self, op: str, payloads: list[dict[str, Any]], batch_id: str) -> str | None:
        """Send one batch; the job id, or None when the API gives none. Raises delivery.Refused
        when the whole call is refused (nothing applied)."""
        raise NotImplementedError

    def _job_state(self, job_id: str) -> JobState:
        raise NotImplementedError

    def _fetch_back(self, keys: Sequence[Key]) -> dict[Key, Row]:
        """The destination's current records of these read-back keys (missing ones absent)."""
        raise NotImplementedError

    def _call(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        raise NotImplementedError

    # ---------------------------------------------------------------- the run

    def begin(self, kind: str) -> None:
        """Start of every run (called by the engine's run scope; the destination serves every
        run of its sync): pick the mode, and for seed | run | overlap settle what a crash left
        (a retry starts as a new destination would: the sheet's mode, nothing settled)."""
        d = self.delivery_cfg
        self.settled = {}
        if kind == "retry":
            self.async_mode = d.mode == "async"
            return
        mode = (d.seed_mode or d.mode) if kind == "seed" else d.mode
        self.async_mode = mode == "async"
        if self.store is None:
            if self.async_mode:
                raise errors.ConfigError(f"sync {self.sync}: async delivery needs the state store")
            return
        for batch in async_batches.unfinished(self.store, self.sync):
            self._recover(batch)

    def rb_key(self, payload: dict[str, Any]) -> Key:
        return tuple(text(payload.get(f)) for f in self.read_key)

    def _async_call(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        """One engine write in async mode: recovered records first, then jobs of `async_batch`."""
        rejected: list[records.Rejection] = []
        todo: list[records.Mapped] = []
        for rec in recs:
            if rec.op == "delete":
                todo.append(rec)
                continue
            payload = self.payload(rec)
            known = self.settled.pop(records.key_text(self.rb_key(payload)), None)
            verdict = _judge(known, rec, payload) if known is not None else "send"
            if verdict == "send":
                todo.append(rec)
            elif verdict != "delivered":
                rejected.append(records.Rejection(rec.key, verdict, None, "destination", rec.version))
        deletes = [r for r in todo if r.op == "delete"]
        if deletes:
            rejected.extend(self._call(deletes, fresh))
        size = min(self.delivery_cfg.async_batch, self.delivery_cfg.batch)
        for op in ("upsert", "update"):
            group = [r for r in todo if r.op == op]
            # every batch of this write is submitted before the first is awaited: the
            # destination's queue works on them together
            started: list[_Started] = []
            for i in range(0, len(group), size):
                chunk = group[i : i + size]
                try:
                    started.append(self._start(op, chunk))
                except delivery.Refused as exc:  # refused as a whole: find the record(s) at fault
                    rejected.extend(self._split(op, chunk, exc.reason))
            for job in started:
                rejected.extend(self._complete(job))
        return rejected

    def _split(self, op: str, recs: list[records.Mapped], reason: str) -> list[records.Rejection]:
        if len(recs) == 1 or not delivery.splitting():  # alone, or the breaker is open
            return delivery.refused_all(recs, reason)
        mid = len(recs) // 2
        call = functools.partial(self._job_call, op)
        return delivery.isolate(recs[:mid], call).rejected + delivery.isolate(recs[mid:], call).rejected

    def _job_call(self, op: str, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        return self._complete(self._start(op, recs))

    def _start(self, op: str, recs: list[records.Mapped]) -> _Started:
        """Persist the batch, submit it, persist its job id."""
        payloads = [self.payload(r) for r in recs]
        keys = [self.rb_key(p) for p in payloads]
        sent = {records.key_text(k): r.hash for k, r in zip(keys, recs, strict=True)}
        batch_id = async_batches.record(self.store, self.sync, keys, sent=sent)
        crash.point("after_async_record")
        try:
            job_id = self._submit(op, payloads, batch_id)
        except delivery.Refused as exc:  # refused as a whole: nothing was applied
            async_batches.finish(self.store, batch_id, "failed", {"refused": exc.reason})
            raise
        self.submits += 1
        async_batches.submitted(self.store, batch_id, job_id)
        crash.point("after_async_submit")
        return _Started(batch_id, job_id, recs, keys, payloads)

    def _complete(self, job: _Started) -> list[records.Rejection]:
        """Wait for a submitted batch; its per-record results, persisted."""
        outcome = self._await(job.batch_id, job.job_id, job.keys, job.payloads)
        results = {records.key_text(k): outcome[k] for k in job.keys}
        async_batches.finish(self.store, job.batch_id, "done", results)
        out = []
        for rec, key in zip(job.recs, job.keys, strict=True):
            if outcome[key] is not None:
                out.append(records.Rejection(rec.key, str(outcome[key]), None, "destination", rec.version))
        return out

    # ---------------------------------------------------------------- waiting for a batch

    def _waits(self, what: str) -> Any:
        """Sleeps before each poll, doubling; TransientError once `async_timeout` is spent."""
        deadline = time.monotonic() + self.delivery_cfg.async_timeout.total_seconds()
        wait = self.delivery_cfg.poll_every.total_seconds()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.TransientError(
                    f"sync {self.sync}: {what} not finished after "
                    f"{self.delivery_cfg.async_timeout}; it stays unfinished and the next run resumes "
                    "it (nothing is resubmitted blindly)"
                )
            self.sleep(min(wait, left))
            yield
            wait = min(wait * 2, MAX_POLL_WAIT)

    def _await(
        self, batch_id: str, job_id: str | None, keys: list[Key], payloads: list[dict[str, Any]]
    ) -> dict[Key, str | None]:
        """Per read-back key: None (applied as sent) or the reason it was not."""
        what = f"async batch {batch_id}" + (f" (job {job_id})" if job_id else "")
        state = self._poll(job_id, what) if job_id else JobState("check", reason="no job id")
        if state.status == "done":
            results = state.results or [None] * len(keys)
            if len(results) != len(keys):
                raise errors.TransientError(f"sync {self.sync}: {what}: not one result per record")
            return dict(zip(keys, results, strict=True))
        if state.status == "failed":
            return dict.fromkeys(keys, f"destination refused the job: {state.reason}")
        # no job id, an expired job, or a job answer that does not add up: read back by key
        expected = dict(zip(keys, payloads, strict=True))
        once = job_id is not None  # the job ended (or expired): what is there now is final
        rows = self._read_until(what, keys, lambda k, row: _same(expected[k], row), patient=True, once=once)
        out: dict[Key, str | None] = {}
        for key in keys:
            row = rows.get(key)
            if row is not None and _same(expected[key], row):
                out[key] = None
                continue
            problem = "not found when read back" if row is None else "read back with other values in "
            if row is not None:
                problem += ", ".join(
                    sorted(k for k, v in expected[key].items() if text(row.get(k)) != text(v))
                )
            note = f"; {state.reason}" if state.reason else ""
            out[key] = f"the destination did not apply the record ({problem}){note}"
        return out

    def _poll(self, job_id: str, what: str) -> JobState:
        for _ in self._waits(what):
            self.polls += 1
            state = self._job_state(job_id)
            if state.status != "running":
                return state
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_until(
        self,
        what: str,
        keys: list[Key],
        ok: Callable[[Key, Row], bool],
        *,
        patient: bool,
        once: bool = False,
    ) -> dict[Key, Row]:
        """Read back until every key is `ok`, or the batch stopped progressing. `patient`: while
        nothing at all is applied, keep waiting (the queue has not run yet) until the timeout.
        `once`: one read (the job is over, nothing more will change)."""
        if once:
            return self._fetch(keys)
        best = -1
        stalled = 0
        rows: dict[Key, Row] = {}
        todo = list(keys)  # keys not yet read back as expected: only these are read again
        for _ in self._waits(what):
            if patient and best <= 0 and len(todo) > 50:
                # nothing applied yet: probe one page before reading the whole batch
                probe = self._fetch(todo[:50])
                if not any(ok(k, r) for k, r in probe.items()):
                    continue
            rows.update(self._fetch(todo))
            todo = [k for k in todo if not (k in rows and ok(k, rows[k]))]
            good = len(keys) - len(todo)
            if not todo:
                return rows
            stalled = stalled + 1 if good <= best else 0
            best = max(best, good)
            if stalled >= (STALL_POLLS if (good or not patient) else 10**9):
                return rows
        return rows  # pragma: no cover

    def _fetch(self, keys: list[Key]) -> dict[Key, Row]:
        out: dict[Key, Row] = {}
        for i in range(0, len(keys), 50):
            self.polls += 1
            out.update(self._fetch_back(keys[i : i + 50]))
        return out

    # ---------------------------------------------------------------- recovery

    def _recover(self, batch: dict[str, Any]) -> None:
        keys: list[Key] = [tuple(str(v) for v in k) for k in batch["keys"]]
        sent: dict[str, str] = (batch.get("results") or {}).get("sent") or {}
        what = f"async batch {batch['batch_id']} left by an earlier run"
        state = JobState("check")
        if batch["job_id"]:
            state = self._poll(batch["job_id"], what + f" (job {batch['job_id']})")
        settled: dict[str, Settled] = {}
        if state.status == "done" and state.results is not None and len(state.results) == len(keys):
            for key, res in zip(keys, state.results, strict=True):
                kt = records.key_text(key)
                settled[kt] = Settled(sent.get(kt), refused=res, applied=res is None)
        elif state.status == "done" and state.results is None:
            for key in keys:
                kt = records.key_text(key)
                settled[kt] = Settled(sent.get(kt), applied=True)
        elif state.status == "failed":
            for key in keys:
                kt = records.key_text(key)
                settled[kt] = Settled(sent.get(kt), refused=f"destination refused the job: {state.reason}")
        else:  # only a batch id, an expired job, or an answer to check: read back by key
            # one read when the job is over (expired) or the submit may never have left
            # (`pending`); a batch queued without a job id is read until it stops progressing
            once = bool(batch["job_id"]) or batch["status"] == "pending"
            rows = self._read_until(what, keys, lambda k, row: True, patient=False, once=once)
            for key in keys:
                kt = records.key_text(key)
                settled[kt] = Settled(sent.get(kt), row=rows.get(key), read_back=True)
        self.settled.update(settled)
        summary = {
            kt: {"found": s.row is not None, "applied": s.applied, "refused": s.refused}
            if not s.read_back
            else {"found": s.row is not None}
            for kt, s in settled.items()
        }
        async_batches.finish(self.store, batch["batch_id"], "done", {"recovered": summary})


def _same(payload: dict[str, Any], row: Row) -> bool:
    return all(text(row.get(k)) == text(v) for k, v in payload.items())


def _judge(known: Settled, rec: records.Mapped, payload: dict[str, Any]) -> str:
    """`delivered`, `send`, or a rejection message, for a record a recovery settled."""
    if known.read_back:
        return "delivered" if known.row is not None and _same(payload, known.row) else "send"
    if known.sent_hash is None or known.sent_hash != rec.hash:
        return "send"  # the job was about another version of the record
    if known.applied:
        return "delivered"
    return known.refused or "send"
