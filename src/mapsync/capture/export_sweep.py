"""The API side of the lost-order sweep (`mapsync sweep`, `sweep_plan.SweepPlan`): CIMcloud's
standard Orders resource read by searchstring for orders marked exported since a moment.

`GET {write_back.resource}/searchexact~{flag}~{done}|and|searchgreatherthanequal~{created}~{date}/{page}`,
50 per page (CIMcloud's page size), the date in the connection's `date_format`. Each read is one
call of the connection's budget; the plan decides how many it may send."""

from __future__ import annotations

import datetime as dt

from mapsync import errors
from mapsync.cimcloud import search
from mapsync.cimcloud.source import PAGE
from mapsync.rest.client import json_body
from mapsync.rest.source import RestHandle
from mapsync.rest.text import as_text
from mapsync.sheet.export_models import ExportFlagChanges
from mapsync.sheet.export_rest_models import ExportSweep, ExportWriteBack

__all__ = ["PAGE", "OrderSweep"]


class OrderSweep:
    """Reads the orders marked exported at the API, one page per call."""

    page_size = PAGE

    def __init__(
        self,
        handle: RestHandle,
        sync: str,
        cfg: ExportFlagChanges,
        target: ExportWriteBack,
        key_field: str,
    ) -> None:
        self.db, self.sync, self.cfg, self.target, self.key_field = handle, sync, cfg, target, key_field
        self.settings = cfg.sweep or ExportSweep()
        self.calls = 0

    def budget_left(self) -> str:
        """What the connection's call budget has left, for the sweep's plan line."""
        budget = getattr(self.db, "budget", None)
        if budget is None:
            return "no client-side budget configured"
        left = budget.remaining()
        shown = [f"{x['remaining']} of {x['limit']}" for x in left.get("limits", [])]
        return ", ".join(shown) or "no limits"

    def searchstring(self, since: dt.datetime) -> str:
        date_format: str = getattr(self.db.cfg, "date_format", "%Y-%m-%dT%H:%M:%S")
        return search.all_of(
            search.exact(self.cfg.flag, self.cfg.done),
            search.at_least(self.settings.created, since.strftime(date_format)),
        )

    def read(self, since: dt.datetime, page: int) -> list[tuple[str, str]]:
        """One page of orders marked exported and created since `since`: (order number, created)."""
        path = f"{self.target.resource.strip('/')}/{self.searchstring(since)}/{page}"
        resp = self.db.client.request("GET", path)
        self.calls += 1
        found = [] if resp.status_code == 404 else json_body(resp)
        if (resp.status_code >= 400 and resp.status_code != 404) or not isinstance(found, list):
            raise errors.TransientError(
                f"sync {self.sync}: the sweep's read of {self.target.resource} failed (HTTP "
                f"{resp.status_code}): {self.db.client.shown(resp.text)}",
                failure_class="source",
            )
        out: list[tuple[str, str]] = []
        for row in found:
            if isinstance(row, dict) and as_text(row.get(self.key_field)):
                out.append((as_text(row.get(self.key_field)), as_text(row.get(self.settings.created))))
        return out
