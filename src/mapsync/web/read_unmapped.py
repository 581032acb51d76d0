"""The hints of the unmapped values (moved down from cli/unmapped.py so that the web may show
them): near misses of a country or map rule, and the sheet text a user would add to map a value."""

from __future__ import annotations

import difflib
import json
from typing import Any

from mapsync import countries, keys, transforms
from mapsync.sheet import models


def field_rule(sync: models.SyncConfig, field: str) -> models.FieldRule | None:
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


def entries(loaded: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out_rows = []
    for row in rows:
        cfg = loaded.sheet.syncs.get(row["sync"])
        spec = field_rule(cfg, row["field"]) if cfg is not None else None
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
