"""`mapsync unmapped` (values a rule could not place, with hints) and `mapsync retry`."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from mapsync import countries, keys, transforms
from mapsync.cli import (
    Exit,
    JsonOpt,
    SheetArg,
    SyncOpt,
    _execute,
    _fail,
    _json,
    _load,
    _names,
    _store,
    app,
    out,
)
from mapsync.sheet import models
from mapsync.state import unmapped as state_unmapped


def _field_rule(sync: models.SyncConfig, field: str) -> models.FieldRule | None:
    if field in sync.fields:
        return sync.fields[field]
    for child in sync.children.values():
        if field in child.fields:
            return child.fields[field]
    return None


def suggest(rule: str, value: str, spec: models.FieldRule | None) -> list[str]:
    """Near misses: close country names and aliases for `country`, close map keys for `map`."""
    if rule == "country":
        names = countries.country_spellings()
        close = difflib.get_close_matches(transforms._normalize(value), list(names), n=5, cutoff=0.75)
        return list(dict.fromkeys(names[c].name for c in close))[:3]
    if rule == "map" and spec is not None and spec.map:
        return difflib.get_close_matches(value, [str(k) for k in spec.map], n=3, cutoff=0.6)
    return []


def snippet(rule: str, value: str, suggestions: list[str], spec: models.FieldRule | None) -> str:
    """The sheet text that would map the value (the target left as `...` when there is no hint)."""
    key = json.dumps(value, ensure_ascii=False)
    if rule == "country":
        target = json.dumps(suggestions[0], ensure_ascii=False) if suggestions else "..."
        return f"map: {{{key}: {target}}}, on_unknown: keep  # map runs before country"
    if rule == "map":
        table = {str(k): v for k, v in (spec.map or {}).items()} if spec is not None else {}
        target = json.dumps(table[suggestions[0]], ensure_ascii=False) if suggestions else "..."
        return f"map: {{{key}: {target}}}"
    return f"{rule}: add {key} to its table"


def _entries(loaded: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out_rows = []
    for row in rows:
        cfg = loaded.sheet.syncs.get(row["sync"])
        spec = _field_rule(cfg, row["field"]) if cfg is not None else None
        hints = suggest(row["rule"], row["value"], spec)
        sample = keys.text_as_json(row["sample_key"], keys.columns_of(loaded.sheet, row["sync"]))
        out_rows.append(
            {
                **row,
                "sample_key": sample,
                "suggestions": hints,
                "snippet": snippet(row["rule"], row["value"], hints, spec),
            }
        )
    return out_rows


@app.command("unmapped")
def unmapped_cmd(
    sheet: SheetArg,
    sync: SyncOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved values.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Values a `map`, `country` or lookup rule could not place, with near misses.

    Each with the sheet text that would map it; exit 1 while any is open, 0 when none.
    """
    loaded = _load(sheet)
    if sync is not None:
        _names(loaded, sync)
    store = _store(loaded, create=False)
    try:
        with store.engine.connect() as conn:
            rows = _entries(loaded, state_unmapped.listing(conn, sync, all_))
    finally:
        store.close()
    if as_json:
        _json(rows)
    elif not rows:
        out.print("no open unmapped values")
    else:
        table = Table("sync", "field", "rule", "value", "count", "first seen", "last seen", "did you mean")
        for row in rows:
            table.add_row(
                row["sync"],
                row["field"],
                row["rule"],
                repr(row["value"]),
                str(row["count"]),
                row["first_seen"],
                row["last_seen"],
                ", ".join(row["suggestions"]),
            )
        out.print(table)
        for row in rows:
            if row["resolved_at"] is None:
                out.print(f"  {row['sync']}.{row['field']}: {row['snippet']}", highlight=False, markup=False)
    if any(row["resolved_at"] is None for row in rows):
        raise Exit(1)


@app.command()
def retry(
    sheet: SheetArg,
    sync: SyncOpt = None,
    field: Annotated[
        str | None, typer.Option("--field", "-f", help="Only records rejected for this field.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            "-k",
            help="Only the record of this key (with --sync): `KEY`, or `col=value,col=value` for a "
            "compound key.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-send the records of open record errors, read afresh from the source by key.

    For after a sheet fix; the capture cursor stays where it is. Exit 1 when some are still
    rejected or gone.
    """
    loaded = _load(sheet)
    names = _names(loaded, sync)
    wanted = None
    if key is not None:
        if sync is None:
            raise _fail("--key goes with --sync", 2)
        try:
            wanted = keys.parse_arg(key, keys.columns_of(loaded.sheet, sync))
        except ValueError as exc:
            raise _fail(f"--key: {exc}", 2) from None
    store = _store(loaded, create=False)
    _execute(loaded, store, names, "retry", as_json, field=field, key=wanted)
