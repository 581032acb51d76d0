"""The sheet model of the database change-log capture (`changes: {method: log}`)."""

from __future__ import annotations

import re
import zlib
from typing import Any, Literal

from pydantic import Field, field_validator

from mapsync.sheet.base import ChangesModel

_UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?b?)\s*$", re.IGNORECASE)
SLOT_PATTERN = r"^[a-z0-9_]{1,63}$"


def parse_size(value: Any) -> Any:
    """`1GB`, `500MB`, `2048` (bytes) → bytes; 1 KB = 1024 bytes."""
    if isinstance(value, str):
        found = _SIZE.match(value)
        if found is None:
            raise ValueError(f"{value!r} is not a size: write e.g. `1GB`, `500MB`")
        return int(float(found.group(1)) * _UNITS[found.group(2).lower()])
    return value


def format_size(value: int) -> str:
    for unit in ("TB", "GB", "MB", "KB"):
        size = _UNITS[unit.lower()]
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


class LogChanges(ChangesModel):
    """Changes read from the database's own change log: PostgreSQL logical decoding through a
    replication slot, MariaDB/MySQL row-based binlog. Sees inserts, updates and deletes; the
    position moves only after the destination confirmed (`mapsync changelog install` first)."""

    method: Literal["log"] = Field(description="`log`.")
    slot: str | None = Field(
        None,
        pattern=SLOT_PATTERN,
        description=(
            "PostgreSQL: name of the logical replication slot (lower-case letters, digits, `_`, "
            "at most 63). Default `mapsync_<sync>` (other characters become `_`). One slot per "
            "sync: two syncs must not share one."
        ),
    )
    plugin: Literal["wal2json", "test_decoding"] = Field(
        "test_decoding",
        description=(
            "PostgreSQL: output plugin of the slot. `test_decoding` (ships with PostgreSQL, text "
            "format, filtered by mapsync; tested against a real server) or `wal2json` (package "
            "`postgresql-NN-wal2json`, JSON per row, filtered to the sync's tables on the server; "
            "its parser is tested on sample output only). Fixed when the slot is created."
        ),
    )
    server_id: int | None = Field(
        None,
        ge=1,
        le=4_294_967_295,
        description=(
            "MariaDB/MySQL: the replica `server_id` mapsync reads the binlog as. It must differ "
            "from the server's own and from every real replica's. Default: derived from the sync "
            "name (2000000000 + a hash)."
        ),
    )
    max_retained_wal: int = Field(
        1 << 30,
        gt=0,
        description=(
            "PostgreSQL: `mapsync changelog status` warns when the slot holds more WAL than this "
            "(a size such as `1GB`, `500MB`). A slot that is not advanced keeps WAL forever and "
            "can fill the server's disk."
        ),
    )

    _size = field_validator("max_retained_wal", mode="before")(parse_size)

    def slot_name(self, sync: str) -> str:
        """The slot of sync `sync`: `slot`, or `mapsync_<sync>` cut to 63 characters."""
        if self.slot:
            return self.slot
        base = "mapsync_" + re.sub(r"[^a-z0-9_]", "_", sync.lower())
        if len(base) > 63:
            base = f"{base[:54]}_{zlib.crc32(sync.encode()):08x}"
        return base

    def replica_id(self, sync: str) -> int:
        """The replica server_id for the binlog connection of sync `sync`."""
        if self.server_id is not None:
            return self.server_id
        return 2_000_000_000 + zlib.crc32(sync.encode()) % 1_000_000_000
