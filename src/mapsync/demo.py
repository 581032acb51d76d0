"""`mapsync demo`: a sample ERP and portal (two SQLite files), a sheet between them, a seed, a few
changes at the source, an incremental pass, and what happened.

The ERP data is messy on purpose: free-text countries (`US`, `U.S.A.`, `Deutschland`, `UK`…, and
a few nobody can place), names longer than the portal's column, a legacy status code the sheet
does not map, several e-mail addresses in one field. Those rows are *rejected with a reason* or
*truncated and counted*, never guessed. Rejections are expected here and explained, so the demo
exits 0; it exits 1 only if a run itself failed. Rerunning it rebuilds everything in the folder
(databases, sheet and state) from scratch; it builds only in an empty (or new) folder or one an
earlier demo made (it leaves a `.mapsync-demo` marker), never over someone's own sheet and state.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mapsync import errors, keys
from mapsync.engine import Engine, RunReport
from mapsync.reconcile import report as check_report
from mapsync.reconcile import runner as checks_runner
from mapsync.sheet import checks, loader
from mapsync.sql_time import utc_naive
from mapsync.state import report as state_report
from mapsync.state.store import StateStore
from mapsync.testing import demo_data

SHEET_NAME = "mapsync.yaml"
ERP_NAME = "erp.db"
PORTAL_NAME = "portal.db"
STATE_DIR = ".mapsync"
MARKER = ".mapsync-demo"


def _sheet_text() -> str:
    return resources.files("mapsync").joinpath("examples/demo.yaml").read_text(encoding="utf-8")


def _claim(folder: Path) -> None:
    """Refuse a folder that holds anything but an earlier demo; mark it as the demo's."""
    if folder.exists() and not folder.is_dir():
        raise errors.ConfigError(f"--dir {folder}: not a folder")
    if folder.is_dir() and not (folder / MARKER).is_file() and any(folder.iterdir()):
        raise errors.ConfigError(
            f"--dir {folder}: the folder is not empty and was not made by `mapsync demo` (no "
            f"{MARKER} file in it); the demo would replace {SHEET_NAME}, {ERP_NAME}, {PORTAL_NAME} "
            f"and {STATE_DIR}/ there. Give an empty or new folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `mapsync demo`; rerunning it rebuilds this folder\n")


def _clean(folder: Path) -> None:
    """Remove what an earlier demo left here (only our own files)."""
    for name in (ERP_NAME, PORTAL_NAME, SHEET_NAME):
        for suffix in ("", "-wal", "-shm", "-journal"):
            (folder / (name + suffix)).unlink(missing_ok=True)
    shutil.rmtree(folder / STATE_DIR, ignore_errors=True)


def _change_time(store: StateStore, names: list[str]) -> dt.datetime:
    """A whole second, about now, and not before any watermark the seed recorded."""
    marks = [store.cursors(n).get("watermark") for n in names]
    latest = max((utc_naive(m) for m in marks if m), default=None)
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(seconds=1)
    if latest is not None:
        ceiling = latest.replace(microsecond=0) + dt.timedelta(seconds=1 if latest.microsecond else 0)
        moment = max(moment, ceiling)
    # the run reads up to the source's clock (minus lag 0s): let the clock pass the stamp
    while dt.datetime.now(dt.UTC).replace(tzinfo=None) <= moment:
        time.sleep(0.05)
    return moment


def _runs_table(title: str, reports: list[RunReport]) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in ("sync", "read", "written", "skipped", "rejected", "truncated", "defaulted", "status"):
        table.add_column(name, no_wrap=True, justify="left" if name in ("sync", "status") else "right")
    for r in reports:
        c = r.counts
        color = {"success": "green", "partial": "yellow"}.get(r.status, "red")
        table.add_row(
            r.sync,
            str(c.read),
            str(c.written),
            str(c.skipped),
            str(c.rejected),
            str(c.truncated),
            str(c.defaulted),
            f"[{color}]{r.status}[/{color}]",
        )
    return table


def _key(loaded: loader.LoadedSheet, error: dict[str, object]) -> str:
    """A stored error key in the command-line form (`C10013`)."""
    sync = str(error["sync"])
    return keys.to_arg(keys.from_text(str(error["key"])), keys.columns_of(loaded.sheet, sync))


def _print_details(console: Console, reports: list[RunReport], loaded: loader.LoadedSheet) -> None:
    def key_columns(sync: str) -> list[str]:
        return keys.columns_of(loaded.sheet, sync)

    for r in reports:
        for label, counter in (("truncated", r.truncated), ("defaulted", r.defaulted)):
            for field, n in counter.items():
                console.print(f"  {r.sync}.{field}: {label} ×{n}", highlight=False)
        for s in r.samples:
            where = f" {s.field}" if s.field else ""
            key = escape(keys.to_arg(s.key, key_columns(r.sync)))
            console.print(
                f"  [yellow]rejected[/yellow] {r.sync} {key}{where}: {escape(s.message)}",
                highlight=False,
            )
        if r.message:
            console.print(f"  [red]{r.sync} failed ({r.failure_class}):[/red] {escape(r.message)}")


class _NewValues(logging.Filter):
    """Holds back the engine's `unmapped_value_new` warnings while the demo runs: the report
    shows them in its own words instead of log lines on stderr in the middle of it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "action", None) != "unmapped_value_new":
            return True
        self.seen.append((f"{getattr(record, 'sync', '')}.{getattr(record, 'field', '')}", *_rv(record)))
        return False


def _rv(record: logging.LogRecord) -> tuple[str, str]:
    return str(getattr(record, "rule", "")), str(getattr(record, "value", ""))


def _command() -> str:
    """Where the `mapsync` command is, said plainly (the next steps use it)."""
    on_path = shutil.which("mapsync")
    if on_path:
        return f"The `mapsync` command: {on_path} (on your PATH)."
    script = Path(sys.executable).parent / "mapsync"
    if script.exists():
        activate = script.parent / "activate"
        return (
            f"The `mapsync` command is {script}: it is not on your PATH, so first run\n"
            f"  source {activate}\n"
            f"or type {script} in place of `mapsync` below."
        )
    return f"The `mapsync` command is not installed here: use `{sys.executable} -m mapsync` below."


def _countries(erp: Path, portal: Path) -> dict[str, Counter[str]]:
    with sqlite3.connect(erp) as a, sqlite3.connect(portal) as b:
        source = dict(a.execute("SELECT customer_no, country FROM customers").fetchall())
        dest = dict(b.execute("SELECT ref_id, country FROM accounts").fetchall())
    a.close()
    b.close()
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for key, code in dest.items():
        out[code or "NULL"][repr(source.get(key))] += 1
    return out


def _plant(portal: Path) -> list[str]:
    """Two hand edits in the portal that no run would see: one open invoice's balance raised,
    another customer's invoice deleted."""
    with sqlite3.connect(portal) as db:
        first = db.execute(
            "SELECT invoice_no, account_ref FROM invoices ORDER BY invoice_no LIMIT 1"
        ).fetchone()
        other = db.execute(
            "SELECT invoice_no, account_ref FROM invoices WHERE account_ref <> ? ORDER BY invoice_no LIMIT 1",
            (first[1],),
        ).fetchone()
        db.execute("UPDATE invoices SET balance = balance + 100 WHERE invoice_no = ?", (first[0],))
        db.execute("DELETE FROM invoices WHERE invoice_no = ?", (other[0],))
    db.close()
    return [
        f"invoice {first[0]} of customer {first[1]}: balance raised by 100.00 in the portal",
        f"invoice {other[0]} of customer {other[1]}: deleted in the portal",
    ]


def _reconcile(console: Console, engine: Engine, portal: Path) -> None:
    """5: the sheet's checks (open AR per customer, the invoices' rows), two hand edits in the
    portal found, repaired and checked again."""
    console.print(
        "\n[bold]5. Reconcile[/bold]: each customer's open AR on both sides, every portal invoice\n"
        "   against what mapsync delivered (`mapsync reconcile`, docs/reconcile.md)",
        highlight=False,
    )
    columns = keys.columns_of(engine.sheet, "invoices")
    for name in engine.sheet.reconcile:
        result = checks_runner.run_check(engine, name, trigger="demo")
        check_report.print_result(console, result, columns=columns)
    console.print("\n   Somebody edits the portal by hand:", highlight=False)
    for line in _plant(portal):
        console.print(f"  - {escape(line)}", highlight=False)
    found = {n: checks_runner.run_check(engine, n, trigger="demo") for n in engine.sheet.reconcile}
    for result in found.values():
        check_report.print_result(console, result, columns=columns)
    console.print("\n   `mapsync reconcile --repair` re-sends those customers' invoices and checks again:")
    fixed = checks_runner.repair_check(engine, "open_ar", found["open_ar"], trigger="demo")
    if fixed.outcome is not None and fixed.outcome.report is not None:
        r = fixed.outcome.report
        console.print(
            f"  repair run #{r.run_id}: {r.status}, {len(fixed.outcome.keys)} invoice(s) re-read at the "
            f"ERP, {fixed.outcome.sent} sent",
            highlight=False,
        )
    check_report.print_result(console, fixed.final, title="after the repair", columns=columns)
    for name in engine.sheet.reconcile:
        if name != "open_ar":
            result = checks_runner.run_check(engine, name, trigger="demo")
            check_report.print_result(console, result, columns=columns)


def run(folder: Path, console: Console) -> int:
    """Build the demo in `folder`, sync, print what happened. 0, or 1 if a run failed."""
    try:
        _claim(folder)
        _clean(folder)
    except OSError as exc:
        raise errors.ConfigError(f"--dir {folder}: {exc.strerror or exc}") from None
    erp, portal, sheet = folder / ERP_NAME, folder / PORTAL_NAME, folder / SHEET_NAME
    counts = demo_data.build_erp(erp, dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0))
    demo_data.build_portal(portal)
    sheet.write_text(_sheet_text(), encoding="utf-8")
    console.print(f"[bold]mapsync demo[/bold] in {escape(str(folder))}/ (rebuilt from scratch)")
    console.print(
        f"  ERP (source)        {erp}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), highlight=False
    )
    console.print(
        f"  portal (target)     {portal}: accounts.nm VARCHAR(150), accounts.country CHAR(3), …",
        highlight=False,
    )
    console.print(f"  mapping sheet       {sheet}", highlight=False)
    console.print(
        f"  state store         {folder / STATE_DIR / 'state.db'} (found relative to the sheet)\n",
        highlight=False,
    )

    loaded = loader.load(sheet)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)
    new_values = _NewValues()
    engine_log = logging.getLogger("mapsync.engine")
    engine_log.addFilter(new_values)
    try:
        names = checks.run_order(loaded.sheet)
        seeds = [engine.run(n, "seed", trigger="demo") for n in names]
        console.print(_runs_table("1. Seed: the first load of the portal", seeds))
        _print_details(console, seeds, loaded)

        moment = _change_time(store, names)
        changes = demo_data.apply_changes(erp, moment)
        console.print(
            f"\n[bold]2. Changes in the ERP[/bold], all stamped {demo_data.ts(moment)} "
            "(one shared timestamp):"
        )
        for line in changes:
            console.print(f"  - {escape(line)}", highlight=False)

        runs = [engine.run(n, "run", trigger="demo") for n in names]
        console.print()
        console.print(_runs_table("3. Incremental run: only what changed since the seed", runs))
        _print_details(console, runs, loaded)

        again = [engine.run(n, "run", trigger="demo") for n in names]
        console.print()
        console.print(_runs_table("4. Run again at once: nothing new", again))
        console.print(
            "  The watermark read is inclusive (>= the last stamp), so rows at that stamp are read again;\n"
            "  the key ledger knows them unchanged and skips them: rows sharing a timestamp are never lost.",
            highlight=False,
        )
        _reconcile(console, engine, portal)
        open_errors = state_report.record_errors(store, None, False, 1000)
        resolved = [e for e in state_report.record_errors(store, None, True, 1000) if e["resolved_at"]]
    finally:
        engine_log.removeFilter(new_values)
        engine.close()
        store.close()

    console.print("\n[bold]Countries[/bold] as the portal got them (ERP spelling ×count):")
    for code, spellings in sorted(_countries(erp, portal).items()):
        text = ", ".join(f"{s} ×{n}" for s, n in spellings.most_common())
        console.print(f"  {code}: {escape(text)}", highlight=False)

    if new_values.seen:
        console.print(
            "\n[bold]Values no rule could place[/bold], first seen in this demo (a real run logs each "
            "once as a warning, `unmapped_value_new`; `mapsync unmapped` lists them with the sheet "
            "text that would map them):"
        )
        for field, rule, value in new_values.seen:
            console.print(f"  {field} ({rule}): {escape(repr(value))}", highlight=False)

    console.print(f"\n[bold]Open record errors[/bold] in the state store: {len(open_errors)}")
    for e in open_errors:
        key = escape(_key(loaded, e))
        console.print(f"  {e['sync']} {key} {e['field'] or ''}: {escape(e['message'])}", highlight=False)
    for e in resolved:
        key = escape(_key(loaded, e))
        console.print(f"  resolved: {e['sync']} {key} (fixed at the source, delivered)", highlight=False)

    failed = [r for r in [*seeds, *runs, *again] if r.status == "failed"]
    console.print(
        "\nRejected records are expected here: the ERP data is messy on purpose, and nothing is guessed."
        f"\nThe demo exits {1 if failed else 0} ({'a run failed' if failed else 'no run failed'}); "
        "`mapsync run` itself exits 1 when records were rejected.",
        highlight=False,
    )
    console.print("\n[bold]Where to look next[/bold]", highlight=False)
    console.print(escape(_command()), highlight=False)
    for cmd, what in (
        (f"mapsync status {sheet}", "last run, cursor and open errors of each sync"),
        (f"mapsync errors {sheet}", "every rejected record: key, field, rule, message, attempts"),
        (f"mapsync unmapped {sheet}", "the values no rule could place, with the sheet text that maps them"),
        (f"mapsync state show {sheet}", "cursors, ledger size, recent runs, cursor changes"),
        (
            f"mapsync serve {sheet}",
            "the dashboard at http://127.0.0.1:8765/ (read-only: add `web: users` to act; docs/dashboard.md)",
        ),
        (f"mapsync run {sheet}", "another incremental pass (change a row in erp.db first)"),
        (f"mapsync reconcile {sheet}", "the open-AR and invoice-row checks (edit portal.db first; --repair)"),
        (f"mapsync run {sheet} --overlap --window 24h", "re-read the last 24h, report rows missed"),
        (
            f'sqlite3 {portal} "SELECT ref_id, nm, country FROM accounts LIMIT 5"',  # noqa: S608
            "the result (or open portal.db in any SQLite browser)",
        ),
    ):
        console.print(f"  {escape(cmd)}\n      {what}", highlight=False)
    console.print(
        f"  Edit {sheet}: e.g. `on_unknown: default` with `map_default: 0` on customers.status, then\n"
        f"      `mapsync validate {sheet}` and `mapsync seed {sheet} --sync customers --again`\n"
        "      (re-reads every row; unchanged rows are skipped, the X-status rows now go through).",
        highlight=False,
    )
    return 1 if failed else 0
