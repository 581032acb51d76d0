"""Reading a CIMcloud resource: `GET /{site}/{resource}/{searchstring}/{page}`, 50 per page,
page 1 first, until a short page (no count or next link is documented); incremental on
`last_modify_date` (`>=`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mapsync import errors, records
from mapsync.cimcloud import search
from mapsync.rest.client import HttpClient, json_body
from mapsync.rest.source import RestSource
from mapsync.sheet.connection_models import CimcloudConnection

PAGE = 50


class CimcloudSource(RestSource):
    """Reads a CIMcloud resource with searchstrings, 50 per page."""

    def fetch(self, since: dt.datetime | None, extra_where: str | None = None) -> Iterator[list[Any]]:
        cfg: CimcloudConnection = self.db.cfg
        # the docs show no way to page without a searchstring: "modified since the epoch" reads all
        moment = since or dt.datetime(1900, 1, 1)  # noqa: DTZ001
        text = search.at_least(cfg.modified_field, moment.strftime(cfg.date_format))
        # `filter` and `seed.where` of a CIMcloud source are searchstrings
        text = search.all_of(text, *(w for w in (self.filter, extra_where) if w))
        yield from self.pages(self.resource, text)

    def fetch_keys(self, keys: Sequence[records.Key]) -> Iterator[Any]:
        for i in range(0, len(keys), 10):
            for page in self.pages(self.resource, search.keys(self.key, keys[i : i + 10])):
                yield from page

    def pages(self, resource: str, searchstring: str) -> Iterator[list[Any]]:
        def counted() -> None:
            self.requests += 1

        yield from list_pages(self.db.client, resource, searchstring, self.where, counted)


def list_pages(
    client: HttpClient,
    resource: str,
    searchstring: str,
    where: str,
    counted: Callable[[], None] = lambda: None,
) -> Iterator[list[Any]]:
    """The records of `GET {resource}/{searchstring}/{page}` page by page (`counted()` after each
    request answered): the listing of a sync's source and of a reconcile check's CIMcloud side."""
    page = 1
    previous: Any = None
    while True:
        path = f"{resource.strip('/')}/{searchstring}/{page}"
        resp = client.request("GET", path)
        counted()
        if resp.status_code == 404:  # inference: no records may answer 404 on some sites
            return
        body = json_body(resp)
        if resp.status_code >= 400 or not isinstance(body, list):
            raise errors.TransientError(
                f"{where}: GET {resource}: HTTP {resp.status_code}, no list of records: "
                f"{client.shown(resp.text)}",
                failure_class="source",
            )
        if body and body == previous:  # a site that ignores the page number would loop forever
            raise errors.TransientError(
                f"{where}: GET {resource}: page {page} repeats page {page - 1}",
                failure_class="source",
            )
        previous = body
        yield body
        if len(body) < PAGE:
            return
        page += 1
