"""The CIMcloud connector, following CIMcloud's public API docs (see docs/rest.md).

- Auth: `POST /{site}/authenticate` → a bearer token (7 days), renewed before `expiration`; or Basic.
- Reads: `GET /{site}/{resource}/{searchstring}/{page}`, 50 per page, page 1 first, until a short
  page (no count or next link is documented); incremental on `last_modify_date` (`>=`).
- Writes: POST = upsert, PUT = update only, keyed by the user key, values as strings, at most 10
  records per call (more would be queued asynchronously). The answer is trusted only when
  `success` is true and `importedRecords + updatedRecords == recordCountInRequest`; otherwise the
  call's records are read back by user key in one `|or|` GET and judged one by one.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapsync import crash, delivery, errors, records
from mapsync.cimcloud import search
from mapsync.cimcloud.orders import CimcloudOrdersSource
from mapsync.cimcloud.source import PAGE as PAGE
from mapsync.cimcloud.source import CimcloudSource
from mapsync.ports import Capabilities, Destination, Handle, Source
from mapsync.rest.async_delivery import JobState, Key, Row
from mapsync.rest.client import HttpClient, StaticAuth, TokenAuth, json_body, make_budget
from mapsync.rest.destination import RestDestination
from mapsync.rest.source import RestHandle
from mapsync.rest.text import as_text
from mapsync.sheet import models
from mapsync.sheet.connection_models import CimcloudConnection

if TYPE_CHECKING:
    from mapsync.state.ports import Store


def open_handle(name: str, cfg: CimcloudConnection, store: Any = None, **kwargs: Any) -> RestHandle:
    auth: Any
    if cfg.auth.type == "token":
        body = {
            "AuthKey": cfg.auth.auth_key,
            "AuthUserName": cfg.auth.username,
            "AuthPassword": cfg.auth.password,
        }
        auth = TokenAuth("authenticate", body, refresh_before=cfg.auth.refresh_before)
        secrets: tuple[str, ...] = (cfg.auth.auth_key, cfg.auth.password)
    else:
        auth = StaticAuth.basic(cfg.auth.username, cfg.auth.password)
        secrets = (cfg.auth.password,)
    credential = f"cimcloud:{cfg.base_url.rstrip('/')}/{cfg.site}:{cfg.auth.username}"
    client = HttpClient(
        name,
        f"{cfg.base_url.rstrip('/')}/{cfg.site}/",
        timeout=cfg.timeout,
        retry=cfg.retry,
        max_concurrency=cfg.max_concurrency,
        auth=auth,
        budget=make_budget(store, credential, cfg.budget),
        secrets=secrets,
        **kwargs,
    )
    return CimcloudHandle(name, cfg, client, store)


class CimcloudHandle(RestHandle):
    """A CIMcloud connection: a REST handle with CIMcloud's own `check`."""

    def check(self) -> dict[str, Any]:
        return check(self)


def check(handle: RestHandle) -> dict[str, Any]:
    """Reachability, credentials and health, without changing anything (for `mapsync check`).

    Costs up to four calls (canary, token, healthcheck, validate)."""
    client = handle.client
    out: dict[str, Any] = {"connection": handle.name, "kind": "cimcloud"}
    canary = client.request("GET", "healthcheck/canary", authenticate=False)
    out["reachable"] = canary.status_code == 200 and (json_body(canary) or {}).get("status") == "Running"
    try:
        health = client.request("GET", "healthcheck")
        out["health"] = json_body(health) if health.status_code == 200 else None
        valid = client.request("GET", "validate")
        out["auth_ok"] = valid.status_code == 200
    except errors.PermanentError as exc:  # 401/403: the credentials are refused
        out["health"], out["auth_ok"], out["error"] = None, False, str(exc)
    remaining = client.last_headers.get("x-ratelimit-remaining")
    out["budget_remaining"] = int(remaining) if remaining and remaining.isdigit() else None
    return out


class CimcloudDestination(RestDestination):
    """Writes to a CIMcloud resource: POST upserts, PUT updates, ≤ 10 records per call."""

    # no DELETE (deletes are written as `disable`)
    capabilities = Capabilities(async_jobs=True, bulk_write=True)

    def __init__(
        self, db: RestHandle, sync_name: str, cfg: models.SyncConfig, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(db, sync_name, cfg, secrets)
        conn: CimcloudConnection = db.cfg
        name = self.resource.strip("/")
        self.read_path = conn.read_paths.get(name, name)
        self.user_key = [conn.keys[name]] if name in conn.keys else self.key
        self.readbacks = 0  # read-backs after an answer that did not add up, for tests
        self.read_key = list(self.user_key)

    @property
    def batch(self) -> int:
        size: int = self.db.cfg.batch
        return size

    def payload(self, rec: records.Mapped) -> dict[str, Any]:
        """Only the fields the sheet owns, each as a string; NULL is `""` (clears the field)."""
        return {k: as_text(v) for k, v in rec.values.items()}

    def send(self, op: str, recs: list[records.Mapped]) -> list[records.Rejection]:
        if op == "delete":
            raise errors.PermanentError(f"sync {self.sync}: CIMcloud documents no DELETE (use `disable`)")
        self.attempts += 1
        method = "POST" if op == "upsert" else "PUT"
        body = [self.payload(r) for r in recs]
        resp = self.client.request(method, self.resource, json=body)
        crash.point("during_write")  # this call applied, the batch not yet confirmed
        answer = json_body(resp)
        if resp.status_code < 300 and isinstance(answer, dict) and answer.get("success") is True:
            done = _int(answer.get("importedRecords")) + _int(answer.get("updatedRecords"))
            if done == len(recs) and _int(answer.get("recordCountInRequest")) == len(recs):
                return []
        reason = self._reason(resp.status_code, answer, resp.text)
        return self._read_back(recs, body, reason)

    def _reason(self, status: int, answer: Any, text: str) -> str:
        if isinstance(answer, dict):
            message = answer.get("message") or (
                f"success={answer.get('success')}, imported={answer.get('importedRecords')}, "
                f"updated={answer.get('updatedRecords')} of {answer.get('recordCountInRequest')}"
            )
            return f"HTTP {status}: {self.client.shown(str(message))}"
        return f"HTTP {status}: unreadable answer: {self.client.shown(text)}"

    def _read_back(
        self, recs: list[records.Mapped], sent: list[dict[str, str]], reason: str
    ) -> list[records.Rejection]:
        """One `|or|` GET by user key; a record counts as delivered only if it reads back as sent."""
        self.readbacks += 1
        fields = self.user_key
        keys = [[row.get(f, "") for f in fields] for row in sent]
        path = f"{self.read_path}/{search.keys(fields, keys)}/1"
        resp = self.client.request("GET", path)
        found = json_body(resp)
        if resp.status_code == 404:
            found = []
        if (resp.status_code >= 400 and resp.status_code != 404) or not isinstance(found, list):
            raise errors.TransientError(
                f"sync {self.sync}: reading back a doubtful write failed (HTTP {resp.status_code}); "
                f"the write answered {reason}"
            )
        by_key = {tuple(as_text(r.get(f)) for f in fields): r for r in found if isinstance(r, dict)}
        out = []
        for rec, row in zip(recs, sent, strict=True):
            current = by_key.get(tuple(row.get(f, "") for f in fields))
            if current is None:
                problem = "not found when read back"
            else:
                diff = sorted(k for k, v in row.items() if as_text(current.get(k)) != v)
                if not diff:
                    continue
                problem = f"read back with other values in {', '.join(diff)}"
            message = f"CIMcloud did not apply the record ({problem}); it answered {reason}"
            out.append(records.Rejection(rec.key, message, None, "destination", rec.version))
        return out

    # ----------------------------------------------------------------- the > 10 queue (async mode)

    def _async_call(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        """Up to 10 records are written synchronously (CIMcloud queues only more than 10)."""
        if len(recs) <= self.batch:
            return self._call(recs, fresh)
        return super()._async_call(recs, fresh)

    def _submit(self, op: str, payloads: list[dict[str, Any]], batch_id: str) -> str | None:
        """POST/PUT of > 10 records: queued. The answer is not documented (INFERRED: 202 or 200
        with `action: "Queued"`; a `jobId` only under `async_contract: jobs`)."""
        method = "POST" if op == "upsert" else "PUT"
        self.attempts += 1
        resp = self.client.request(method, self.resource, json=payloads)
        answer = json_body(resp)
        if resp.status_code >= 400:
            raise delivery.Refused(self._reason(resp.status_code, answer, resp.text))
        job = answer.get("jobId") if isinstance(answer, dict) else None
        if self.db.cfg.async_contract == "jobs" and job:
            return str(job)
        return None  # confirmed by reading back by user key

    def _job_state(self, job_id: str) -> JobState:
        """INFERRED contract (`async_contract: jobs`): `GET jobs/{id}` → status and the answer."""
        body = self._job_body(f"jobs/{urllib.parse.quote(job_id, safe='')}", job_id, "CIMcloud")
        if isinstance(body, JobState):
            return body
        if str(body.get("status", "")).lower() not in ("done", "completed", "failed"):
            return JobState("running")
        answers = body.get("results") if isinstance(body.get("results"), list) else []
        answer = answers[-1] if answers and isinstance(answers[-1], dict) else {}
        done = _int(answer.get("importedRecords")) + _int(answer.get("updatedRecords"))
        count = _int(answer.get("recordCountInRequest"))
        if answer.get("success") is True and done == count and count > 0:
            return JobState("done")
        # as for a synchronous answer that does not add up: read back by user key, never guess
        return JobState("check", reason=f"the job answered {self._reason(200, answer, '')}")

    def _fetch_back(self, keys: Sequence[Key]) -> dict[Key, Row]:
        """One `|or|` GET by user key (≤ 50 keys: one page)."""
        path = f"{self.read_path}/{search.keys(self.read_key, keys)}/1"
        resp = self.client.request("GET", path)
        found = [] if resp.status_code == 404 else json_body(resp)
        if (resp.status_code >= 400 and resp.status_code != 404) or not isinstance(found, list):
            raise errors.TransientError(
                f"sync {self.sync}: reading an async batch back failed (HTTP {resp.status_code})"
            )
        rows = (r for r in found if isinstance(r, dict))
        return {tuple(as_text(r.get(f)) for f in self.read_key): r for r in rows}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class CimcloudConnector:
    def connect(self, name: str, cfg: models.Connection, folder: Path, store: Store | None = None) -> Handle:
        if not isinstance(cfg, CimcloudConnection):
            raise errors.ConfigError(f"connection {name}: not a CIMcloud connection ({type(cfg).__name__})")
        return open_handle(name, cfg, store)

    def source(self, handle: Handle, sync: str, cfg: models.SyncConfig, version_column: str | None) -> Source:
        if not isinstance(handle, RestHandle):
            raise errors.ConfigError(
                f"sync {sync}: the CIMcloud source needs a CIMcloud connection: got {type(handle).__name__}"
            )
        if cfg.changes.method == "export_flag":  # the order export: read through the inbox only
            return CimcloudOrdersSource(handle, sync, cfg, version_column)
        return CimcloudSource(handle, sync, cfg, version_column)

    def destination(
        self, handle: Handle, sync: str, cfg: models.SyncConfig, secrets: tuple[str, ...]
    ) -> Destination:
        if not isinstance(handle, RestHandle):
            raise errors.ConfigError(
                f"sync {sync}: the destination is not a CIMcloud connection ({type(handle).__name__})"
            )
        return CimcloudDestination(handle, sync, cfg, secrets)
