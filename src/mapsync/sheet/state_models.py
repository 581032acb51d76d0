"""The `state:` section of the sheet: where the state store is, its lease, and how long each
kind of history is kept (`retention`)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator

from mapsync.sheet.base import Model
from mapsync.sheet.duration import Duration
from mapsync.sheet.timeout_models import Timeouts

RETENTION_TABLES = (
    "runs",
    "record_errors",
    "cursor_audit",
    "inbox",
    "async_batches",
    "unmapped",
    "tombstones",
    "alerts",
    "attempts",
    "rollups",
    "reconcile",
)


class RetentionConfig(Model):
    """How long each kind of history is kept; a table left out keeps `default`. Purged daily by
    `mapsync daemon` and by `mapsync purge`. Only what is finished goes: open record errors, pending
    inbox items, unsettled batches, open incidents, the latest run of a sync are never purged."""

    default: Duration = Field(dt.timedelta(days=90), description="Every table not named here.")
    runs: Duration | None = Field(None, description="Finished runs (a sync's latest run is kept).")
    record_errors: Duration | None = Field(None, description="Resolved record errors.")
    cursor_audit: Duration | None = Field(None, description="The cursor audit.")
    inbox: Duration | None = Field(None, description="Processed (or stale) webhook inbox items.")
    async_batches: Duration | None = Field(None, description="Settled asynchronous batches.")
    unmapped: Duration | None = Field(None, description="Unmapped values no longer blocking a record.")
    tombstones: Duration | None = Field(None, description="The ledger's entries of deleted records.")
    alerts: Duration | None = Field(None, description="Resolved incidents and their notifications.")
    attempts: Duration | None = Field(None, description="Delivery attempts (`mapsync trace`).")
    reconcile: Duration | None = Field(
        None, description="Results of reconciliation checks (each check's latest result is kept)."
    )
    rollups: Duration | None = Field(
        None, description="Daily rollups of the runs. Default: 400 days (or `default`, if longer)."
    )


class StateConfig(Model):
    """Where mapsync keeps cursors, the key ledger, run history and record errors."""

    url: str = Field(
        "sqlite:///.mapsync/state.db",
        description=(
            "SQLAlchemy URL of the state store. A relative SQLite path resolves against the "
            "sheet's folder, so cron jobs started elsewhere find the same state. PostgreSQL is "
            "supported for several workers."
        ),
    )
    lease_ttl: Duration = Field(
        dt.timedelta(minutes=10),
        description=(
            "How long a run's lease on its sync lasts without renewal. A crashed holder on the "
            "same host is detected at once; one on another host after this time. Under "
            "`mapsync daemon` (and `run --follow`) the default is 60s, renewed by a heartbeat "
            "every third of it while a run is active; it is also a daemon's TTL as a worker: "
            "silent for longer (killed, frozen, cut off), its syncs go to the other workers."
        ),
    )
    retention: Duration | RetentionConfig = Field(
        dt.timedelta(days=90),
        description=(
            "How long history is kept: one duration for every table (e.g. `90d`), or a duration per "
            "table (`{default: 90d, runs: 30d, attempts: 7d}`)."
        ),
    )
    lock_timeout: Duration = Field(
        dt.timedelta(seconds=10),
        description=(
            "SQLite state store: how long a statement waits for another process's write lock. "
            "Past it the whole transaction is tried again (after 0.25 s, 0.5 s, 1 s, 2 s), then the "
            "run stops with `state store … is locked by another process`."
        ),
    )
    timeouts: Timeouts = Field(
        default_factory=Timeouts,
        description=(
            "Connect, statement and socket timeouts of a PostgreSQL state store, each below `lease_ttl`."
        ),
    )

    def retention_of(self, table: str) -> dt.timedelta:
        """How long `table`'s history is kept (one of `RETENTION_TABLES`)."""
        if table not in RETENTION_TABLES:
            raise KeyError(table)
        if isinstance(self.retention, dt.timedelta):
            return max(self.retention, dt.timedelta(days=400)) if table == "rollups" else self.retention
        given = getattr(self.retention, table)
        if given is not None:
            return given  # type: ignore[no-any-return]
        default: dt.timedelta = self.retention.default
        return max(default, dt.timedelta(days=400)) if table == "rollups" else default

    @field_validator("url")
    @classmethod
    def _a_store_backend(cls, url: str) -> str:
        """SQLite or PostgreSQL: refused up front for MariaDB/MySQL, whose index limit the ledger's
        keys exceed (it used to fail at schema creation as a lost connection). The URL is never
        quoted: a password may be in it."""
        scheme = url.split("://", 1)[0].split("+", 1)[0].strip().lower() if "://" in url else ""
        if scheme in ("mysql", "mariadb"):
            raise ValueError(
                f"the state store runs on SQLite or PostgreSQL, not {scheme} (MariaDB and MySQL "
                "serve as sources and destinations); write e.g. sqlite:///.mapsync/state.db"
            )
        return url
