"""What a change-log reader returns: row changes grouped by source transaction."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class RowChange:
    """One row change from the log. `table`: MAIN or a child's name; `op`: I, U or D."""

    table: str
    op: str
    new: dict[str, Any] | None
    old: dict[str, Any] | None


@dataclasses.dataclass
class Txn:
    """The row changes of one committed source transaction and the log position after it."""

    changes: list[RowChange]
    position: dict[str, Any]
