"""MemoryDestination: an in-memory destination with fault injection (see mapsync.testing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from mapsync import delivery, records
from mapsync.columns import ColumnInfo
from mapsync.ports import Capabilities, DestinationBase


def as_key(key: Any) -> records.Key:
    """A key tuple; a scalar is a one-column key."""
    return tuple(key) if isinstance(key, tuple | list) else (key,)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call the destination received: its records' destination keys and what happened."""

    keys: tuple[records.Key, ...]
    fresh: bool
    outcome: Literal["ok", "refused", "failed"]


class MemoryDestination(DestinationBase):
    """Rows in a dict by destination key; every call recorded; faults on demand.

    - `reject(keys…)`: those records come back as per-record rejections, the rest is written.
    - `poison(keys…)`: a call holding one of them is refused whole, so delivery must split it
      (the same bisection SqlDestination uses, `delivery.deliver`).
    - `fail_with(exc, after=n, times=m)`: after n more good calls, the next m calls (default:
      all) raise `exc`, e.g. TransientError or PermanentError: a systemic failure.
    - `on_call`: a hook run at the start of every call (to change the world mid-run).
    """

    capabilities = Capabilities(deletes=True, children=True, read_back=True)

    def __init__(
        self,
        columns: Mapping[str, ColumnInfo] | None = None,
        child_columns: Mapping[str, Mapping[str, ColumnInfo]] | None = None,
    ) -> None:
        self.columns: dict[str, ColumnInfo] = dict(columns or {})
        self._child_columns = {name: dict(cols) for name, cols in (child_columns or {}).items()}
        self.rows: dict[records.Key, records.Row] = {}
        self.children: dict[str, dict[records.Key, list[records.Row]]] = {}
        self.calls: list[Call] = []
        self.writes = 0  # write() invocations (one per batch with something to send)
        self.rejecting: dict[records.Key, str] = {}
        self.poisoned: set[records.Key] = set()
        self.on_call: Callable[[list[records.Mapped]], None] | None = None
        self._failure: BaseException | None = None
        self._fail_after = 0
        self._fail_times: int | None = None

    # ---- faults

    def reject(self, *keys: Any, message: str = "rejected by the destination") -> None:
        for key in keys:
            self.rejecting[as_key(key)] = message

    def poison(self, *keys: Any) -> None:
        self.poisoned.update(as_key(k) for k in keys)

    def fail_with(self, exc: BaseException, *, after: int = 0, times: int | None = None) -> None:
        self._failure, self._fail_after, self._fail_times = exc, after, times

    def heal(self) -> None:
        """Clear every fault."""
        self.rejecting.clear()
        self.poisoned.clear()
        self._failure = None

    # ---- what the engine uses

    def is_empty(self) -> bool:
        return not self.rows

    def child_columns(self) -> dict[str, dict[str, ColumnInfo]]:
        return self._child_columns

    def read_keys(self, keys: Sequence[records.Key]) -> list[records.Row]:
        return [dict(self.rows[k]) for k in keys if k in self.rows]

    def write(self, batch: Sequence[records.Mapped], *, fresh: bool = False) -> records.WriteResult:
        self.writes += 1
        return delivery.deliver(batch, self._call, fresh=fresh)

    def _call(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        keys = tuple(r.dest_key for r in recs)
        if self.on_call is not None:
            self.on_call(recs)
        if self._failure is not None:
            if self._fail_after > 0:
                self._fail_after -= 1
            else:
                failure = self._failure
                if self._fail_times is not None:
                    self._fail_times -= 1
                    if self._fail_times <= 0:
                        self._failure = None
                self.calls.append(Call(keys, fresh, "failed"))
                raise failure
        bad = [k for k in keys if k in self.poisoned]
        if fresh:
            bad += [k for k in keys if k in self.rows]
        if bad:
            self.calls.append(Call(keys, fresh, "refused"))
            raise delivery.Refused(f"the call holds record {bad[0]!r}, which this destination refuses")
        rejected = []
        for rec in recs:
            message = self.rejecting.get(rec.dest_key)
            if message is not None:
                rejected.append(records.Rejection(rec.key, message, None, "destination", rec.version))
            else:
                self._apply(rec)
        self.calls.append(Call(keys, fresh, "ok"))
        return rejected

    def _apply(self, rec: records.Mapped) -> None:
        key = rec.dest_key
        if rec.op == "delete":
            self.rows.pop(key, None)
            for rows in self.children.values():
                rows.pop(key, None)
        elif rec.op == "update":
            if key in self.rows:
                self.rows[key].update(rec.values)
        else:
            self.rows[key] = {**self.rows.get(key, {}), **rec.values}
            for name, child_rows in rec.children.items():
                self.children.setdefault(name, {})[key] = [dict(r) for r in child_rows]


# --------------------------------------------------------------------------- sheet, state, engine
