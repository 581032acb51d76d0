"""What one reconciliation check found: the shared result of business and drift checks, as kept
in the state store (`to_json` / `from_json`) and printed by `mapsync reconcile`."""

from __future__ import annotations

import dataclasses
import decimal
from typing import Any, Literal

CAP = 1000  # entries of each list kept in a stored result (the counts stay whole)


@dataclasses.dataclass
class GroupDiff:
    """A group whose values differ, or that one side lacks (its value None there). `group` is the
    group as the destination names it (translated), as text."""

    group: tuple[str, ...]
    source: decimal.Decimal | None
    dest: decimal.Decimal | None

    @property
    def difference(self) -> decimal.Decimal:
        """source − dest, a missing side counted as 0."""
        return (self.source or decimal.Decimal(0)) - (self.dest or decimal.Decimal(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "group": list(self.group),
            "source": _text(self.source),
            "dest": _text(self.dest),
            "difference": str(self.difference),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupDiff:
        return cls(tuple(data["group"]), _dec(data["source"]), _dec(data["dest"]))


@dataclasses.dataclass
class Extra:
    """A destination row the key ledger does not hold live: its key values, and the ledger's key
    text when the ledger knows the row (mapsync delivered it once and its delete since)."""

    dest_key: tuple[Any, ...]
    ledger_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"dest_key": [_plain(v) for v in self.dest_key], "ledger_key": self.ledger_key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Extra:
        return cls(tuple(data["dest_key"]), data.get("ledger_key"))


@dataclasses.dataclass
class Read:
    """What a check read from one side: rows, and bytes where known (estimates from text lengths)."""

    rows: int = 0
    bytes: int = 0


@dataclasses.dataclass
class SideTotals:
    """One side of a business check, aggregated: the value per group (the group's values as text,
    source groups not yet translated), what reading it cost, and whether it is whole (an API side
    stopped at `max_calls` is not: its groups are not compared)."""

    values: dict[tuple[str, ...], decimal.Decimal]
    read: Read = dataclasses.field(default_factory=Read)
    calls: int = 0
    complete: bool = True
    note: str | None = None


@dataclasses.dataclass
class CheckResult:
    """One check's outcome. Business checks fill the group lists, drift checks the key lists."""

    check: str
    kind: Literal["business", "drift"]
    sync: str | None = None
    compared: int = 0
    matched: int = 0
    mismatched: list[GroupDiff] = dataclasses.field(default_factory=list)
    missing_source: list[GroupDiff] = dataclasses.field(default_factory=list)
    missing_dest: list[GroupDiff] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    extra: list[Extra] = dataclasses.field(default_factory=list)
    undigested: int = 0
    calls: int = 0
    read: dict[str, Read] = dataclasses.field(default_factory=dict)
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # the whole counts when the lists were capped (from_json of a large result)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    LISTS = ("mismatched", "missing_source", "missing_dest", "changed", "missing", "extra")

    def count(self, name: str) -> int:
        return self.counts.get(name, len(getattr(self, name)))

    def differences(self) -> int:
        return sum(self.count(n) for n in self.LISTS)

    @property
    def ok(self) -> bool:
        """Nothing differs and everything was compared: a drift check with live ledger entries
        that have no digest yet (`undigested`) is not ok, however little it found."""
        return self.error is None and self.differences() == 0 and self.undigested == 0

    @property
    def status(self) -> str:
        """`error` (could not run), `differs`, `incomplete` (nothing found, but `undigested`
        entries were not compared: `mapsync reconcile SHEET --sync S --backfill`) or `ok`."""
        if self.error is not None:
            return "error"
        if self.differences():
            return "differs"
        return "incomplete" if self.undigested else "ok"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.check,
            "kind": self.kind,
            "sync": self.sync,
            "status": self.status,
            "compared": self.compared,
            "matched": self.matched,
            "differences": self.differences(),
            "undigested": self.undigested,
            "calls": self.calls,
            "read": {k: dataclasses.asdict(v) for k, v in self.read.items()},
            "error": self.error,
            "notes": list(self.notes),
            "counts": {n: self.count(n) for n in self.LISTS},
        }
        for name in self.LISTS:
            items = getattr(self, name)[:CAP]
            out[name] = [i if isinstance(i, str) else i.to_json() for i in items]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        groups = {n: [GroupDiff.from_json(g) for g in data.get(n, [])] for n in cls.LISTS[:3]}
        return cls(
            check=data["check"],
            kind=data["kind"],
            sync=data.get("sync"),
            compared=data.get("compared", 0),
            matched=data.get("matched", 0),
            changed=list(data.get("changed", [])),
            missing=list(data.get("missing", [])),
            extra=[Extra.from_json(e) for e in data.get("extra", [])],
            undigested=data.get("undigested", 0),
            calls=data.get("calls", 0),
            read={k: Read(**v) for k, v in data.get("read", {}).items()},
            error=data.get("error"),
            notes=list(data.get("notes", [])),
            counts=dict(data.get("counts", {})),
            **groups,
        )


def _text(value: decimal.Decimal | None) -> str | None:
    return None if value is None else str(value)


def _dec(value: str | None) -> decimal.Decimal | None:
    return None if value is None else decimal.Decimal(value)


def _plain(value: Any) -> Any:
    """A key value as JSON holds it (numbers and text as they are, anything else as its text)."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
