"""RestDestination: the writing side of a sync over a REST API.

Same interface as SqlDestination (`columns`, `child_columns()`, `is_empty()`, `write()`). A REST
API has no catalog: the columns come from the sheet (untyped, no length: use `truncate: N`).
Records go N per call (a JSON array); per-record results are read from the answer where the API
gives them (`write.results`). A 4xx that refuses a whole call without per-record results is
split by `delivery.isolate` until the record at fault stands alone, its error carrying the
server's message (redacted, capped).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import urllib.parse
from collections.abc import Sequence
from typing import Any

from mapsync import crash, delivery, errors, records
from mapsync.connectors.sql import ColumnInfo
from mapsync.rest.client import json_body
from mapsync.rest.source import RestHandle, _dig
from mapsync.sheet import models


def as_text(value: Any) -> str:
    """A value as the string an API that wants strings expects; NULL is `""` (clears it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def sheet_columns(cfg: models.SyncConfig) -> dict[str, ColumnInfo]:
    """Destination columns as the sheet names them: untyped, nullable, no length."""
    names = [*cfg.key.to, *cfg.fields]
    if cfg.deletes.policy == "disable" and cfg.deletes.field:
        names.append(cfg.deletes.field)
    return {n: ColumnInfo(n, None, None, True, False, False, "text") for n in names}


class RestDestination:
    """The destination side of one sync over a generic REST API."""

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
        return delivery.deliver(batch, self._call)

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
        results = _dig(json_body(resp), cfg.results)
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
