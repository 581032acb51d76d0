"""The REST / CIMcloud side of a business check: a resource read page by page and aggregated here.

An API side (`resource`, `group`, `sum: FIELD` | `count: true`, `where: {field: value}`) has no
server-side GROUP BY: mapsync streams the resource through the same page listing as the REST and
CIMcloud sources (`RestSource._pages`; CIMcloud's `GET {resource}/{searchstring}/{page}`, 50 per
page, "modified since 1900" to read everything) on a connection opened like theirs, so every call
goes through the connection's `HttpClient` and its **shared call budget** (kept in the state store:
syncs, other processes and the check count against the one limit of the credential).

Public API (the business runner calls these through the callable helper "runner" builds):

- `aggregate_api(check_name, check, side, which, *, loaded, store) -> SideTotals`: opens the side's
  connection (as the connectors do, with `store` for the shared budget), aggregates it, closes it.
  `which` is "source" or "dest" (for messages).
- `aggregator(loaded, store) -> ApiAggregate`: `aggregate_api` bound to the sheet and the store, the
  `(check_name, check, side, which) -> SideTotals` callable `business.run_business` takes as `api`.
- `aggregate(check_name, check, side, which, handle) -> SideTotals`: the same on an open `RestHandle`.
- `estimate(check, side, connection, *, last_rows=None) -> (calls | None, text)`: said before the
  check starts. Neither CIMcloud nor a generic REST listing documents a record count, so without
  `last_rows` (the rows this side read last time: `CheckResult.read[which].rows` of the previous
  stored result) it is `(None, "at most max_calls N calls ...")`; with it, pages = rows // page + 1
  (a short page ends the listing; cursor/link listings: ceil(rows / page)), + 1 for a token login.

Aggregation: rows whose `where` fields all equal their values (compared as text, `rest.text.as_text`:
None → "", True → "1") are kept; the group is the group fields' values as text; `sum` adds
`Decimal(str(value))` (never a float; a missing or blank value adds 0; anything that is not a finite
number raises `errors.PermanentError` naming the check, side, field and the record's position and
id, never its values: the text becomes the run's message); `count`
counts kept rows. `SideTotals.read.rows` counts every record read (kept or not), `.bytes` the
answers' Content-Length (or the records' JSON length when absent), `.calls` every HTTP call the
side's client sent (a token login and retries included).

Caps and the shared budget (never a 429 of ours: every call waits in `Budget.acquire`):
- `max_calls`: checked before each page; when the calls spent reach it the listing stops:
  `complete=False`, note "stopped at max_calls N after M rows". A page's retries and the login
  count too, so the cap can be passed by those of the last page only.
- Yielding to syncs: before each page the budget's `remaining()` is read; the check leaves the last
  `reserve` (20 %) of every limit to the syncs (the last 20 of CIMcloud's 100/15m; nothing of 2/1s,
  whose pace `acquire` keeps). When a limit is down to its reserve, the check waits if that window
  resets within `max_wait` seconds (short windows), else stops: `complete=False`, note "yielded to
  syncs: ...". The budget has no reservations or priorities, so this is the check's own restraint.

Errors: `errors.ConfigError` for a side that is not an API side or a connection that is not REST or
CIMcloud; `errors.PermanentError` / `TransientError` from the HTTP client (redacted by it) and for
values that are not numbers. The caller turns them into `CheckResult.error`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import functools
import json
import math
import time
from collections.abc import Callable, Generator
from typing import Any

from mapsync import connectors, errors
from mapsync.cimcloud import search
from mapsync.cimcloud import source as cimcloud_source
from mapsync.cimcloud.source import PAGE
from mapsync.reconcile.results import Read, SideTotals
from mapsync.reconcile.translate import group_text
from mapsync.rest import source as rest_source
from mapsync.rest.budget import Budget
from mapsync.rest.source import RestHandle
from mapsync.rest.text import as_text
from mapsync.sheet import models
from mapsync.sheet.connection_models import CimcloudConnection, RestConnection
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.reconcile_models import ReconcileCheck, Side
from mapsync.state.ports import Store

RESERVE = 0.2  # the share of every budget limit left to the syncs
MAX_WAIT = 2.0  # seconds the check waits for a window to reset before it yields instead
_EPOCH = dt.datetime(1900, 1, 1)  # noqa: DTZ001 - CIMcloud pages only with a searchstring


@dataclasses.dataclass
class Pacing:
    """How the check shares the budget: the reserve left to syncs, the longest wait, the sleep."""

    reserve: float = RESERVE
    max_wait: float = MAX_WAIT
    sleep: Callable[[float], None] = time.sleep


def aggregate_api(
    check_name: str,
    check: ReconcileCheck,
    side: Side,
    which: str,
    *,
    loaded: LoadedSheet,
    store: Store | None,
    pacing: Pacing | None = None,
) -> SideTotals:
    """Open the side's connection like a sync does (the shared budget in `store`), aggregate, close."""
    cfg = loaded.sheet.connections.get(side.connection)
    if not isinstance(cfg, RestConnection | CimcloudConnection):
        raise errors.ConfigError(
            f"check {check_name}: {which}: connection {side.connection} is not a REST or CIMcloud connection"
        )
    handle = connectors.REGISTRY[cfg.kind].connect(side.connection, cfg, loaded.folder, store)
    try:
        if not isinstance(handle, RestHandle):
            raise errors.ConfigError(f"check {check_name}: {which}: connection {side.connection} is no API")
        return aggregate(check_name, check, side, which, handle, pacing)
    finally:
        handle.close()


def aggregator(
    loaded: LoadedSheet, store: Store | None, pacing: Pacing | None = None
) -> Callable[[str, ReconcileCheck, Side, str], SideTotals]:
    """`aggregate_api` bound to the sheet and the state store: `business.run_business`'s `api`."""
    return functools.partial(aggregate_api, loaded=loaded, store=store, pacing=pacing)


def aggregate(
    check_name: str,
    check: ReconcileCheck,
    side: Side,
    which: str,
    handle: RestHandle,
    pacing: Pacing | None = None,
) -> SideTotals:
    """Stream the side's resource from an open REST/CIMcloud handle and aggregate it per group."""
    if side.resource is None:
        raise errors.ConfigError(f"check {check_name}: {which} is not an API side (no `resource`)")
    pacing = pacing or Pacing()
    where = f"check {check_name}: {which}"
    client = handle.client
    start = client.calls
    totals: dict[tuple[str, ...], decimal.Decimal] = {}
    read = Read()
    note: str | None = None
    filters = side.where if isinstance(side.where, dict) else {}
    wanted = {field: as_text(value) for field, value in filters.items()}
    key_field = _key_field(handle, side)
    pages = _listing(handle, side.resource, where)
    try:
        while True:
            spent = client.calls - start
            if spent >= check.max_calls:
                note = f"stopped at max_calls {check.max_calls} after {read.rows} rows"
                break
            note = _yield_to_syncs(handle.budget, pacing)
            if note is not None:
                note = f"{note} after {read.rows} rows"
                break
            page = next(pages, None)
            if page is None:
                break
            read.bytes += _page_bytes(client.last_headers, page)
            for raw in page:
                read.rows += 1
                if not isinstance(raw, dict):
                    raise errors.TransientError(f"{where}: the API returned a record that is not an object")
                if any(as_text(raw.get(f)) != v for f, v in wanted.items()):
                    continue
                group = tuple(group_text(raw.get(f)) for f in side.group)  # as SQL groups are
                value = decimal.Decimal(1) if side.count else _number(raw, side, where, key_field, read.rows)
                totals[group] = totals.get(group, decimal.Decimal(0)) + value
    finally:
        pages.close()
    return SideTotals(totals, read, client.calls - start, complete=note is None, note=note)


def estimate(
    check: ReconcileCheck, side: Side, connection: models.Connection, *, last_rows: int | None = None
) -> tuple[int | None, str]:
    """How many calls the side will take, said before the check starts: `(calls, text)`, calls
    None when unknown (no record count: the listing runs until a short page, or `max_calls`)."""
    cap = check.max_calls
    if isinstance(connection, CimcloudConnection):
        size, style, login = PAGE, "page", connection.auth.type == "token"
        what = "CIMcloud documents no record count"
    elif isinstance(connection, RestConnection):
        paging = connection.paging
        size, style = paging.size, paging.style
        login = connection.auth is not None and connection.auth.type == "token"
        what = "the API gives no record count"
    else:
        raise errors.ConfigError(
            f"check side on connection {side.connection}: not a REST or CIMcloud connection"
        )
    if last_rows is None:
        return None, f"at most max_calls {cap} calls ({what}; {size} records per page)"
    if style == "none":
        pages = 1
    elif style in ("cursor", "link"):
        pages = max(1, math.ceil(last_rows / size))
    else:
        pages = last_rows // size + 1  # the short (or empty) page that ends the listing
    calls = pages + (1 if login else 0)
    text = f"about {calls} calls ({last_rows} records last time, {size} per page)"
    if calls > cap:
        return cap, f"{text}: more than max_calls {cap}, the check will stop there"
    return calls, text


# ----------------------------------------------------------------- internals


def _listing(handle: RestHandle, resource: str, where: str) -> Generator[list[Any]]:
    """The resource's pages through the same listing as the REST and CIMcloud sources (CIMcloud:
    everything modified since 1900, its only way to page)."""
    cfg = handle.cfg
    if isinstance(cfg, CimcloudConnection):
        name = resource.strip("/")
        text = search.at_least(cfg.modified_field, _EPOCH.strftime(cfg.date_format))
        yield from cimcloud_source.list_pages(handle.client, cfg.read_paths.get(name, name), text, where)
    else:
        yield from rest_source.list_pages(handle, resource, {}, where)


def _key_field(handle: RestHandle, side: Side) -> str | None:
    """The field that names a record in messages: CIMcloud's user key where configured."""
    cfg = handle.cfg
    if isinstance(cfg, CimcloudConnection):
        return cfg.keys.get((side.resource or "").strip("/"))
    return None


def _number(raw: dict[str, Any], side: Side, where: str, key_field: str | None, row: int) -> decimal.Decimal:
    field = side.sum or ""
    value = raw.get(field)
    if value is None or value == "":
        return decimal.Decimal(0)
    number: decimal.Decimal | None = None
    if not isinstance(value, bool | dict | list):
        try:
            number = decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            number = None
    if number is None or not number.is_finite():
        # the value and the group stay out: this text becomes the result's error and the run's
        # message, which carry no record values (only `alerts.include_values` lets values out)
        raise errors.PermanentError(
            f"{where}: {side.resource}: {_record_name(raw, key_field, row)}: field {field} is not a number",
            failure_class="source",
        )
    return number


def _record_name(raw: dict[str, Any], key_field: str | None, row: int) -> str:
    """`record 4 (username=C0001)`: its position in the listing and its identity, the user key
    (where configured) or the API's `key`/`id`; never its other values."""
    ident = next((f for f in (key_field, "key", "id") if f and as_text(raw.get(f))), None)
    return f"record {row}" + (f" ({ident}={as_text(raw.get(ident))})" if ident else "")


def _page_bytes(headers: dict[str, str], page: list[Any]) -> int:
    length = {k.lower(): v for k, v in headers.items()}.get("content-length", "")
    if length.isdigit():
        return int(length)
    return len(json.dumps(page, default=str))


def _yield_to_syncs(budget: Budget | None, pacing: Pacing) -> str | None:
    """None when the check may take its next call; else why it yields. Waits (up to
    `max_wait` per limit) when a limit at its reserve resets soon."""
    if budget is None:
        return None
    waited = 0.0
    while True:
        state = budget.remaining()
        short: tuple[str, int, int, float] | None = None
        for (count, _), lim in zip(budget.limits, state["limits"], strict=True):
            keep = int(count * pacing.reserve)
            if keep and lim["remaining"] <= keep:
                short = (lim["limit"], lim["remaining"], keep, float(lim["resets_in"]))
                break
        server = state.get("server_remaining")
        if short is None and server is not None and budget.limits:
            keep = int(budget.limits[-1][0] * pacing.reserve)
            if keep and server <= keep:
                short = ("the server's limit", server, keep, float(state.get("server_reset_in") or 0))
        if short is None:
            return None
        limit, left, keep, resets = short
        if resets <= pacing.max_wait and waited + resets <= 4 * pacing.max_wait:
            pacing.sleep(resets + 0.01)
            waited += resets + 0.01
            continue
        return (
            f"yielded to syncs: {limit} has {left} calls left, the last {keep} are theirs "
            f"(resets in {resets:.0f} s)"
        )
