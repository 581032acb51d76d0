"""`reconcile:`: named checks of data delivery quality (issue 18, docs/reconcile.md).

A **business check** (`source` + `dest`) computes one aggregate per group on both sides (a sum or
a count, e.g. each customer's open AR) and compares them within a tolerance, in exact decimals.
A **drift check** (`drift: SYNC`) compares the destination rows a sync owns with what mapsync
delivered (the drift digest in the key ledger).
"""

from __future__ import annotations

import decimal
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mapsync.sheet.base import Model, Name, as_list
from mapsync.sheet.duration import Duration
from mapsync.sheet.schedule_models import _CRON_TEXT, _ZONE_TEXT, _positive, _Timed


class Side(Model):
    """One side of a business check: where the aggregate is computed. On a SQL connection, a
    `table` (+ `group`, `sum` or `count`, `where`) or a `query`; on a REST or CIMcloud connection, a
    `resource` read page by page and aggregated by mapsync (+ `group`, `sum` or `count`, `where`)."""

    connection: Name = Field(description="A connection of the sheet (SQL, REST or CIMcloud).")
    table: str | None = Field(None, description="SQL: the table to aggregate (`schema.table` allowed).")
    query: str | None = Field(
        None,
        description=(
            "SQL: a query returning the group column(s) first and the value last, one row per group "
            "(instead of `table`); `group` names its group columns."
        ),
    )
    resource: str | None = Field(None, description="REST / CIMcloud: the resource to read.")
    group: list[str] = Field(
        description="The group column(s) (SQL) or field(s) (API): one value per group, e.g. the customer."
    )
    sum: str | None = Field(None, description="The column or field summed per group.")
    count: bool = Field(False, description="Count the rows per group instead of summing.")
    where: str | dict[str, str | int | bool | None] | None = Field(
        None,
        description=(
            "SQL: a condition on the table (e.g. `open = 1`). API: field → value, rows kept when every "
            "field equals its value (compared as text)."
        ),
    )

    _norm = field_validator("group", mode="before")(as_list)

    @model_validator(mode="after")
    def _shape(self) -> Side:
        given = [k for k in ("table", "query", "resource") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of `table`, `query` or `resource`")
        if not self.group:
            raise ValueError("`group` names at least one column")
        if self.query is None and (self.sum is None) == (not self.count):
            raise ValueError("give exactly one of `sum: COLUMN` or `count: true`")
        if self.query is not None and (self.sum is not None or self.count or self.where is not None):
            raise ValueError("a `query` computes its own value: `sum`, `count` and `where` go with `table`")
        if isinstance(self.where, dict) and self.resource is None:
            raise ValueError("`where` on a SQL table is a SQL condition (text)")
        if isinstance(self.where, str) and self.resource is not None:
            raise ValueError("`where` on an API resource is field: value pairs")
        return self


class Tolerance(Model):
    """How far two values may differ and still match: `absolute` (e.g. `0.01`) or `relative` (a
    fraction of the larger absolute value, e.g. `0.001`). Exact decimals; left out: equal."""

    absolute: decimal.Decimal | None = Field(None, ge=0, description="Largest difference that matches.")
    relative: decimal.Decimal | None = Field(
        None, ge=0, le=1, description="Largest difference as a fraction of max(|source|, |dest|)."
    )

    @field_validator("absolute", "relative", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        # a YAML float (0.1) is read as its shortest text, never as its binary value
        return str(value) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _one(self) -> Tolerance:
        if (self.absolute is None) == (self.relative is None):
            raise ValueError("give one of `absolute` or `relative`")
        return self

    def matches(self, a: decimal.Decimal, b: decimal.Decimal) -> bool:
        diff = abs(a - b)
        if self.absolute is not None:
            return diff <= self.absolute
        assert self.relative is not None
        return diff <= self.relative * max(abs(a), abs(b))


class ReconcileSchedule(_Timed):
    """When `mapsync daemon` runs the check: an `every` interval or a `cron` expression (as a
    sync's `schedule`)."""

    every: Duration | None = Field(
        None, description="Check interval (e.g. `6h`), in slots counted from the Unix epoch in UTC."
    )
    cron: str | None = Field(None, description=_CRON_TEXT)
    timezone: str | None = Field(None, description=_ZONE_TEXT)

    _more_than_zero = field_validator("every")(_positive)

    @model_validator(mode="after")
    def _one_of(self) -> ReconcileSchedule:
        self._one_timing(required=True)
        return self


class ReconcileCheck(Model):
    """One named check: a business check (`source` and `dest`) or a drift check (`drift: SYNC`)."""

    sync: Name | None = Field(
        None,
        description=(
            "Business check: the sync whose field rules translate the source's group values into the "
            "destination's (only a rename or a one-to-one `map`); `--repair` re-sends this sync's "
            "records of a mismatched group."
        ),
    )
    source: Side | None = Field(None, description="Business check: the aggregate where the sync reads.")
    dest: Side | None = Field(None, description="Business check: the aggregate where the sync writes.")
    drift: Name | None = Field(
        None, description="Drift check: the sync whose destination rows are compared with the ledger."
    )
    tolerance: Tolerance | None = Field(None, description="How far values may differ (left out: equal).")
    missing: Literal["zero", "differ"] = Field(
        "zero",
        description=(
            "A group on one side only: `zero` compares it with 0 (a customer without open invoices "
            "and a portal balance of 0 match); `differ` always reports it."
        ),
    )
    schedule: ReconcileSchedule | None = Field(None, description="When `mapsync daemon` runs the check.")
    max_calls: int = Field(
        20, ge=1, description="API sides: the most calls one check may spend (it stops there and says so)."
    )

    @model_validator(mode="after")
    def _kind(self) -> ReconcileCheck:
        business = self.source is not None or self.dest is not None
        if business and self.drift is not None:
            raise ValueError("a check is a business check (`source`, `dest`) or a drift check (`drift`)")
        if not business and self.drift is None:
            raise ValueError("give `source` and `dest` (a business check) or `drift: SYNC` (a drift check)")
        if business and (self.source is None or self.dest is None):
            raise ValueError("a business check needs both `source` and `dest`")
        if business and self.source and self.dest and len(self.source.group) != len(self.dest.group):
            raise ValueError("`source.group` and `dest.group` name as many columns")
        if self.drift is not None and self.sync is not None:
            raise ValueError("a drift check names its sync in `drift` (no `sync`)")
        return self

    @property
    def kind(self) -> Literal["business", "drift"]:
        return "drift" if self.drift is not None else "business"
