"""What `mapsync reexport` asks of a transaction export, whichever its source: a SQL table
(`export_flag.ExportFlagCapture`) or an API's order export (`export_inbox.InboxExportCapture`).
Kept apart from both so the engine names the role without loading either (an API's export
brings the HTTP client)."""

from __future__ import annotations

from collections.abc import Iterator

from mapsync import records
from mapsync.capture.base import CaptureBase

CURSOR = "export"  # an export's own cursor: {"since": where (SQL) or when (API) it starts}
LOST = "lost:"  # inbox marker of a destructive GET whose answer may be lost: a sweep is due


class ExportBase(CaptureBase):
    fold_case = False  # keys typed for `reexport` match whatever their case (an API's user keys)

    def typed_key(self, text: tuple[str, ...]) -> records.Key:
        """A key as written on the command line, in the source's types."""
        raise NotImplementedError

    def find(self, keys: list[records.Key] | None) -> list[records.Key]:
        """The source's keys of these transactions (None: of every failed one)."""
        raise NotImplementedError

    def reset(self, keys: list[records.Key]) -> None:
        """Set these transactions pending again at the source."""
        raise NotImplementedError

    def reexport_batches(self, keys: list[records.Key], batch: int) -> Iterator[records.Batch]:
        """After the reset: the batches that send them."""
        raise NotImplementedError
