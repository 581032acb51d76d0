"""RestDestination: the writing side of a sync over a REST API.

Same interface as SqlDestination (`columns`, `child_columns()`, `is_empty()`, `write()`). A REST
API has no catalog: the columns come from the sheet, typed and with lengths where `to: columns:`
declares them (so `truncate: auto` and the constraint checks work), else untyped.
Records go N per call (a JSON array); per-record results are read from the answer where the API
gives them (`write.results`). A 4xx that refuses a whole call without per-record results is
split by `delivery.isolate` until the record at fault stands alone, its error carrying the
server's message (redacted, capped).
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Sequence
from typing import Any

from mapsync import crash, delivery, errors, records
from mapsync.columns import ColumnInfo
from mapsync.ports import Capabilities, DestinationBase
from mapsync.rest.async_delivery import AsyncDelivery, JobState, Key, Row
from mapsync.rest.client import json_body
from mapsync.rest.source import RestHandle, dig
from mapsync.rest.text import as_text
from mapsync.sheet import column_models, models


def sheet_columns(cfg: models.SyncConfig) -> dict[str, ColumnInfo]:
    """Destination columns as the sheet names them; typed, with length and NOT NULL where the
    sheet declares them under `to: columns:`, else untyped, nullable, no length."""
    names = [*cfg.key.to, *cfg.fields]
    if cfg.deletes.policy == "disable" and cfg.deletes.field:
        names.append(cfg.deletes.field)
    declared = cfg.to.columns
    return {
        n: declared_column(n, declared[n])
        if n in declared
        else ColumnInfo(n, None, None, True, False, False, "text")
        for n in names
    }


def declared_column(name: str, col: column_models.DestColumn) -> ColumnInfo:
    """A column the sheet declares, as the `ColumnInfo` the constraint checks take."""
    shown: str = col.type
    if col.length is not None:
        shown = f"{col.type}({col.length})"
    elif col.precision is not None:
        shown = f"{col.type}({col.precision},{col.scale or 0})"
    return ColumnInfo(
        name,
        column_models.PYTHON_TYPES[col.type],
        col.length,
        not col.required,
        False,
        False,
        shown,
        precision=col.precision,
        scale=col.scale,
    )


class RestDestination(AsyncDelivery, DestinationBase):
    """The destination side of one sync over a generic REST API (`delivery.mode: async`: see
    `mapsync.rest.async_delivery`, with the job API of `delivery.jobs`)."""

    # async jobs: `begin(kind)` picks the run's mode and settles batches a crash left unfinished
    capabilities = Capabilities(deletes=True, async_jobs=True, bulk_write=True)

    def __init__(
        self, db: RestHandle, sync_name: str, cfg: models.SyncConfig, secrets: tuple[str, ...] = ()
    ) -> None:
        self.db = db
        self.client = db.client
        self.sync = sync_name
        self.resource = cfg.to.resource or ""
        self.key = list(cfg.key.to)
        self.secrets = secrets
        self.client.secrets = tuple(dict.fromkeys((*self.client.secrets, *secrets)))
        self.columns: dict[str, ColumnInfo] = sheet_columns(cfg)
        self.attempts = 0  # calls made, for tests and benchmarks
        self.store = db.store
        self.delivery_cfg = cfg.delivery
        self.async_mode = cfg.delivery.mode == "async"
        self.read_key = list(self.key)
        self.sleep = self.client.sleep
        self.settled = {}
        self.polls = self.submits = 0

    @property
    def batch(self) -> int:
        size: int = self.db.cfg.write.batch
        return size

    def child_columns(self) -> dict[str, dict[str, ColumnInfo]]:
        return {}

    def is_empty(self) -> bool:
        """Never claimed: a fresh seed changes nothing for an API, and asking costs a call."""
        return False

    def write(self, batch: Sequence[records.Mapped], *, fresh: bool = False) -> records.WriteResult:
        return delivery.deliver(batch, self._async_call if self.async_mode else self._call)

    def _call(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        """Every record of `recs`, N per API call, grouped by operation."""
        rejected: list[records.Rejection] = []
        for op in ("upsert", "update", "delete"):
            todo = [r for r in recs if r.op == op]
            for i in range(0, len(todo), self.batch):
                chunk = todo[i : i + self.batch]
                result = delivery.isolate(chunk, functools.partial(self._one, op))
                rejected.extend(result.rejected)
        return rejected

    def _one(self, op: str, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        return self.send(op, recs)

    def payload(self, rec: records.Mapped) -> dict[str, Any]:
        return dict(rec.values)

    def send(self, op: str, recs: list[records.Mapped]) -> list[records.Rejection]:
        """One API call for `recs`; raises `delivery.Refused` when a 4xx refuses the whole call."""
        cfg = self.db.cfg.write
        self.attempts += 1
        if op == "delete":
            for rec in recs:  # one call per record: a DELETE has no body
                key = urllib.parse.quote(",".join(str(v) for v in rec.dest_key), safe="")
                path = cfg.delete_path.format(resource=self.resource.strip("/"), key=key)
                resp = self.client.request("DELETE", path)
                if resp.status_code >= 400 and resp.status_code != 404:
                    raise delivery.Refused(f"HTTP {resp.status_code}: {self.client.shown(resp.text)}")
            return []
        method = cfg.method if op == "upsert" else cfg.update_method
        body: Any = [self.payload(r) for r in recs] if cfg.batch > 1 else self.payload(recs[0])
        resp = self.client.request(method, self.resource, json=body)
        crash.point("during_write")  # this call applied, the batch not yet confirmed
        if resp.status_code >= 400:
            raise delivery.Refused(f"HTTP {resp.status_code}: {self.client.shown(resp.text)}")
        if not cfg.results:
            return []
        results = dig(json_body(resp), cfg.results)
        if not isinstance(results, list) or len(results) != len(recs):
            raise errors.TransientError(
                f"sync {self.sync}: {method} {self.resource}: the answer holds no result per record"
            )
        out = []
        for rec, res in zip(recs, results, strict=True):
            ok = isinstance(res, dict) and res.get("ok", True) is not False and not res.get("error")
            if not ok:
                reason = res.get("error") or res.get("message") if isinstance(res, dict) else res
                message = f"destination refused the record: {self.client.shown(str(reason))}"
                out.append(records.Rejection(rec.key, message, None, "destination", rec.version))
        return out

    # ----------------------------------------------------------------- the job API (async mode)

    def _submit(self, op: str, payloads: list[dict[str, Any]], batch_id: str) -> str | None:
        cfg, jobs = self.db.cfg.write, self.delivery_cfg.jobs
        method = cfg.method if op == "upsert" else cfg.update_method
        headers = {jobs.batch_header: batch_id} if jobs and jobs.batch_header else None
        self.attempts += 1
        resp = self.client.request(method, self.resource, json=payloads, headers=headers)
        if resp.status_code >= 400:
            raise delivery.Refused(f"HTTP {resp.status_code}: {self.client.shown(resp.text)}")
        job = dig(json_body(resp), jobs.job_id if jobs else "job_id")
        if job in (None, ""):
            raise errors.TransientError(
                f"sync {self.sync}: {method} {self.resource}: the answer holds no job id "
                f"(HTTP {resp.status_code}: {self.client.shown(resp.text)}); the batch is read back "
                "by key on the next run"
            )
        return str(job)

    def _job_state(self, job_id: str) -> JobState:
        jobs = self.delivery_cfg.jobs
        assert jobs is not None  # checked with the sheet: async REST needs `delivery.jobs`
        body = self._job_body(jobs.status_path.format(job=urllib.parse.quote(job_id, safe="")), job_id)
        if isinstance(body, JobState):
            return body
        state = str(dig(body, jobs.status_field) or "").lower()
        if state in (s.lower() for s in jobs.failed):
            reason = body.get("error") or body.get("message") or state
            return JobState("failed", reason=self.client.shown(str(reason)))
        if state not in (s.lower() for s in jobs.done):
            return JobState("running")
        if not jobs.results:
            return JobState("done")
        results = dig(body, jobs.results)
        if not isinstance(results, list):
            return JobState("check", reason=f"job {job_id} finished without per-record results")
        return JobState("done", [self._refusal(r) for r in results])

    def _job_body(self, path: str, job_id: str, server: str = "the server") -> dict[str, Any] | JobState:
        """The job's status answer (a JSON object), or `expired` when the server forgot the job;
        any other failure stops the run (the batch stays unfinished and is settled later)."""
        resp = self.client.request("GET", path)
        if resp.status_code in (404, 410):
            return JobState("expired", reason=f"job {job_id} unknown to {server} (HTTP {resp.status_code})")
        body = json_body(resp)
        if resp.status_code >= 400 or not isinstance(body, dict):
            raise errors.TransientError(
                f"sync {self.sync}: job {job_id}: HTTP {resp.status_code}: {self.client.shown(resp.text)}"
            )
        return body

    def _refusal(self, res: Any) -> str | None:
        ok = isinstance(res, dict) and res.get("ok", True) is not False and not res.get("error")
        if ok:
            return None
        reason = (res.get("error") or res.get("message")) if isinstance(res, dict) else res
        return f"destination refused the record: {self.client.shown(str(reason))}"

    def _fetch_back(self, keys: Sequence[Key]) -> dict[Key, Row]:
        param = self.db.cfg.key_param
        if not param or len(self.read_key) != 1:
            raise errors.TransientError(
                f"sync {self.sync}: cannot read an async batch back by key: the connection needs "
                "`key_param` (and a single-column key); the batch stays unfinished"
            )
        value = ",".join(k[0] for k in keys)
        resp = self.client.request("GET", self.resource, params={param: value})
        body = dig(json_body(resp), self.db.cfg.paging.items)
        if resp.status_code >= 400 or not isinstance(body, list):
            raise errors.TransientError(
                f"sync {self.sync}: reading an async batch back failed (HTTP {resp.status_code})"
            )
        rows = (r for r in body if isinstance(r, dict))
        return {tuple(as_text(r.get(f)) for f in self.read_key): r for r in rows}
