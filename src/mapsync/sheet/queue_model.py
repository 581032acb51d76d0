"""The sheet model of the trigger-fed change queue (`changes: {method: queue}`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from mapsync.sheet.base import ChangesModel
from mapsync.sheet.duration import Duration


class QueueChanges(ChangesModel):
    """Changes recorded by triggers in a queue table of the source (`mapsync triggers install`),
    claimed row by row, with per-row status, retries and purge."""

    method: Literal["queue"] = Field(description="`queue`.")
    table: str = Field(
        "mapsync_changes",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,50}$",
        description=(
            "Name of the queue table in the source database (letters, digits, `_`). Syncs that "
            "read the same source table need different queue tables."
        ),
    )
    max_retries: int = Field(
        5,
        ge=0,
        le=1000,
        description=(
            "How often a change the destination rejected is retried (once per run, after "
            "`backoff`) before its queue row stays `error` for good."
        ),
    )
    backoff: Duration = Field(
        dt.timedelta(minutes=1),
        description="Wait before the first retry of an `error` row; doubled after every further failure.",
    )
    lease: Duration = Field(
        dt.timedelta(minutes=5),
        description=(
            "A row `in-progress` for longer than this (its run crashed) is claimed again. Keep it "
            "longer than a batch takes to deliver."
        ),
    )
    retention: Duration = Field(
        dt.timedelta(days=7),
        description=(
            "`completed` and `superseded` rows older than this are purged at the end of each run "
            "and by `mapsync triggers purge`; `new`, `in-progress` and `error` rows never are."
        ),
    )
    archive: bool = Field(
        False,
        description="Move purged rows into `<table>_archive` instead of deleting them.",
    )
