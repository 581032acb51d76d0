"""`mapsync unmapped` (values a rule could not place, with hints) and `mapsync retry`."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from mapsync import countries, keys, transforms
from mapsync.cli.common import (
    Exit,
    JsonOpt,
    SheetArg,
    SyncOpt,
    app,
    execute,
    fail,
    json_out,
    load_sheet,
    open_store,
    out,
    sync_names,
)
from mapsync.sheet import models


def _field_rule(sync: models.SyncConfig, field: str) -> models.FieldRule | None:
    if field in sync.fields:
        return sync.fields[field]
    for child in sync.children.values():
        if field in child.fields:
            return child.fields[field]
    return None


READY = 0.85  # a near miss this close (and clearly the closest) is offered as a ready mapping
MARGIN = 0.05


def _near(rule: str, value: str, spec: models.FieldRule | None) -> list[tuple[float, str]]:
    """(similarity, suggestion), best first: country names and aliases, or map keys."""
    if rule == "country":
        names = countries.country_spellings()
        text = transforms.normalize(value)
        close = difflib.get_close_matches(text, list(names), n=5, cutoff=0.8)
        scored = [(difflib.SequenceMatcher(None, text, c).ratio(), names[c].name) for c in close]
    elif rule == "map" and spec is not None and spec.map:
        keys = [str(k) for k in spec.map]
        close = difflib.get_close_matches(value, keys, n=3, cutoff=0.6)
        scored = [(difflib.SequenceMatcher(None, value, c).ratio(), c) for c in close]
    else:
        return []
    best: dict[str, float] = {}
    for score, name in scored:
        best[name] = max(score, best.get(name, 0.0))
    return sorted(((s, n) for n, s in best.items()), key=lambda item: -item[0])


def suggest(rule: str, value: str, spec: models.FieldRule | None) -> list[str]:
    """Near misses: close country names and aliases for `country`, close map keys for `map`."""
    return [name for _, name in _near(rule, value, spec)][:3]


def ready(rule: str, value: str, spec: models.FieldRule | None) -> str | None:
    """The one suggestion close enough to offer as a mapping (never a far-fetched guess)."""
    near = _near(rule, value, spec)
    if not near or near[0][0] < READY or (len(near) > 1 and near[0][0] - near[1][0] < MARGIN):
        return None
    return near[0][1]


def _target(rule: str, name: str | None, spec: models.FieldRule | None) -> Any:
    if name is None:
        return None
    if rule == "map":
        return {str(k): v for k, v in (spec.map or {}).items()}.get(name) if spec is not None else None
    return name


def snippet(rule: str, value: str, suggestions: list[str], spec: models.FieldRule | None) -> str:
    """The sheet text that would map one value (the target left as `...` when there is no sure
    one)."""
    key = json.dumps(value, ensure_ascii=False)
    target = _target(rule, ready(rule, value, spec), spec)
    shown = json.dumps(target, ensure_ascii=False) if target is not None else "..."
    if rule == "country":
        return f"map: {{{key}: {shown}}}, on_unknown: keep  # map runs before country"
    if rule == "map":
        return f"map: {{{key}: {shown}}}"
    return f"{rule}: add {key} to its table"


def merged_snippet(rule: str, values: list[str], spec: models.FieldRule | None) -> list[str]:
    """One pasteable snippet for every open value of a field: the mappings it is sure of (for a
    `map` rule with the map's present entries, so it replaces the line), and a comment naming
    the values left for you."""
    sure = {v: _target(rule, ready(rule, v, spec), spec) for v in values}
    unsure = [v for v, t in sure.items() if t is None]
    entries = {v: t for v, t in sure.items() if t is not None}
    lines = []
    if rule in ("country", "map") and entries:
        present = {str(k): v for k, v in (spec.map or {}).items()} if spec is not None and spec.map else {}
        table = {**present, **entries}
        text = ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
            for k, v in table.items()
        )
        tail = ", on_unknown: keep" if rule == "country" else ""
        lines.append(f"map: {{{text}}}{tail}")
    elif rule not in ("country", "map"):
        unsure = values
    if unsure:
        listed = ", ".join(json.dumps(v, ensure_ascii=False) for v in unsure)
        where = "its table" if rule not in ("country", "map") else "the map yourself"
        lines.append(f"# no sure mapping for {listed}: add them to {where}")
    return lines


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
    loaded = load_sheet(sheet)
    if sync is not None:
        sync_names(loaded, sync)
    store = open_store(loaded, create=False)
    try:
        rows = _entries(loaded, store.unmapped_values(sync, all_))
    finally:
        store.close()
    if as_json:
        json_out(rows)
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
        by_field: dict[tuple[str, str, str], list[str]] = {}
        for row in rows:
            if row["resolved_at"] is None:
                by_field.setdefault((row["sync"], row["field"], row["rule"]), []).append(row["value"])
        for (sync_name, field, rule), values in by_field.items():  # one pasteable snippet per field
            cfg = loaded.sheet.syncs.get(sync_name)
            spec = _field_rule(cfg, field) if cfg is not None else None
            out.print(f"  {sync_name}.{field} ({rule}):", highlight=False, markup=False)
            for line in merged_snippet(rule, values, spec):
                out.print(f"    {line}", highlight=False, markup=False)
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
    loaded = load_sheet(sheet)
    names = sync_names(loaded, sync)
    wanted = None
    if key is not None:
        if sync is None:
            raise fail("--key goes with --sync", 2)
        try:
            wanted = keys.parse_arg(key, keys.columns_of(loaded.sheet, sync))
        except ValueError as exc:
            raise fail(f"--key: {exc}", 2) from None
    store = open_store(loaded, create=False)
    execute(loaded, store, names, "retry", as_json, field=field, key=wanted)
