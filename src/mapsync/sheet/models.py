"""The mapping sheet as pydantic models.

Every field carries a description: the same text drives `mapsync validate` messages and the
reference in docs/sheet.md (a test checks that the two agree). Unknown keys are errors.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mapsync.sheet.alert_models import AlertsConfig as AlertsConfig
from mapsync.sheet.base import ChangesModel, as_list
from mapsync.sheet.base import Model as Model
from mapsync.sheet.base import Name as Name
from mapsync.sheet.column_models import DestColumn as DestColumn
from mapsync.sheet.connection_models import CimcloudConnection as CimcloudConnection
from mapsync.sheet.connection_models import RestConnection as RestConnection
from mapsync.sheet.deletes_models import DeletesConfig as DeletesConfig
from mapsync.sheet.deletes_models import ExpiredRule as ExpiredRule
from mapsync.sheet.delivery_models import AsyncJobs as AsyncJobs
from mapsync.sheet.delivery_models import DeliveryConfig as DeliveryConfig
from mapsync.sheet.duration import Duration
from mapsync.sheet.export_models import ExportFlagChanges as ExportFlagChanges
from mapsync.sheet.fields import CountryRule as CountryRule
from mapsync.sheet.fields import FieldRule as FieldRule
from mapsync.sheet.fields import LookupRule as LookupRule
from mapsync.sheet.fields import MapSource as MapSource
from mapsync.sheet.fields import PythonHook as PythonHook
from mapsync.sheet.fields import SplitRule as SplitRule
from mapsync.sheet.fields import TimezoneRule as TimezoneRule
from mapsync.sheet.log_models import LogChanges as LogChanges
from mapsync.sheet.monitor_models import MonitorsConfig as MonitorsConfig
from mapsync.sheet.queue_model import QueueChanges as QueueChanges
from mapsync.sheet.reconcile_models import ReconcileCheck as ReconcileCheck
from mapsync.sheet.schedule_models import CronSlots as CronSlots
from mapsync.sheet.schedule_models import DurationOrCron
from mapsync.sheet.schedule_models import OverlapConfig as OverlapConfig
from mapsync.sheet.schedule_models import RetryConfig as RetryConfig
from mapsync.sheet.schedule_models import ScheduleConfig as ScheduleConfig
from mapsync.sheet.snapshot_models import SnapshotChanges as SnapshotChanges
from mapsync.sheet.state_models import RETENTION_TABLES as RETENTION_TABLES
from mapsync.sheet.state_models import RetentionConfig as RetentionConfig
from mapsync.sheet.state_models import StateConfig as StateConfig
from mapsync.sheet.timeout_models import Timeouts as Timeouts
from mapsync.sheet.web_models import WebConfig as WebConfig
from mapsync.sheet.webhook_models import InboxChanges as InboxChanges
from mapsync.sheet.webhook_models import WebhookConfig as WebhookConfig

# --------------------------------------------------------------------------- connections


class SqlConnection(Model):
    """A SQL database reached through SQLAlchemy (SQLite, PostgreSQL, MariaDB/MySQL)."""

    kind: Literal["sql"] = Field("sql", description="Connector kind; `sql` is the default.")
    url: str = Field(
        description=(
            "SQLAlchemy URL, e.g. `sqlite:///erp.db`, `postgresql://user:${PGPASSWORD}@host/db`, "
            "`mysql://user:${PW}@host/db`. A relative SQLite path resolves against the sheet's "
            "folder. Put secrets in `${VAR}` references, never in the file."
        )
    )
    timezone: str | None = Field(
        None,
        description=(
            "Time zone that naive timestamp columns of this database are written in (IANA name, "
            "e.g. `Europe/Berlin`). Default: detected from the server (PostgreSQL `TimeZone`, "
            "MariaDB `@@global.time_zone`); UTC for SQLite."
        ),
    )
    timeouts: Timeouts = Field(
        default_factory=Timeouts,
        description=(
            "Connect, statement and socket timeouts (PostgreSQL, MariaDB), each below `state.lease_ttl`."
        ),
    )


Connection = Annotated[SqlConnection | RestConnection | CimcloudConnection, Field(discriminator="kind")]


# --------------------------------------------------------------------------- state (state_models.py)

# --------------------------------------------------------------------------- ends


class SourceRef(Model):
    """Where a sync reads: a table or a query of a connection."""

    connection: Name = Field(description="Name of a connection under `connections`.")
    table: str | None = Field(
        None, description="Source table (checked against the database catalog and quoted)."
    )
    query: str | None = Field(
        None,
        description=(
            "A SELECT used instead of `table`, treated as a subquery. It is SQL written by the "
            "sheet's author and runs as written."
        ),
    )
    resource: str | None = Field(
        None, description="For a REST or CIMcloud connection: the resource path instead of `table`."
    )
    destructive: bool | None = Field(
        None,
        description=(
            "Whether reading `resource` changes it (a GET that marks what it returns as exported). "
            "`true`: refused as a source, since records read but not delivered would be lost. "
            "Not set: mapsync decides for the resources it knows (CIMcloud `OnlineOrders` is "
            "destructive); `false` says a REST resource of that name is not."
        ),
    )

    nested: str | None = Field(
        None,
        description=(
            "For the child rows of a REST or CIMcloud source: the list field of the parent "
            "record that holds them (e.g. `details` of an order), instead of `table` or `resource`."
        ),
    )

    @model_validator(mode="after")
    def _one_of(self) -> SourceRef:
        if self.nested is not None:
            if self.table is not None or self.query is not None or self.resource is not None:
                raise ValueError("give `nested` (child rows inside the parent record) alone")
        elif self.resource is not None:
            if self.table is not None or self.query is not None:
                raise ValueError("give `resource` (REST, CIMcloud) or `table`/`query` (SQL), not both")
        elif (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        return self


class DestRef(Model):
    """Where a sync writes."""

    connection: Name = Field(description="Name of a connection under `connections`.")
    table: str = Field(
        description=(
            "Destination table; it needs a unique index on the key. A REST or CIMcloud end gives "
            "`resource` instead."
        )
    )
    resource: str | None = Field(
        None, description="For a REST or CIMcloud connection: the resource path instead of `table`."
    )
    columns: dict[str, DestColumn] = Field(
        default_factory=dict,
        description=(
            "For a REST or CIMcloud end (which has no catalog): the destination fields' type, "
            "length and whether they are required, so they are checked before sending and "
            "`truncate: auto` knows the length. Fields not listed are sent unchecked."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _resource_instead(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("resource") is not None and "table" not in data:
            return {**data, "table": ""}  # no table at an HTTP end
        return data

    @model_validator(mode="after")
    def _one_of(self) -> DestRef:
        if self.table and self.resource is not None:
            raise ValueError("give `table` (SQL) or `resource` (REST, CIMcloud), not both")
        return self


class KeyMap(Model):
    """The natural key: source column(s) and the destination column(s) they land in."""

    from_: list[str] = Field(
        alias="from", min_length=1, description="Source key column, or a list for a compound key."
    )
    to: list[str] = Field(
        min_length=1, description="Destination key column(s), as many as `from`, same order."
    )

    _norm = field_validator("from_", "to", mode="before")(as_list)

    @model_validator(mode="after")
    def _same_length(self) -> KeyMap:
        if len(self.from_) != len(self.to):
            raise ValueError("`from` and `to` must name the same number of columns")
        return self


# --------------------------------------------------------------------------- capture


class WatermarkChanges(ChangesModel):
    """Changes found by a last-modified column, read inclusively and deduped by the key ledger."""

    method: Literal["watermark"] = Field(description="`watermark`.")
    column: str = Field(description="The last-modified column (a timestamp).")
    lag: Duration = Field(
        dt.timedelta(seconds=5),
        description=(
            "Read only rows older than the source's clock minus this, so transactions that "
            "commit late are not passed by."
        ),
    )
    timezone: str | None = Field(
        None,
        description=(
            "Zone of a naive cursor column (IANA name). Default: the connection's `timezone` or "
            "the server's, UTC for SQLite. Aware columns (timestamptz) need none."
        ),
    )
    overlap: OverlapConfig = Field(default_factory=OverlapConfig, description="The periodic overlap re-read.")
    deletes_every: DurationOrCron | None = Field(
        None,
        description=(
            "Check for deleted rows when the last check is older than this (e.g. `1d`), or at "
            'the first run after each slot of `{cron: "0 3 * * *", timezone: …}`: every '
            "source key is compared with the key ledger and the missing ones are sent as "
            "deletes. Without it, only `mapsync run --deletes` does."
        ),
    )

    def emits_deletes(self) -> bool:
        """Only with `deletes_every`: the periodic key-set check finds deleted rows."""
        return self.deletes_every is not None


class FullChanges(ChangesModel):
    """Re-read the whole source every run and send only rows whose content changed."""

    can_emit_deletes: ClassVar[bool] = False  # a re-read cannot see a row that is gone

    method: Literal["full"] = Field(description="`full`.")


CHANGES_MODELS = (
    WatermarkChanges,
    FullChanges,
    QueueChanges,
    SnapshotChanges,
    LogChanges,
    InboxChanges,
    ExportFlagChanges,
)
Changes = Annotated[
    WatermarkChanges
    | FullChanges
    | QueueChanges
    | SnapshotChanges
    | LogChanges
    | InboxChanges
    | ExportFlagChanges,
    Field(discriminator="method"),
]


# --------------------------------------------------------------------------- the rest of a sync


class SeedConfig(Model):
    """The first load of the destination."""

    where: str | None = Field(
        None,
        description=(
            "SQL condition limiting the seed only (e.g. `status = 'A'`); later runs see every "
            "change that passes `filter`. With `changes: {method: export_flag}`: the pending "
            "transactions the seed exports (without it, and without `export_existing`, a seed "
            "of an export exports nothing)."
        ),
    )
    export_existing: bool = Field(
        False,
        description=(
            "`changes: {method: export_flag}` only: the seed exports every pending transaction "
            "there is. Default: it records a starting point and exports nothing."
        ),
    )


class ParentLink(Model):
    """How child rows point at their parent: a column in each child table."""

    from_: list[str] = Field(
        alias="from", min_length=1, description="Source child column(s) holding the parent's key."
    )
    to: list[str] = Field(
        min_length=1, description="Destination child column(s) holding the parent's destination key."
    )

    _norm = field_validator("from_", "to", mode="before")(as_list)


class ChildSync(Model):
    """Child rows (e.g. order lines) delivered with their parent as one unit."""

    from_: SourceRef = Field(
        alias="from", description="Source child table (`connection` must be the parent's)."
    )
    to: DestRef = Field(description="Destination child table (`connection` must be the parent's).")
    parent: ParentLink = Field(description="Columns linking a child to its parent.")
    key: KeyMap = Field(description="The child's natural key (including the parent columns).")
    fields: dict[str, FieldRule] = Field(description="Destination child field → rule, as for the parent.")


class SyncConfig(Model):
    """One table-to-table mapping."""

    from_: SourceRef = Field(alias="from", description="Where the rows come from.")
    to: DestRef = Field(description="Where they go.")
    key: KeyMap = Field(description="The natural key on both sides; writes are upserts by it.")
    fields: dict[str, FieldRule] = Field(
        description="Destination field → rule. A string is short for `{from: column}`."
    )
    changes: Changes = Field(description="How changes are found; `method` picks the kind.")
    filter: str | None = Field(
        None, description="SQL condition on the source that always applies (seed and changes)."
    )
    on_null: Literal["send", "omit", "default", "reject"] = Field(
        "send",
        description=(
            "What a NULL source value does to a field without its own `on_null`: `send` it "
            "(the destination field is cleared), `omit` the field, use the field's `default`, or "
            "`reject` the record."
        ),
    )
    seed: SeedConfig = Field(default_factory=SeedConfig, description="The first load.")
    deletes: DeletesConfig = Field(default_factory=DeletesConfig, description="Delete policy.")
    delivery: DeliveryConfig = Field(
        default_factory=DeliveryConfig, description="Delivery mode and batch size."
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig,
        description=(
            "When `mapsync daemon` runs the sync (`every`, `cron` or `follow`), and timing expectations."
        ),
    )
    retry: RetryConfig | None = Field(
        None,
        description=(
            "Retry the sync's record errors automatically under `mapsync daemon` (`every` or "
            "`cron`, `max_attempts`). Without it, only `mapsync retry` does."
        ),
    )
    after: list[str] = Field(
        default_factory=list,
        description="Syncs that must run before this one in a pass (e.g. orders after customers).",
    )
    children: dict[str, ChildSync] = Field(
        default_factory=dict, description="Child tables delivered with each parent row."
    )
    webhook: WebhookConfig | None = Field(
        None, description="Accept signed pushes for this sync at `mapsync serve` (`POST /webhooks/<sync>`)."
    )
    monitors: MonitorsConfig | None = Field(
        None, description="This sync's monitor thresholds, over the sheet's `monitors:`."
    )
    owns_table: bool = Field(
        False,
        description=(
            "The destination table is mapsync's alone: `mapsync reconcile --repair` may delete rows "
            "the key ledger never saw (otherwise only rows mapsync delivered)."
        ),
    )

    _norm = field_validator("after", mode="before")(as_list)


class Sheet(Model):
    """A mapping sheet."""

    version: Literal[1] = Field(description="Sheet format version; `1`.")
    connections: dict[str, Connection] = Field(description="Named systems, referenced by syncs.")
    state: StateConfig = Field(default_factory=StateConfig, description="The state store.")
    syncs: dict[str, SyncConfig] = Field(min_length=1, description="Named syncs, run in order (`after`).")
    monitors: MonitorsConfig = Field(
        default_factory=MonitorsConfig, description="Monitor thresholds for every sync (`mapsync monitor`)."
    )
    alerts: AlertsConfig | None = Field(
        None, description="Who is told of incidents, and how. Left out: incidents are only logged."
    )
    reconcile: dict[str, ReconcileCheck] = Field(
        default_factory=dict,
        description="Named checks of delivery quality (`mapsync reconcile`): business totals and drift.",
    )
    web: WebConfig | None = Field(None, description="The dashboard's users and security (`mapsync serve`).")

    @field_validator("connections", mode="before")
    @classmethod
    def _default_kind(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ({"kind": "sql", **v} if isinstance(v, dict) and "kind" not in v else v)
                for k, v in value.items()
            }
        return value
