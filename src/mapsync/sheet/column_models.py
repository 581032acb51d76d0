"""Destination columns declared in the sheet, for a destination without a catalog (REST, CIMcloud).

A SQL destination reads types, lengths and NOT NULL from its catalog; an API has none, so the
sheet may declare them under `to: columns:`. They become the destination's `ColumnInfo`, and the
same checks apply before sending: length (and `truncate: auto`), required, numeric range.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Literal

from pydantic import Field, model_validator

from mapsync.sheet.base import Model

ColumnType = Literal["string", "integer", "decimal", "number", "boolean", "date", "datetime"]

PYTHON_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "decimal": decimal.Decimal,
    "number": float,
    "boolean": bool,
    "date": dt.date,
    "datetime": dt.datetime,
}


class DestColumn(Model):
    """One destination field of a REST or CIMcloud end, as the sheet declares it."""

    type: ColumnType = Field(
        "string",
        description=(
            "What the API expects: `string`, `integer`, `decimal`, `number` (float), `boolean`, "
            "`date` or `datetime`. A value is converted to it before sending (a value that does "
            "not convert is a record error naming the field)."
        ),
    )
    length: int | None = Field(
        None,
        ge=1,
        description=(
            "Most characters the API accepts (a `string`). A longer value is a record error, or "
            "is cut to it by `truncate: auto`."
        ),
    )
    required: bool = Field(
        False,
        description="The API refuses an empty (NULL) value: such a record is a record error naming it.",
    )
    precision: int | None = Field(
        None, ge=1, le=1000, description="For `decimal`: total digits, as in NUMERIC(precision, scale)."
    )
    scale: int | None = Field(
        None, ge=0, le=1000, description="For `decimal`: digits after the point (needs `precision`)."
    )

    @model_validator(mode="after")
    def _fits(self) -> DestColumn:
        if self.length is not None and self.type != "string":
            raise ValueError(f"`length` is for a `string` column, not `{self.type}`")
        if (self.precision is not None or self.scale is not None) and self.type != "decimal":
            raise ValueError(f"`precision`/`scale` are for a `decimal` column, not `{self.type}`")
        if self.scale is not None and self.precision is None:
            raise ValueError("`scale` needs `precision`")
        if self.scale is not None and self.precision is not None and self.scale > self.precision:
            raise ValueError(f"`scale` {self.scale} > `precision` {self.precision}")
        return self
