"""Full re-read: every run reads the whole source in key order and the engine sends only rows
whose content hash differs from the key ledger. Cheap to set up, costly on big tables, and it
cannot see deletes (the snapshot method will)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mapsync import records
from mapsync.capture.base import CaptureBase, register, to_changes
from mapsync.connectors.sql_source import SqlSource
from mapsync.ports import Capabilities
from mapsync.sheet import models


@register("full")
class FullCapture(CaptureBase):
    capabilities = Capabilities(columnar_read=True)  # no deletes: a re-read cannot see a row that is gone

    def __init__(self, source: SqlSource, cfg: models.FullChanges, batch: int, ctx: Any = None) -> None:
        self.source = source
        self.batch = batch

    @staticmethod
    def version_column(cfg: models.FullChanges) -> None:
        return None

    @staticmethod
    def emits_deletes(cfg: models.FullChanges) -> bool:
        return False

    def start_seed(self) -> dict[str, Any]:
        return {}

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        after = (cursors.get("position") or {}).get("after")
        for rows in self.source.stream(self.source.key, [], after, self.batch):
            yield records.Batch(
                to_changes(self.source, rows, None),
                {"position": {"after": list(self.source.key_of(rows[-1]))}},
                read=True,
            )

    def finish(self) -> dict[str, Any]:
        return {"position": None}

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        return None
