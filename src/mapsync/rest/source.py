"""RestSource: the reading side of a sync over a REST API.

It offers the surface the capture methods use on a SQL source (`stream`, `col`, `ts_bound`,
`key_of`, `read_keys`, `count`, and `db.now()` / `db.zone()`), so `changes: watermark` and
`full` work unchanged: the watermark's `column >= lower` becomes the API's own filter
(inclusive), everything else (`<= upper`, the keyset position, the order) is applied here, on
the records the API returned. APIs rarely sort, so one read is gathered, then sorted.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mapsync import errors, records
from mapsync.ports import Capabilities
from mapsync.rest import origins
from mapsync.rest.budget import Budget
from mapsync.rest.client import HttpClient, json_body
from mapsync.sheet import models
from mapsync.sheet.connection_models import RestConnection

_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AP]M)?)?$", re.I)


def to_time(value: Any) -> dt.datetime | None:
    """A timestamp from an API as a naive UTC datetime (ISO text, `M/D/YYYY [h:mm[:ss] AM]`)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        match = _US_DATE.match(value.strip())
        if match:
            month, day, year, hour, minute, second, half = match.groups()
            h = int(hour or 0)
            if half:
                h = h % 12 + (12 if half.upper() == "PM" else 0)
            return dt.datetime(int(year), int(month), int(day), h, int(minute or 0), int(second or 0))  # noqa: DTZ001
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise errors.PermanentError(f"{value!r} is not a timestamp", failure_class="source") from None
    else:
        raise errors.PermanentError(f"{value!r} is not a timestamp", failure_class="source")
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


_NEVER = dt.datetime(1, 1, 1)  # noqa: DTZ001 - naive UTC, like every time here


class Bound:
    """`col >= x` / `col <= x` of the watermark capture, kept as data for `stream`."""

    def __init__(self, column: str, op: str, value: Any) -> None:
        self.column, self.op, self.value = column, op, value


class Column:
    def __init__(self, name: str) -> None:
        self.name = name

    def __ge__(self, other: Any) -> Bound:
        return Bound(self.name, ">=", other)

    def __le__(self, other: Any) -> Bound:
        return Bound(self.name, "<=", other)


class RestHandle:
    """An open REST connection: the HTTP client plus the clock the capture methods ask for."""

    dialect: None = None  # no SQL (the `Handle` role)
    engine: None = None

    def __init__(self, name: str, cfg: Any, client: HttpClient, store: Any = None) -> None:
        self.name = name
        self.cfg = cfg
        self.client = client
        self.store = store  # the state store (async delivery keeps its batches there)

    @property
    def budget(self) -> Budget | None:
        """The call budget of the connection's credential, where limits are configured."""
        return self.client.budget if isinstance(self.client.budget, Budget) else None

    def check(self) -> dict[str, Any]:
        """Reachability and login, without changing anything (for `mapsync check`): one GET of
        the base URL (a token endpoint, if configured, is called first). No status below 500
        means reachable; 401/403 mean the credentials are refused."""
        out: dict[str, Any] = {"connection": self.name, "kind": "rest"}
        try:
            resp = self.client.request("GET", "")
        except errors.PermanentError as exc:
            return {**out, "reachable": True, "auth_ok": False, "error": str(exc)}
        except errors.TransientError as exc:
            return {**out, "reachable": False, "error": str(exc)}
        return {**out, "reachable": True, "auth_ok": True, "status": resp.status_code}

    def close(self) -> None:
        self.client.close()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def zone(self, name: str | None = None) -> dt.tzinfo:
        return dt.UTC


class RestSource:
    """The source side of one sync over a REST API (generic paging; CIMcloud overrides fetch)."""

    capabilities = Capabilities(read_back=True)  # by key where the connection has `key_param`

    def __init__(self, db: RestHandle, sync_name: str, cfg: models.SyncConfig, ts_column: str | None) -> None:
        self.db = db
        self.sync = sync_name
        self.key = list(cfg.key.from_)
        self.ts_column = ts_column
        self.resource = cfg.from_.resource or ""
        self.children: dict[str, Any] = {}
        self.filter = cfg.filter  # a CIMcloud searchstring; refused for generic REST by the checks
        needed = set(self.key) | {f.from_ for f in cfg.fields.values() if f.from_}
        if ts_column:
            needed.add(ts_column)
        self.columns = sorted(needed, key=lambda c: (c not in self.key, c))
        self.where = f"sync {sync_name}: from"
        self.requests = 0

    # ----------------------------------------------------------------- the capture surface

    def col(self, name: str) -> Column:
        return Column(name)

    def key_of(self, row: records.Row) -> records.Key:
        key = self.key
        return (row[key[0]],) if len(key) == 1 else tuple([row[k] for k in key])

    def ts_bound(self, moment: Any, zone: dt.tzinfo, *, lower: bool, sample: Any = None) -> Any:
        return to_time(moment)

    def attach_children(self, rows: list[records.Row]) -> dict[records.Key, dict[str, list[records.Row]]]:
        return {self.key_of(r): {} for r in rows}  # an API source has no child tables

    def count(self, extra_where: str | None = None) -> int | None:
        return None  # an API that documents no total: the progress bar counts without one

    def stream(
        self,
        order: Sequence[str],
        where: Sequence[Any],
        after: Sequence[Any] | None,
        batch: int,
        extra_where: str | None = None,
    ) -> Iterator[list[records.Row]]:
        """Rows matching `where`, sorted by `order`, strictly after the keyset `after`."""
        lower = next((b.value for b in where if isinstance(b, Bound) and b.op == ">="), None)
        upper = next((b.value for b in where if isinstance(b, Bound) and b.op == "<="), None)
        rows = []
        for page in self.fetch(to_time(lower), extra_where):
            for raw in page:
                row = self._row(raw)
                if upper is not None and self.ts_column and (row[self.ts_column] or _NEVER) > upper:
                    continue
                rows.append(row)
        rows.sort(key=lambda r: self._sort_key(r, order))
        if after is not None:
            mark = self._sort_key(dict(zip(order, after, strict=True)), order)
            rows = [r for r in rows if self._sort_key(r, order) > mark]
        for i in range(0, len(rows), batch):
            yield rows[i : i + batch]

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        """Current records of these keys; missing keys are absent."""
        wanted = {records.key_text(tuple(str(v) for v in k)) for k in keys}
        out = []
        for raw in self.fetch_keys(keys):
            row = self._row(raw)
            if records.key_text(tuple(str(v) for v in self.key_of(row))) in wanted:
                out.append(row)
        return out

    def _row(self, raw: Any) -> records.Row:
        if not isinstance(raw, dict):
            raise errors.TransientError(
                f"{self.where}: the API returned a record that is not an object", failure_class="source"
            )
        row = {c: raw.get(c) for c in self.columns}
        if any(row[k] is None for k in self.key):
            raise errors.PermanentError(
                f"{self.where}: a record has no key field {self.key}", failure_class="source"
            )
        if self.ts_column:
            row[self.ts_column] = to_time(row[self.ts_column])
        return row

    def _sort_key(self, row: records.Row, order: Sequence[str]) -> tuple[Any, ...]:
        out: list[Any] = []
        for c in order:
            value = row.get(c)
            if c == self.ts_column:
                out.append((0, to_time(value) or _NEVER))
            else:
                out.append((0, value) if isinstance(value, int | float) else (1, str(value)))
        return tuple(out)

    # ----------------------------------------------------------------- the API (generic)

    def fetch(self, since: dt.datetime | None, extra_where: str | None = None) -> Iterator[list[Any]]:
        """Pages of raw records modified at or after `since` (every record without it)."""
        cfg: RestConnection = self.db.cfg
        params: dict[str, Any] = {}
        if since is not None:
            if not cfg.modified_param:
                raise errors.ConfigError(
                    f"connection {self.db.name}: `modified_param` is needed for incremental reads"
                )
            params[cfg.modified_param] = since.isoformat()
        yield from self._pages(self.resource, params)

    def fetch_keys(self, keys: Sequence[records.Key]) -> Iterator[Any]:
        cfg: RestConnection = self.db.cfg
        if not cfg.key_param or len(self.key) != 1:
            raise errors.ConfigError(
                f"connection {self.db.name}: `key_param` (single-column keys) is needed to read by key"
            )
        for i in range(0, len(keys), 50):
            chunk = keys[i : i + 50]
            params = {cfg.key_param: ",".join(str(k[0]) for k in chunk)}
            for page in self._pages(self.resource, params):
                yield from page

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[list[Any]]:
        def counted() -> None:
            self.requests += 1

        yield from list_pages(self.db, path, params, self.where, counted)


def list_pages(
    db: RestHandle, path: str, params: dict[str, Any], where: str, counted: Callable[[], None] = lambda: None
) -> Iterator[list[Any]]:
    """The records of `path` page by page, as the connection's `paging` says (`counted()` after
    each request answered): the listing of a sync's source and of a reconcile check's API side."""
    paging = db.cfg.paging
    client = db.client
    page, offset = paging.first_page, 0
    url: str | None = path
    query: dict[str, Any] | None = dict(params)
    previous: Any = None
    foreign = False  # a next page on an allowed other host: no credentials, no headers
    while url is not None:
        q = dict(query or {})
        if paging.size_param and paging.style != "none" and query is not None:
            q[paging.size_param] = paging.size
        if paging.style == "page" and query is not None:
            q[paging.page_param] = page
        elif paging.style == "offset" and query is not None:
            q[paging.offset_param] = offset
        try:
            resp = client.request("GET", url, params=q or None, authenticate=not foreign, bare=foreign)
        except (errors.PermanentError, errors.TransientError) as exc:
            exc.failure_class = "source"
            raise
        counted()
        if resp.status_code >= 400:
            raise errors.PermanentError(
                f"{where}: GET {url}: HTTP {resp.status_code}: {client.shown(resp.text)}",
                failure_class="source",
            )
        body = json_body(resp)
        items = dig(body, paging.items)
        if not isinstance(items, list):
            raise errors.TransientError(
                f"{where}: GET {url}: the answer holds no list of records", failure_class="source"
            )
        if items and items == previous:  # an API that ignores the paging parameter
            raise errors.TransientError(
                f"{where}: GET {path}: the next page repeats the last one", failure_class="source"
            )
        previous = items
        yield items
        url = None
        if paging.style == "page" and len(items) >= paging.size:
            page, url = page + 1, path
        elif paging.style == "offset" and len(items) >= paging.size:
            offset, url = offset + len(items), path
        elif paging.style == "cursor":
            nxt = dig(body, paging.next_field)
            if nxt:
                if str(nxt).startswith(("http://", "https://")):
                    url, query = str(nxt), None
                else:
                    url, query = path, {**params, paging.cursor_param: nxt}
        elif paging.style == "link":
            nxt = resp.links.get("next", {}).get("url")
            if nxt:
                url, query = urllib.parse.urljoin(str(resp.url), nxt), None
        if url is not None and query is None:  # an absolute next URL: whose is it?
            foreign = origins.foreign(url, client.base_url, paging.allow_hosts, where)


def dig(body: Any, path: str | None) -> Any:
    if not path:
        return body
    for part in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body
