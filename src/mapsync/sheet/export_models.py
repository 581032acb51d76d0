"""The sheet model of transaction export (`changes: {method: export_flag}`): orders, payments,
returns and other transactions picked up by a flag column of their header and marked once the
destination committed them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from mapsync.sheet.base import ChangesModel, Model
from mapsync.sheet.export_rest_models import ExportSweep, ExportWriteBack

Column = str  # a column name of the source table (validated against its catalog when the sync is built)
FlagValue = bool | int | str  # bool first: `true` stays a boolean, 1 stays an integer


def _zero() -> list[FlagValue]:
    return [0]


class ExportStatuses(Model):
    """The values written into the `status` column (when the sheet names one)."""

    pending: str = Field(
        "pending", max_length=64, description="Written by `mapsync reexport` with the reset."
    )
    success: str = Field("success", max_length=64, description="The destination committed the transaction.")
    failed: str = Field(
        "failed", max_length=64, description="Refused (by the mapping or the destination); `error` says why."
    )
    skipped: str = Field(
        "skipped",
        max_length=64,
        description=(
            "`on_exists: skip` found the transaction in the destination already, changed there, and "
            "left it alone (`error` says `already imported`)."
        ),
    )


class ExportDocument(Model):
    """The destination's own document number, read back after the write and stored at the source."""

    from_: Column = Field(
        alias="from", description="The destination column holding it (e.g. `erp_order_number`)."
    )
    to: Column = Field(description="The source column it is written into.")


class ExportFlagChanges(ChangesModel):
    """Transactions picked up by a flag on their header (`exported IS NULL OR exported = 0`),
    delivered with their child rows as one unit, and marked only after the destination committed
    them: the flag, a status and the destination's error message are written back, on condition
    that the row is still the version that was exported (an order edited meanwhile is exported
    again). Every pending row is sent, whatever the key ledger holds: a reset flag is a request to
    send again. A seed records a starting point and exports nothing unless
    `seed: {export_existing: true}` (or a `seed.where`) says otherwise."""

    can_emit_deletes: ClassVar[bool] = False  # a transaction is exported, never deleted by the export

    method: Literal["export_flag"] = Field(description="`export_flag`.")
    flag: Column = Field(
        description="The flag column (e.g. `exported`) that selects work and is set once delivered."
    )
    pending: list[FlagValue] = Field(
        default_factory=_zero,
        min_length=1,
        description="Flag values that mean *send this* (NULL always does).",
    )
    done: FlagValue = Field(
        1, description="Flag value written once the destination committed the transaction."
    )
    status: Column | None = Field(
        None, description="Column for the import status (e.g. `erp_import_status`; values: `statuses`)."
    )
    statuses: ExportStatuses = Field(default_factory=ExportStatuses, description="The status values written.")
    error: Column | None = Field(
        None,
        description=(
            "Column for the destination's or the mapping's message (e.g. `erp_import_error`); "
            "capped to the column's length, secrets redacted, cleared on success."
        ),
    )
    version: Column | None = Field(
        None,
        description=(
            "A column that changes with every edit (a timestamp or a row version). The write-back "
            "happens only where it still holds the exported value. Default: a hash of the exported "
            "columns and child rows, compared under a row lock."
        ),
    )
    document: ExportDocument | None = Field(
        None, description="Copy the destination's document number back into the source row."
    )
    on_failure: Literal["retry", "hold"] = Field(
        "retry",
        description=(
            "`retry`: the flag stays pending; the record error is retried by the sync's `retry:` "
            "schedule (up to its `max_attempts`) or `mapsync retry`, and an edit of the row (a new "
            "version) is exported by the next run. `hold`: the flag becomes `failed_value` and waits "
            "for a worker's reset (or `mapsync reexport`)."
        ),
    )
    failed_value: FlagValue = Field(2, description="Flag value written on failure with `on_failure: hold`.")
    on_exists: Literal["update", "skip", "fail"] = Field(
        "update",
        description=(
            "A transaction the destination already holds (a re-export, a rerun after a crash): "
            "`update` writes it again, `skip` leaves a row that differs from what mapsync would "
            "write alone (the destination has started processing it) and writes back "
            "`statuses.skipped` with `already imported`, `fail` makes it a record error."
        ),
    )
    started: str | None = Field(
        None,
        description=(
            "SQL condition on the destination's row that says the destination has started "
            "processing the transaction (e.g. `status <> 'new'`): with `on_exists: skip|fail`, "
            "only such rows are left alone or refused; any other is updated. Without it, a row "
            "that differs from what mapsync would write counts as started (so does one whose "
            "source was edited since: name `started` to tell the two apart)."
        ),
    )
    since: Column | None = Field(
        None,
        description=(
            "Column that grows with each new transaction (an id or a creation time): a seed records "
            "its largest value, and runs pick up only pending rows beyond it. Default: the key, "
            "when it is a single column. Not used with `seed: {export_existing: true}`."
        ),
    )
    created: Column | None = Field(
        None,
        description=(
            "Creation time of a transaction, for the `export_pickup` monitor (not picked up within "
            "`monitors.export_pickup`) and `mapsync status`."
        ),
    )
    touch: list[Column] = Field(
        default_factory=list,
        description=(
            "Columns set to themselves by the write-back, so it moves no last-modified time. "
            "MariaDB's `ON UPDATE CURRENT_TIMESTAMP` columns and `version` are always added."
        ),
    )

    write_back: ExportWriteBack | None = Field(
        None,
        description=(
            "An export from an API (CIMcloud `OnlineOrders`): the resource the status is written "
            "to (`flag`, `status`, `error`, `document.to` are its fields). Default for such a "
            "source: CIMcloud's `orders` by the sync's key."
        ),
    )
    sweep: ExportSweep | None = Field(
        None,
        description=(
            "An export from an API: find orders marked exported there but never received "
            "(`mapsync sweep`; the daemon with `every`)."
        ),
    )

    @model_validator(mode="after")
    def _distinct(self) -> ExportFlagChanges:
        written = [c for c in (self.flag, self.status, self.error) if c is not None]
        if self.document is not None:
            written.append(self.document.to)
        if len(set(written)) != len(written):
            raise ValueError("`flag`, `status`, `error` and `document.to` must be different columns")
        if self.done in self.pending:
            raise ValueError(f"`done` ({self.done!r}) cannot also be a `pending` value")
        if self.on_failure == "hold" and (
            self.failed_value in self.pending or self.failed_value == self.done
        ):
            raise ValueError("`failed_value` must differ from `done` and from every `pending` value")
        for col in (self.version, *self.touch):
            if col is not None and col in written:
                raise ValueError(f"column {col!r} is written back: it cannot be `version` or in `touch`")
        return self

    def written_columns(self) -> list[str]:
        """The source columns the write-back sets (queue triggers ignore updates of only these)."""
        cols = [c for c in (self.flag, self.status, self.error) if c is not None]
        return [*cols, self.document.to] if self.document is not None else cols
