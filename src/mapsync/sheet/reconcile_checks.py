"""`mapsync validate` checks of the sheet's `reconcile:` checks that a single model cannot make,
and the group translation plan they share with `reconcile.translate` (which sits above the sheet
layer, so the analysis of what is invertible lives here, below both).

A business check naming a `sync` compares the destination's groups with the source's groups as
the sync would write them. Each destination group column must be written by the sync from the
source group column at the same position, by a rule that maps distinct values to distinct values:

- the key (`key.from` → `key.to`): a rename;
- a field `dest: src` or `{from: src}`, optionally with `cast: str` (no change as text) or
  `cast: int` (`"007"` → `7`), and with checks that do not change the value (`required`,
  `pattern`, `min`, `max`, `enum`, `on_null: send|omit|reject`);
- a field with a one-to-one `map:` (values all distinct as text; `on_unknown: reject` or `keep`),
  optionally followed by `cast: str|int`.

Anything else (`truncate`, `case`, `trim`, `split`, `country`, `lookup`, `map_from`, `template`,
`value`, `default`, `python`, `timezone`, a `map` whose values repeat or with `on_unknown:
default`) merges or invents values: the check is refused, naming the rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import difflib
import re
import uuid
from typing import Any

from mapsync.casts import plain_decimal
from mapsync.sheet import models
from mapsync.sheet.reconcile_models import ReconcileCheck, Side

Path_ = tuple[str | int, ...]

NULL_TEXT = "<null>"  # how a NULL group value reads as text

# rules that change a value so that distinct source values may meet, or that invent a value
_NOT_INVERTIBLE = (
    "value",
    "template",
    "default",
    "trim",
    "case",
    "split",
    "map_from",
    "country",
    "lookup",
    "scale",
    "format",
    "timezone",
    "python",
    "truncate",
)
_CASTS_KEPT = (None, "str", "int")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def group_text(value: Any) -> str:
    """A group value as text, the one form both sides are compared in: NULL → `<null>`; integers
    as digits; decimals and integral floats without trailing fractional zeros and never with an
    exponent (`7.00` → `7`, `12.30` → `12.3`); booleans `1`/`0`; dates and times ISO 8601;
    binary lowercase hex; text with its trailing spaces removed (a CHAR(n) column pads, and
    MariaDB's PAD SPACE collations group `'A'` with `'A '` anyway); anything else `str()`."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        value = decimal.Decimal(repr(value))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return plain_decimal(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value).rstrip(" ")


@dataclasses.dataclass(frozen=True)
class GroupRule:
    """How the sync turns one source group column into the destination's: `field` is the
    destination field (None: the key), `map` the one-to-one value map by group text (None: a
    rename), `keep` whether an unlisted value passes unchanged, `cast_int` whether `cast: int`
    follows."""

    source: str
    dest: str
    field: str | None = None
    map: dict[str, str] | None = None
    keep: bool = False
    cast_int: bool = False


class Untranslatable(Exception):
    """The check's groups cannot go through its sync's rules: `path` is where, `args[0]` why."""

    def __init__(self, path: Path_, message: str) -> None:
        super().__init__(message)
        self.path = path


def group_rules(sheet: models.Sheet, name: str, check: ReconcileCheck) -> list[GroupRule] | None:
    """The plan translating the source's group values into the destination's (None: the check
    names no sync, values are compared as they are), or Untranslatable."""
    if check.sync is None or check.source is None or check.dest is None:
        return None
    cfg = sheet.syncs.get(check.sync)
    if cfg is None:
        raise Untranslatable(("reconcile", name, "sync"), _unknown("sync", check.sync, set(sheet.syncs)))
    return [
        _rule(name, check.sync, cfg, src, dst, at)
        for at, (src, dst) in enumerate(zip(check.source.group, check.dest.group, strict=True))
    ]


def _rule(check: str, sync: str, cfg: models.SyncConfig, src: str, dst: str, at: int) -> GroupRule:
    where: Path_ = ("reconcile", check, "source", "group", at)
    lead = f"check {check}: group {src} cannot be translated through sync {sync}"
    if dst in cfg.key.to:
        written_by = cfg.key.from_[cfg.key.to.index(dst)]
        if written_by != src:
            raise Untranslatable(where, f"{lead}: the key writes {dst} from {written_by}, not from {src}")
        return GroupRule(src, dst)
    spec = cfg.fields.get(dst)
    if spec is None:
        readers = [f for f, r in cfg.fields.items() if r.from_ == src]
        also = f" (it writes {src} to {', '.join(readers)})" if readers else ""
        raise Untranslatable(
            where, f"{lead}: the sync writes no field {dst} (dest.group at the same position){also}"
        )
    if spec.from_ != src:
        got = f"from {spec.from_}" if spec.from_ is not None else "not from a source column"
        raise Untranslatable(where, f"{lead}: field {dst} is written {got}")
    used = [r for r in _NOT_INVERTIBLE if getattr(spec, r) is not None and getattr(spec, r) is not False]
    if spec.on_null == "default":
        used.append("on_null: default")
    if spec.cast not in _CASTS_KEPT:
        used.append(f"cast: {spec.cast}")
    if used:
        raise Untranslatable(where, f"{lead}: field {dst} uses {', '.join(used)} (not invertible)")
    table: dict[str, str] | None = None
    if spec.map is not None:
        if spec.on_unknown == "default":
            raise Untranslatable(
                where, f"{lead}: field {dst} maps unlisted values to `map_default` (not invertible)"
            )
        table = {group_text(k): _cast(group_text(v), spec.cast) for k, v in spec.map.items()}
        seen: dict[str, str] = {}
        for key, value in table.items():
            if value in seen:
                raise Untranslatable(
                    where,
                    f"{lead}: field {dst} maps both {seen[value]!r} and {key!r} to {value!r} "
                    "(not invertible)",
                )
            seen[value] = key
    return GroupRule(src, dst, dst, table, spec.on_unknown == "keep", spec.cast == "int")


def _cast(text: str, cast: str | None) -> str:
    if cast == "int":
        try:
            return str(int(text))
        except ValueError:
            return text
    return text


def problems(sheet: models.Sheet) -> list[tuple[Path_, str]]:
    """The problems of every `reconcile:` check: connections, side kinds, names, syncs, and
    whether the groups translate through the named sync."""
    found: list[tuple[Path_, str]] = []
    for name, check in sheet.reconcile.items():
        base: Path_ = ("reconcile", name)
        if check.drift is not None:
            found.extend(_drift(sheet, base, check.drift))
            continue
        for role, side in (("source", check.source), ("dest", check.dest)):
            if side is not None:
                found.extend(_side(sheet, (*base, role), side))
        if check.sync is not None and check.sync not in sheet.syncs:
            found.append(((*base, "sync"), _unknown("sync", check.sync, set(sheet.syncs))))
            continue
        try:
            group_rules(sheet, name, check)
        except Untranslatable as exc:
            found.append((exc.path, str(exc)))
    return found


def _drift(sheet: models.Sheet, base: Path_, sync: str) -> list[tuple[Path_, str]]:
    cfg = sheet.syncs.get(sync)
    if cfg is None:
        return [((*base, "drift"), _unknown("sync", sync, set(sheet.syncs)))]
    conn = sheet.connections.get(cfg.to.connection)
    if conn is not None and conn.kind != "sql":
        return [
            (
                (*base, "drift"),
                f"sync {sync} writes to {conn.kind} connection {cfg.to.connection!r}: a drift check "
                "compares a SQL destination",
            )
        ]
    return []


def _side(sheet: models.Sheet, base: Path_, side: Side) -> list[tuple[Path_, str]]:
    conn = sheet.connections.get(side.connection)
    if conn is None:
        return [((*base, "connection"), _unknown("connection", side.connection, set(sheet.connections)))]
    found: list[tuple[Path_, str]] = []
    if conn.kind == "sql" and side.resource is not None:
        found.append(((*base, "resource"), f"connection {side.connection!r} is SQL: give `table` or `query`"))
    if conn.kind != "sql":
        for sql_only in ("table", "query"):
            if getattr(side, sql_only) is not None:
                found.append(
                    ((*base, sql_only), f"connection {side.connection!r} is {conn.kind}: give `resource`")
                )
    names: list[tuple[Path_, str]] = [((*base, "group", i), g) for i, g in enumerate(side.group)]
    if side.sum is not None:
        names.append(((*base, "sum"), side.sum))
    if side.table is not None:
        names.append(((*base, "table"), side.table))
    for path, text in names:
        bad = _bad_name(text, dotted=path[-1] == "table")
        if bad:
            found.append((path, f"{text!r} {bad}"))
    return found


def _bad_name(text: str, *, dotted: bool) -> str | None:
    """Why a column or table name from the sheet is not usable (None: it is; the catalog decides
    whether it exists, and it is always quoted)."""
    if not text.strip():
        return "is empty"
    if _CONTROL.search(text):
        return "holds a control character"
    parts = text.split(".") if dotted else [text]
    if dotted and (len(parts) > 2 or not all(p.strip() for p in parts)):
        return "is not `table` or `schema.table`"
    if len(text) > 128:
        return "is longer than 128 characters"
    return None


def _unknown(what: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known)) or 'none'})"
    return f"unknown {what} '{name}'{hint}"
