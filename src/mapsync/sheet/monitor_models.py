"""`monitors:` (top level, and per sync): the thresholds of the monitors that watch every sync
(`mapsync.monitors`). Every threshold is optional here: a sync's own value wins over the sheet's,
which wins over the built-in default (`resolve`). A monitor is turned off by naming it in `disabled`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from mapsync.sheet.base import Model, as_list
from mapsync.sheet.duration import Duration

Severity = Literal["critical", "warning", "info"]


class MonitorsConfig(Model):
    """Thresholds of the monitors (docs/operations.md, "Monitors"). At the top level they apply to
    every sync; under a sync they override the top level for that sync. Left out, a threshold takes
    its default."""

    disabled: list[str] = Field(
        default_factory=list,
        description="Monitors turned off (their names, e.g. `[lag, rejection_rate]`).",
    )
    severity: dict[str, Severity] = Field(
        default_factory=dict,
        description="A monitor's severity (`critical`, `warning`, `info`) instead of its default.",
    )
    no_success_after: int | None = Field(
        None,
        ge=1,
        description="No successful run for this many schedule intervals is an incident. Default 3.",
    )
    rejection_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "A run that rejects more than this share of the records it read (0 to 1) is an incident. "
            "Default 0.05."
        ),
    )
    lag: Duration | None = Field(
        None,
        description=(
            "A source change older than this that has not been delivered yet is an incident "
            "(source clock minus cursor while the source has newer rows). Default 1h."
        ),
    )
    backlog_rows: int | None = Field(
        None, ge=1, description="Pending rows in a change queue or inbox above this. Default 10000."
    )
    backlog_age: Duration | None = Field(
        None, description="The oldest pending queue or inbox row older than this. Default 15m."
    )
    export_pickup: Duration | None = Field(
        None,
        description=(
            "A transaction of an export sync (`changes.method: export_flag` with `created`) still "
            "pending this long after its creation. Default 15m."
        ),
    )
    async_unsettled: Duration | None = Field(
        None, description="An asynchronous batch not settled after this long. Default 1h."
    )
    wal_retained_mb: int | None = Field(
        None,
        ge=1,
        description="PostgreSQL WAL retained by the sync's replication slot above this (MB). Default 1024.",
    )
    clock_skew: Duration | None = Field(
        None, description="This host's clock and a database's apart by more than this. Default 30s."
    )
    disk_free_mb: int | None = Field(
        None,
        ge=1,
        description="Free disk under a SQLite state store below this (MB). Default 1024.",
    )
    stale_run: Duration | None = Field(
        None,
        description=(
            "A run still `running` whose lease was not renewed for this long never finished. "
            "Default: `state.lease_ttl`."
        ),
    )
    channel_failures: int | None = Field(
        None,
        ge=1,
        description="An alert channel that failed this many sends in a row is an incident. Default 5.",
    )

    _norm = field_validator("disabled", mode="before")(as_list)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """One sync's thresholds after `resolve` (no None left but `stale_run`: the lease TTL)."""

    disabled: frozenset[str]
    severity: dict[str, Severity]
    no_success_after: int = 3
    rejection_rate: float = 0.05
    lag: dt.timedelta = dt.timedelta(hours=1)
    backlog_rows: int = 10_000
    backlog_age: dt.timedelta = dt.timedelta(minutes=15)
    export_pickup: dt.timedelta = dt.timedelta(minutes=15)
    async_unsettled: dt.timedelta = dt.timedelta(hours=1)
    wal_retained_mb: int = 1024
    clock_skew: dt.timedelta = dt.timedelta(seconds=30)
    disk_free_mb: int = 1024
    stale_run: dt.timedelta | None = None
    channel_failures: int = 5


_SET = ("disabled", "severity")


def resolve(*layers: MonitorsConfig | None) -> Thresholds:
    """The thresholds of a sync: later layers win (`resolve(sheet.monitors, sync.monitors)`);
    `disabled` and `severity` add up."""
    values: dict[str, object] = {}
    disabled: set[str] = set()
    severity: dict[str, Severity] = {}
    for layer in layers:
        if layer is None:
            continue
        disabled.update(layer.disabled)
        severity.update(layer.severity)
        for name in MonitorsConfig.model_fields:
            if name not in _SET and (value := getattr(layer, name)) is not None:
                values[name] = value
    return Thresholds(disabled=frozenset(disabled), severity=severity, **values)  # type: ignore[arg-type]
