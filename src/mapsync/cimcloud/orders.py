"""CIMcloud's order export, `GET /{site}/OnlineOrders`: each GET returns up to 50 orders with
`exported = '0'` and marks them `exported = '1'` (documented). Read only through the export
capture (capture/export_inbox.py): the first page again and again until a short one, each raw
answer stored in the inbox before it is parsed, never a GET sent twice.

INFERRED (not in CIMcloud's public docs, verified against the sandbox only): the answer is a JSON
array of order records; order lines come either nested in each order (`children: {lines: {from:
{nested: details}}}`) or from a resource of their own read by order number (`from: {resource:
order_detail}`), so both are configurable.
"""

from __future__ import annotations

import json
from typing import Any

from mapsync import errors, records
from mapsync.cimcloud import search
from mapsync.cimcloud.source import PAGE, CimcloudSource
from mapsync.rest.destructive_source import BadPage, DestructiveSource


class CimcloudOrdersSource(DestructiveSource, CimcloudSource):
    """`OnlineOrders` of a CIMcloud connection."""

    @property
    def page_size(self) -> int:
        return PAGE

    @property
    def write_batch(self) -> int:
        size: int = self.db.cfg.batch  # ≤ 10: more would be queued asynchronously
        return size

    def take(self) -> str:
        """One GET of `OnlineOrders`. INFERRED: a site may answer 404 when nothing is waiting
        (as some answer a search without results): that is an empty page."""
        return self._take(self.resource.strip("/"), None, empty_404=True)

    def items_of(self, raw: str) -> list[Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadPage("the answer is not JSON") from None
        if not isinstance(body, list):
            raise BadPage("the answer is not a list of orders")
        return body

    def fetch_children(self, parents: list[records.Key]) -> dict[str, dict[str, list[Any]]]:
        """Lines from their own resource, by order number: one `|or|` GET per 10 orders (and
        one per further 50 lines)."""
        out: dict[str, dict[str, list[Any]]] = {}
        for name, child in self.separate.items():
            resource = child.from_.resource or ""
            link = list(child.parent.from_)
            for i in range(0, len(parents), 10):
                chunk = parents[i : i + 10]
                for page in self.pages(resource, search.keys(link, chunk)):
                    for line in page:
                        if not isinstance(line, dict):
                            raise errors.TransientError(
                                f"{self.where}: GET {resource}: a line is not an object",
                                failure_class="source",
                            )
                        parent = records.key_text(tuple(line.get(c) for c in link))
                        out.setdefault(parent, {}).setdefault(name, []).append(line)
        return out
