"""The `deletes:` section of a sync: what a source delete (or an expired row) does."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mapsync.sheet.base import Model


class ExpiredRule(Model):
    """When a deleted (or updated) source row counts as expired, for `policy: by_reason`. Either
    condition is enough; it is read from the row's old image (a delete) or the row (an update)."""

    date: str | None = Field(
        None,
        description=(
            "Source column holding an expiry date or time: the row is expired once it lies before "
            "now (naive times are read as UTC; NULL never expires)."
        ),
    )
    status: str | None = Field(None, description="Source status column; with `in`.")
    in_: list[Any] | None = Field(
        None, alias="in", description="For `status`: the values that mean expired (compared as text)."
    )
    then: Literal["disable", "ignore", "hard"] = Field(
        "disable",
        description=(
            "What the delete of an expired row does. With `disable`, an update that shows the row "
            "expired is also written with `field` set to `value`."
        ),
    )

    @model_validator(mode="after")
    def _a_condition(self) -> ExpiredRule:
        if self.date is None and self.status is None:
            raise ValueError("give `date` (an expiry column) or `status` with `in`, or both")
        if (self.status is None) != (self.in_ is None):
            raise ValueError("`status` and `in` go together")
        if self.in_ is not None and not self.in_:
            raise ValueError("`in` needs at least one value")
        return self


class DeletesConfig(Model):
    """What a delete at the source does at the destination."""

    policy: Literal["ignore", "disable", "hard", "by_reason"] = Field(
        "ignore",
        description=(
            "`ignore`, `disable` (set `field` to `value`), `hard` (delete the row by key), or "
            "`by_reason`: `expired` rows get `expired.then`, the others `otherwise`; a delete "
            "without an old image to judge is disabled."
        ),
    )
    field: str | None = Field(
        None, description="For `disable`, `by_reason` and `fallback`: the destination field to set."
    )
    value: Any = Field(None, description="The value of `field` that marks a row disabled.")
    expired: ExpiredRule | None = Field(None, description="For `by_reason`: when a row counts as expired.")
    otherwise: Literal["hard", "disable", "ignore"] | None = Field(
        None, description="For `by_reason`: what the delete of a row that did not expire does."
    )
    fallback: Literal["disable"] | None = Field(
        None,
        description=(
            "`disable`: a hard delete the destination refuses (a foreign key, no DELETE "
            "permission) sets `field` to `value` instead, and the run reports it."
        ),
    )
    max_delete_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Mass-delete guard: a run that would delete more than this share of the rows the "
            "key ledger holds live, or whose source read looks empty or partial (fewer rows "
            "than `1 - max_delete_ratio` of them), is refused before any delete is sent "
            "(`mapsync run --force-deletes` lets one run through). At `1` only an empty source "
            "read is refused."
        ),
    )

    @model_validator(mode="after")
    def _disable_needs_field(self) -> DeletesConfig:
        disables = self.policy in ("disable", "by_reason") or self.fallback == "disable"
        if disables and (self.field is None or "value" not in self.model_fields_set):
            what = (
                "fallback: disable"
                if self.policy not in ("disable", "by_reason")
                else f"policy: {self.policy}"
            )
            raise ValueError(f"`{what}` needs `field` and `value`")
        if self.policy == "by_reason" and (self.expired is None or self.otherwise is None):
            raise ValueError(
                "`policy: by_reason` needs `expired` (e.g. `{date: valid_until}`) and `otherwise` "
                "(e.g. `hard`)"
            )
        if self.policy != "by_reason" and (self.expired is not None or self.otherwise is not None):
            raise ValueError("`expired` and `otherwise` go with `policy: by_reason`")
        return self
