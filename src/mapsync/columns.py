"""What a catalog says about one column: the shared vocabulary of connectors, the mapping
compiler and the change-log reader (a data type only; it lives below them all)."""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class ColumnInfo:
    """What the catalog says about one column."""

    name: str
    python_type: type | None
    length: int | None
    nullable: bool
    has_default: bool
    aware: bool  # a timestamp column that carries a time zone (timestamptz)
    type_name: str
    precision: int | None = None  # NUMERIC(precision, scale)
    scale: int | None = None
    text_nul_forbidden: bool = False  # PostgreSQL text cannot hold NUL
    allowed: tuple[str, ...] | None = None  # values an ENUM type or a list CHECK allows (as text)
    time_zone: dt.tzinfo | None = None  # a timestamp column's zone for naive times (sql_time)
    fraction: int | None = None  # fraction-of-second digits a timestamp column keeps (None: 6)
