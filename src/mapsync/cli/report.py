"""How `seed`, `run`, `retry` and `run --follow` show a run's report (text and `--json`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Console
from rich.markup import escape

from mapsync import keys
from mapsync.run_types import RunReport
from mapsync.sheet.models import Sheet


def report_dict(r: RunReport, sheet: Sheet | None) -> dict[str, Any]:
    columns = keys.columns_of(sheet, r.sync)  # keys as objects by key column (mapsync.keys)
    data = dataclasses.asdict(r)
    data["samples"] = [{**dataclasses.asdict(s), "key": keys.as_json(s.key, columns)} for s in r.samples]
    data["gone"] = [keys.as_json(k, columns) for k in r.gone]
    disabled = r.gone_at_source.get("disabled", 0)
    data["counts"]["written"] -= disabled  # a disabled row is reported as such, not as written
    data["counts"]["disabled"] = disabled
    data["gone_at_source"] = _deletes(r, sheet)
    return data


def _deletes(r: RunReport, sheet: Sheet | None) -> dict[str, Any] | None:
    """Keys found deleted at the source and what the sync's `deletes` policy made of them."""
    found = r.gone_at_source.get("found", 0)
    if not found:
        return None
    cfg = sheet.syncs.get(r.sync) if sheet is not None else None
    return {
        "found": found,
        "policy": cfg.deletes.policy if cfg is not None else None,
        "deleted": r.counts.deleted,
        "disabled": r.gone_at_source.get("disabled", 0),
        "ignored": r.gone_at_source.get("ignored", 0),
    }


def print_report(out: Console, r: RunReport, sheet: Sheet | None) -> None:
    """One run's report for people: counts, then what needs a look."""
    columns = keys.columns_of(sheet, r.sync)
    c = r.counts
    color = {"success": "green", "partial": "yellow", "stopped": "yellow", "skipped": "yellow"}.get(
        r.status, "red"
    )
    extra = f", missed {c.missed}" if r.kind == "overlap" else ""
    deletes = _deletes(r, sheet)
    disabled = f", disabled {deletes['disabled']}" if deletes and deletes["disabled"] else ""
    out.print(
        f"[bold]{r.sync}[/bold] {r.kind} #{r.run_id}: [{color}]{r.status}[/{color}] — read {c.read}, "
        f"written {c.written - (deletes['disabled'] if deletes else 0)}{disabled}, "
        f"skipped {c.skipped} unchanged, rejected {c.rejected}, deleted {c.deleted}{extra}",
        highlight=False,
    )
    for note in r.notes:
        out.print(f"  {note}", highlight=False, markup=False)
    if deletes:
        made = {
            "deleted": deletes["deleted"],
            "disabled": deletes["disabled"],
            "left as they are": deletes["ignored"],
        }
        outcome = ", ".join(f"{n} {what}" for what, n in made.items() if n) or "none delivered yet"
        out.print(
            f"  gone at the source: {deletes['found']} key(s); policy `{deletes['policy']}`: {outcome}",
            highlight=False,
            markup=False,
        )
    for label, counter in (
        ("truncated", r.truncated),
        ("defaulted", r.defaulted),
        ("kept unmapped", r.kept),
        ("country corrected", r.corrected),
        ("ambiguous DST time (earlier taken)", r.dst_ambiguous),
        ("expired, written disabled", r.expired),
    ):
        if counter:
            out.print(f"  {label}: " + ", ".join(f"{k} ×{v}" for k, v in counter.items()), highlight=False)
    if r.fell_back:
        out.print(
            f"  [yellow]fell back[/yellow]: {r.fell_back} hard delete(s) refused by the destination, "
            "disabled instead",
            highlight=False,
        )
    for s in r.samples[:5]:
        field = f" field {escape(s.field)}" if s.field else ""  # source data is never markup
        shown_key = escape(keys.to_arg(s.key, columns))
        out.print(
            f"  [yellow]rejected[/yellow] key {shown_key}{field}: {escape(s.message)}",
            highlight=False,
            markup=True,
        )
    if r.counts.rejected > 5:
        out.print(
            f"  … {r.counts.rejected - 5} more: `mapsync errors SHEET --sync {r.sync}`", highlight=False
        )
    for key in r.gone:
        shown = escape(keys.to_arg(key, columns))
        out.print(f"  [yellow]gone[/yellow] key {shown}: the source row no longer exists")
    if r.message:
        out.print(f"  [red]{r.failure_class} failure:[/red] {escape(r.message)}", highlight=False)
