"""The status write-back to CIMcloud: `POST /{site}/orders` (or PUT) with `exported` and, where
the site has them, `erp_import_status` / `erp_import_error` (not in CIMcloud's public docs:
fields named by the sheet), at most 10 orders per call (more would be queued asynchronously).

An answer is trusted when `success` is true and `importedRecords + updatedRecords` equals the
call's count; otherwise the call's orders are read back by key in one `|or|` GET, and an order
that does not read back as written fails the write-back (TransientError naming it)."""

from __future__ import annotations

from typing import Any

from mapsync import errors
from mapsync.cimcloud import search
from mapsync.rest.client import json_body
from mapsync.rest.status_writer import StatusWriter
from mapsync.rest.text import as_text


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class CimcloudStatusWriter(StatusWriter):
    def judge(self, resp: Any, chunk: list[dict[str, str]]) -> None:
        answer = json_body(resp)
        if resp.status_code < 300 and isinstance(answer, dict) and answer.get("success") is True:
            done = _int(answer.get("importedRecords")) + _int(answer.get("updatedRecords"))
            if done == len(chunk) and _int(answer.get("recordCountInRequest")) == len(chunk):
                return
        message = answer.get("message") if isinstance(answer, dict) else resp.text
        reason = f"HTTP {resp.status_code}: {self.db.client.shown(str(message))}"
        self.read_back(chunk, reason)

    def existing(self, keys: list[str]) -> dict[str, str]:
        """Which of these order numbers the Orders resource holds (user keys match whatever the
        case): lower-cased → as CIMcloud spells it. One `|or|` GET per 10."""
        out: dict[str, str] = {}
        for found in self._read([[k] for k in keys]):
            held = as_text(found.get(self.key_field))
            out[held.lower()] = held
        return out

    def _read(self, keys: list[list[str]]) -> list[dict[str, Any]]:
        client = self.db.client
        out: list[dict[str, Any]] = []
        for i in range(0, len(keys), 10):
            path = f"{self.target.resource.strip('/')}/{search.keys([self.key_field], keys[i : i + 10])}/1"
            resp = client.request("GET", path)
            self.calls += 1
            found = [] if resp.status_code == 404 else json_body(resp)
            if (resp.status_code >= 400 and resp.status_code != 404) or not isinstance(found, list):
                raise errors.TransientError(
                    f"sync {self.sync}: reading orders from {self.target.resource} failed "
                    f"(HTTP {resp.status_code})"
                )
            out.extend(r for r in found if isinstance(r, dict))
        return out

    def read_back(self, chunk: list[dict[str, str]], reason: str) -> None:
        try:
            found = self._read([[row[self.key_field]] for row in chunk])
        except errors.TransientError:
            raise errors.TransientError(
                f"{self._what(chunk)}: it answered {reason}, and the read-back failed"
            ) from None
        by_key = {as_text(r.get(self.key_field)).lower(): r for r in found if isinstance(r, dict)}
        wrong = []
        for row in chunk:
            current = by_key.get(row[self.key_field].lower())
            if current is None or any(as_text(current.get(k)) != v for k, v in row.items()):
                wrong.append(row[self.key_field])
        if wrong:
            raise errors.TransientError(
                f"{self._what(chunk)}: CIMcloud did not apply it to {', '.join(wrong[:10])}; "
                f"it answered {reason}"
            )
