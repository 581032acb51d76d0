"""The status write-back of an export from an API (`changes.write_back`): each transaction's
flag, status, error and document number, written to a resource of the same API by a key field,
a few records per call, every call through the connection's call budget. A call whose answer does
not confirm every record raises TransientError: the run ends before its state commit, and the
next run sends the same transactions again (the ERP's upsert absorbs them) and writes again."""

from __future__ import annotations

from typing import Any

from mapsync import errors
from mapsync.rest.source import RestHandle
from mapsync.rest.text import as_text
from mapsync.sheet.export_rest_models import ExportWriteBack


class StatusWriter:
    """Writes status records (`{key_field: …, field: value, …}`) in calls of `batch`."""

    def __init__(
        self, handle: RestHandle, sync: str, target: ExportWriteBack, key_field: str, batch: int
    ) -> None:
        self.db, self.sync, self.target = handle, sync, target
        self.key_field = key_field
        self.batch = max(1, batch)
        self.calls = 0  # write-back calls sent (tests, the run's log)

    def calls_for(self, n: int) -> int:
        """Calls that `n` status records take."""
        return -(-n // self.batch)

    def write(self, updates: list[dict[str, Any]]) -> None:
        for i in range(0, len(updates), self.batch):
            self.write_chunk([{k: as_text(v) for k, v in u.items()} for u in updates[i : i + self.batch]])

    def write_chunk(self, chunk: list[dict[str, str]]) -> None:
        client = self.db.client
        try:
            resp = client.request(self.target.method, self.target.resource.strip("/"), json=chunk)
        except errors.PermanentError as exc:  # access refused: the reason (auth) stays for the monitors
            raise errors.TransientError(f"{self._what(chunk)}: {exc}", reason=exc.reason) from None
        self.calls += 1
        self.judge(resp, chunk)

    def judge(self, resp: Any, chunk: list[dict[str, str]]) -> None:
        if resp.status_code >= 300:
            raise errors.TransientError(
                f"{self._what(chunk)}: HTTP {resp.status_code}: {self.db.client.shown(resp.text)}"
            )

    def existing(self, keys: list[str]) -> dict[str, str]:
        """Which of these orders the API holds: lower-cased key → the key as the API spells it.
        A generic REST API documents no read by key here: every key is taken as held."""
        return {k.lower(): k for k in keys}

    def _what(self, chunk: list[dict[str, str]]) -> str:
        keys = ", ".join(c.get(self.key_field, "?") for c in chunk[:10])
        return (
            f"sync {self.sync}: writing the export status to {self.target.resource} ({keys}) failed; "
            "the transactions are in the destination and are sent again by the next run"
        )
