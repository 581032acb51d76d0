"""A check's result for people (`mapsync reconcile`, the demo): a line of counts, then the first
lines of each list."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mapsync import keys
from mapsync.reconcile.results import CheckResult
from mapsync.reconcile.runner import summary

SHOWN = 20  # lines of each list printed (all of them, up to the stored cap, with --json)


def print_result(
    out: Console, r: CheckResult, *, title: str | None = None, columns: list[str] | None = None
) -> None:
    """One check's result for people: a line of counts, then the first lines of each list."""
    color = {"ok": "green", "differs": "yellow", "incomplete": "yellow"}.get(r.status, "red")
    about = f"{r.kind}" + (f", sync {r.sync}" if r.sync else "")
    when = f" ({title})" if title else ""
    out.print(
        f"[bold]{escape(r.check)}[/bold] ({escape(about)}){escape(when)}: [{color}]{r.status}[/{color}] — "
        f"{escape(summary(r))}",
        highlight=False,
    )
    for note in r.notes:
        out.print(f"  {note}", markup=False, highlight=False)
    if r.calls:
        out.print(f"  API calls: {r.calls}", markup=False, highlight=False)
    if r.kind == "business":
        _groups(out, r)
    else:
        _rows(out, r, columns or [])


def _groups(out: Console, r: CheckResult) -> None:
    lists = (
        ("mismatched", "differs"),
        ("missing_dest", "missing at the destination"),
        ("missing_source", "missing at the source"),
    )
    rows = [(label, g) for name, label in lists for g in getattr(r, name)[:SHOWN]]
    if not rows:
        return
    table = Table("group", "source", "dest", "difference", "")
    for label, g in rows:
        table.add_row(
            escape(", ".join(g.group)),
            "—" if g.source is None else str(g.source),
            "—" if g.dest is None else str(g.dest),
            str(g.difference),
            label,
        )
    out.print(table)
    _more(out, r, [n for n, _ in lists])


def _key(text: str, columns: list[str]) -> str:
    """A ledger key text in the command-line form (`INV-70001`, `order_no=1,line_no=2`), as
    `mapsync retry --key` and `mapsync trace` take it."""
    try:
        return keys.to_arg(keys.from_text(text), columns)
    except ValueError:  # not a stored key text: shown as it is
        return text


def _rows(out: Console, r: CheckResult, columns: list[str]) -> None:
    for name, label in (
        ("changed", "changed in the destination"),
        ("missing", "missing from the destination"),
    ):
        for key in getattr(r, name)[:SHOWN]:
            out.print(f"  {label}: {_key(key, columns)}", markup=False, highlight=False)
    for extra in r.extra[:SHOWN]:
        whose = (
            f" (delivered once as {_key(extra.ledger_key, columns)})"
            if extra.ledger_key
            else " (not delivered by mapsync)"
        )
        shown = ", ".join(str(v) for v in extra.dest_key)
        out.print(f"  extra in the destination: {shown}{whose}", markup=False, highlight=False)
    _more(out, r, ["changed", "missing", "extra"])


def _more(out: Console, r: CheckResult, names: list[str]) -> None:
    for name in names:
        if r.count(name) > SHOWN:
            out.print(f"  … {r.count(name) - SHOWN} more {name.replace('_', ' ')} (--json)", highlight=False)
