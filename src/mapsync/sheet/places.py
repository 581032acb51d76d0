"""Where in the sheet a column is named: `file:line` of the fields that use it, for messages
about a column the database does not have (`mapsync check`)."""

from __future__ import annotations

import re

from mapsync.sheet.loader import LoadedSheet

_MISSING = re.compile(r"has no column\(s\) (.+?)(?: \(|$)")


def missing_columns(message: str) -> list[str]:
    """The column names of a "… has no column(s) 'a', 'b' (…)" message."""
    found = _MISSING.search(message)
    if found is None:
        return []
    listed = found.group(1)
    quoted = re.findall(r"'([^']*)'", listed)
    return quoted or [c.strip() for c in listed.split(",") if c.strip()]


def column_places(loaded: LoadedSheet, sync: str, side: str, columns: list[str]) -> list[str]:
    """`file:line: path` of each sheet entry of `sync` that names one of `columns` on `side`
    (`source`: `key.from`, a field's `from`; `destination`: `key.to`, a field, `deletes.field`)."""
    cfg = loaded.sheet.syncs[sync]
    base = ("syncs", sync)
    paths: list[tuple[str | int, ...]] = []
    for column in columns:
        if side == "source":
            if column in cfg.key.from_:
                paths.append((*base, "key", "from"))
            for name, rule in cfg.fields.items():
                if rule.from_ == column:
                    paths.append((*base, "fields", name, "from"))
        else:
            if column in cfg.key.to:
                paths.append((*base, "key", "to"))
            if column in cfg.fields:
                paths.append((*base, "fields", column))
            if cfg.deletes.field == column:
                paths.append((*base, "deletes", "field"))
    out = []
    for path in dict.fromkeys(paths):
        out.append(f"{loaded.where(*path)}: {'.'.join(str(p) for p in path)}")
    return out
