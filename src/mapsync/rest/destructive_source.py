"""The source side of an export from an API whose GET marks what it returns (CIMcloud's
`OnlineOrders`, a REST resource marked `destructive: true`), read only by the export capture
(capture/export_inbox.py).

- `take()`: one GET of the first page, never sent again after a lost answer, a timeout or a 5xx
  (`HttpClient.request(once=True)`): its raw text is what the capture stores in the inbox before
  anything parses it.
- `split(raw)`: the records of a stored page, each with its child rows (`children:` that are
  `nested` in the record, or read from a `resource` of the same API by parent key), as the inbox
  payloads the capture appends: `{"record": {...}, "children": {name: [...]}}`.
- `read_keys` / `stored`: the newest stored payload of each key, from the inbox (a retry or a
  re-export never asks the API: the GET by key would be another destructive read).
- `stream` (seed, watermark, full) is refused: those reads would mark orders exported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from mapsync import errors, records
from mapsync.ports import Capabilities
from mapsync.rest.source import RestHandle, RestSource, dig
from mapsync.sheet import models

ORDER = "order:"  # event ids: `order:<key text>:<page item id>`; the page item id makes each export its own
PAGE = "page:"  # `page:<uuid>`: a page's raw answer, stored before it is parsed


class BadPage(ValueError):
    """A stored page that holds no list of records (kept in the inbox as `error`)."""


class DestructiveSource(RestSource):
    """Reads a destructive resource one first page at a time (generic REST paging)."""

    capabilities = Capabilities(destructive_read=True, children=True, read_back=True)

    def __init__(self, db: RestHandle, sync_name: str, cfg: models.SyncConfig, ts_column: str | None) -> None:
        super().__init__(db, sync_name, cfg, ts_column)
        self.store = db.store
        self.nested: dict[str, str] = {}
        self.separate: dict[str, models.ChildSync] = {}
        self.child_cfg = dict(cfg.children)
        for name, child in cfg.children.items():
            if child.from_.nested is not None:
                self.nested[name] = child.from_.nested
            else:
                self.separate[name] = child
        self.children = dict(cfg.children)

    @property
    def page_size(self) -> int:
        size: int = self.db.cfg.paging.size
        return size

    @property
    def write_batch(self) -> int:
        """Records per status write-back call."""
        return 10

    # ----------------------------------------------------------------- the destructive GET

    def take(self) -> str:
        """One GET of the first page: its raw text. Never repeated when its answer may have run."""
        paging = self.db.cfg.paging
        params: dict[str, Any] = {}
        if paging.size_param and paging.style != "none":
            params[paging.size_param] = paging.size
        if paging.style == "page":
            params[paging.page_param] = paging.first_page
        return self._take(self.resource, params or None)

    def _take(self, path: str, params: dict[str, Any] | None, *, empty_404: bool = False) -> str:
        """The raw text of one GET sent once (`empty_404`: a 404 is an empty page)."""
        client = self.db.client
        try:
            resp = client.request("GET", path, params=params, once=True)
        except (errors.PermanentError, errors.TransientError) as exc:
            exc.failure_class = "source"
            raise
        self.requests += 1
        if resp.status_code == 404 and empty_404:
            return "[]"
        if resp.status_code >= 400:
            raise errors.TransientError(
                f"{self.where}: GET {path}: HTTP {resp.status_code} (not sent again: it may have marked "
                f"records as exported): {client.shown(resp.text)}",
                failure_class="source",
            )
        return resp.text

    def items_of(self, raw: str) -> list[Any]:
        """The records of a page's raw answer (BadPage: none readable)."""
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadPage("the answer is not JSON") from None
        items = dig(body, self.db.cfg.paging.items)
        if not isinstance(items, list):
            raise BadPage("the answer holds no list of records")
        return items

    # ----------------------------------------------------------------- a page → inbox payloads

    def split(self, raw: str) -> list[tuple[records.Key, str]]:
        """Each record of a page as (key, inbox payload), its child rows included."""
        out: list[tuple[records.Key, dict[str, Any]]] = []
        for item in self.items_of(raw):
            if not isinstance(item, dict):
                raise BadPage("a record is not an object")
            if any(item.get(k) is None for k in self.key):  # `_row` would fail every later run on it
                raise BadPage(f"a record has no key field {self.key}")
            row = self._row(item)
            kids: dict[str, list[Any]] = {}
            for name, field in self.nested.items():
                lines = item.get(field)
                if lines is None:
                    lines = []
                if not isinstance(lines, list) or not all(isinstance(x, dict) for x in lines):
                    raise BadPage(
                        f"record {records.key_text(self.key_of(row))}: `{field}` is not a list of records"
                    )
                kids[name] = lines
            out.append((self.key_of(row), {"record": item, "children": kids}))
        if self.separate and out:
            fetched = self.fetch_children([k for k, _ in out])
            for key, payload in out:
                for name in self.separate:
                    payload["children"][name] = fetched.get(records.key_text(key), {}).get(name, [])
        return [(key, json.dumps(payload, default=str, sort_keys=True)) for key, payload in out]

    def fetch_children(self, parents: list[records.Key]) -> dict[str, dict[str, list[Any]]]:
        """Child records read from their own resource, by parent key text (CIMcloud only)."""
        raise errors.ConfigError(
            f"sync {self.sync}: child rows from a `resource` are read by parent key with CIMcloud "
            "searchstrings: a generic REST source carries them `nested` in the record"
        )

    # ----------------------------------------------------------------- reading what was stored

    def row_and_children(self, payload: str) -> tuple[records.Row, dict[str, list[records.Row]]]:
        """A stored payload as the parent row (the sheet's columns) and its child rows."""
        body = json.loads(payload)
        row = self._row(body["record"])
        key = self.key_of(row)
        kids: dict[str, list[records.Row]] = {}
        for name, child in self.child_cfg.items():
            kids[name] = [self._child_row(child, key, raw) for raw in body["children"].get(name, [])]
        return row, kids

    def _child_row(self, child: models.ChildSync, parent: records.Key, raw: dict[str, Any]) -> records.Row:
        needed = (
            set(child.parent.from_)
            | set(child.key.from_)
            | {f.from_ for f in child.fields.values() if f.from_}
        )
        row = {c: raw.get(c) for c in sorted(needed)}
        for column, value in zip(child.parent.from_, parent, strict=True):
            if row.get(column) is None:
                row[column] = value  # nested lines need not repeat their order's key
        return row

    def stored(self, keys: Sequence[records.Key]) -> dict[str, tuple[int, str, str]]:
        """The newest inbox item of each key: key text → (item id, status, payload)."""
        if self.store is None:
            raise errors.ConfigError(f"sync {self.sync}: an export from an API needs the state store")
        prefixes = {f"{ORDER}{records.key_text(tuple(k))}:": records.key_text(tuple(k)) for k in keys}
        found = self.store.inbox.latest(self.sync, list(prefixes))
        return {prefixes[p]: (item.id, status, item.payload) for p, (item, status) in found.items()}

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        """The rows of these keys as last received (from the inbox: never a GET)."""
        return [self.row_and_children(payload)[0] for _, _, payload in self.stored(keys).values()]

    def attach_children(self, rows: list[records.Row]) -> dict[records.Key, dict[str, list[records.Row]]]:
        found = self.stored([self.key_of(r) for r in rows])
        out: dict[records.Key, dict[str, list[records.Row]]] = {}
        for row in rows:
            hit = found.get(records.key_text(self.key_of(row)))
            out[self.key_of(row)] = self.row_and_children(hit[2])[1] if hit else {}
        return out

    def stream(
        self,
        order: Sequence[str],
        where: Sequence[Any],
        after: Sequence[Any] | None,
        batch: int,
        extra_where: str | None = None,
    ) -> Iterator[list[records.Row]]:
        raise errors.ConfigError(
            f"sync {self.sync}: {self.resource} marks what it returns as exported: only "
            "`changes: {method: export_flag}` reads it (through the inbox)"
        )

    def fetch_keys(self, keys: Sequence[records.Key]) -> Iterator[Any]:
        raise errors.ConfigError(
            f"sync {self.sync}: {self.resource} is never read by key (a destructive GET)"
        )
