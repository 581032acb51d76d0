"""The one outside form of a record key (docs/operations.md, "Record keys").

Inside mapsync a key is a tuple of values in the order of the sync's `key` columns, stored as
the JSON text of a list (`records.key_text`). Outside it is written in two ways only:

- in JSON output: an object by key column, `{"customer_no": "C10013"}`, also for compound keys
  (`{"order_no": 50121, "line_no": 2}`);
- on the command line: `KEY` for a one-column key (the value as is), `col=value,col=value` for a
  compound key (every column once, any order). In a value, `\\`, `,` and `=` are written `\\\\`,
  `\\,` and `\\=`. A one-column key may also be written `col=value` (escaped the same way;
  a value that itself starts with `col=` is always written so).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from mapsync.records import Key

if TYPE_CHECKING:
    from mapsync.sheet.models import Sheet

_ESCAPES = {"\\": "\\\\", ",": "\\,", "=": "\\="}


def from_text(text: str) -> Key:
    """The key stored as `records.key_text` (a JSON list) back as a tuple."""
    return tuple(json.loads(text))


def as_json(key: Key, columns: Sequence[str]) -> dict[str, Any]:
    """The JSON form: an object by key column. Extra or missing columns keep their position."""
    return {name: _plain(value) for name, value in zip(_names(key, columns), key, strict=True)}


def text_as_json(text: str | None, columns: Sequence[str]) -> dict[str, Any] | None:
    """A stored key text in its JSON form (None stays None)."""
    return None if text is None else as_json(from_text(text), columns)


def to_arg(key: Key, columns: Sequence[str]) -> str:
    """The command-line form of a key."""
    names = _names(key, columns)
    if len(key) == 1:
        value = _str(key[0])
        return f"{names[0]}={_escape(value)}" if value.startswith(f"{names[0]}=") else value
    return ",".join(f"{c}={_escape(_str(v))}" for c, v in zip(_names(key, columns), key, strict=True))


def parse_arg(text: str, columns: Sequence[str]) -> tuple[str, ...]:
    """A key written on the command line, as text values in key-column order.

    Raises ValueError with a message naming the columns it expects."""
    columns = list(columns)
    if len(columns) == 1:
        prefix = f"{columns[0]}="
        return (_unescape(text[len(prefix) :]) if text.startswith(prefix) else text,)
    values: dict[str, str] = {}
    for part in _split(text, ","):
        name, sep, value = _split_once(part)
        if not sep:
            raise ValueError(f"key {text!r}: write it as {_shape(columns)}")
        if name not in columns:
            raise ValueError(f"key {text!r}: unknown key column {name!r} (the key is {_shape(columns)})")
        if name in values:
            raise ValueError(f"key {text!r}: column {name!r} given twice")
        values[name] = _unescape(value)
    missing = [c for c in columns if c not in values]
    if missing:
        raise ValueError(f"key {text!r}: missing {', '.join(missing)} (the key is {_shape(columns)})")
    return tuple(values[c] for c in columns)


def matches(key: Key, wanted: tuple[str, ...]) -> bool:
    """Whether a stored key is the one written on the command line (compared as text)."""
    return len(key) == len(wanted) and all(_str(v) == w for v, w in zip(key, wanted, strict=True))


def find(stored: Iterable[Key], wanted: Sequence[tuple[str, ...]]) -> list[Key | None]:
    """For each key written on the command line (`parse_arg`), the stored key it names, or None
    (compared as `matches` does, through one index: many keys against many stored ones stay
    linear)."""
    index: dict[tuple[str, ...], Key] = {}
    for key in stored:
        index.setdefault(tuple(_str(v) for v in key), key)
    return [index.get(w) for w in wanted]


def _names(key: Key, columns: Sequence[str]) -> list[str]:
    """The key's column names (`key1`, `key2`… if the sheet no longer says them)."""
    return list(columns) if len(columns) == len(key) else [f"key{i + 1}" for i in range(len(key))]


def _shape(columns: Sequence[str]) -> str:
    return ",".join(f"{c}=VALUE" for c in columns)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _escape(value: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def _unescape(value: str) -> str:
    out, escaped = [], False
    for ch in value:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    if escaped:
        out.append("\\")
    return "".join(out)


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` where it is not escaped (the escapes stay in the parts)."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _split_once(part: str) -> tuple[str, str, str]:
    """`name=value` at the first unescaped `=` (names cannot hold escapes)."""
    pieces = _split(part, "=")
    if len(pieces) == 1:
        return part, "", ""
    return pieces[0], "=", "=".join(pieces[1:])


def columns_of(sheet: Sheet | None, sync: str) -> list[str]:
    """The source key columns of `sync` (empty when the sheet is not known or lacks it)."""
    cfg = sheet.syncs.get(sync) if sheet is not None else None
    return list(cfg.key.from_) if cfg is not None else []
