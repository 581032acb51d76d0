"""`mapsync demo`: a sample ERP and portal (two SQLite files), a sheet between them, a seed, a few
changes at the source, an incremental pass, and what happened.

The ERP data is messy on purpose: free-text countries (`US`, `U.S.A.`, `Deutschland`, `UK`…, and
a few nobody can place), names longer than the portal's column, a legacy status code the sheet
does not map, several e-mail addresses in one field. Those rows are *rejected with a reason* or
*truncated and counted*, never guessed. Rejections are expected here and explained, so the demo
exits 0; it exits 1 only if a run itself failed. Rerunning it rebuilds everything in the folder
(databases, sheet and state) from scratch.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import sqlite3
import time
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mapsync import errors
from mapsync.engine import Engine, RunReport
from mapsync.sheet import checks, loader
from mapsync.state import report as state_report
from mapsync.state.store import StateStore

SHEET_NAME = "mapsync.yaml"
ERP_NAME = "erp.db"
PORTAL_NAME = "portal.db"
STATE_DIR = ".mapsync"

ERP_DDL = """
CREATE TABLE customers (customer_no TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, country TEXT,
  status TEXT NOT NULL, credit_limit NUMERIC, last_modified TEXT NOT NULL);
CREATE TABLE products (item_no TEXT PRIMARY KEY, descr TEXT NOT NULL, price NUMERIC,
  item_status TEXT NOT NULL, last_modified TEXT NOT NULL);
CREATE TABLE orders (order_no INTEGER PRIMARY KEY, customer_no TEXT NOT NULL, order_date TEXT,
  status TEXT NOT NULL, last_modified TEXT NOT NULL);
CREATE TABLE order_lines (order_no INTEGER NOT NULL, line_no INTEGER NOT NULL, item_no TEXT NOT NULL,
  qty INTEGER NOT NULL, unit_price NUMERIC, PRIMARY KEY (order_no, line_no));
CREATE TABLE invoices (invoice_no TEXT PRIMARY KEY, customer_no TEXT NOT NULL, due_date TEXT,
  balance NUMERIC NOT NULL, open INTEGER NOT NULL, last_modified TEXT NOT NULL);
CREATE INDEX customers_lm ON customers (last_modified, customer_no);
CREATE INDEX products_lm ON products (last_modified, item_no);
CREATE INDEX orders_lm ON orders (last_modified, order_no);
"""

# SQLite does not enforce these lengths; mapsync reads them from the catalog and checks them.
PORTAL_DDL = """
CREATE TABLE accounts (ref_id VARCHAR(20) PRIMARY KEY, nm VARCHAR(150) NOT NULL, email VARCHAR(80),
  country CHAR(3), status SMALLINT NOT NULL, credit_limit NUMERIC(12, 2));
CREATE TABLE products (sku VARCHAR(30) PRIMARY KEY, nm VARCHAR(80) NOT NULL, price NUMERIC(10, 2),
  active SMALLINT NOT NULL);
CREATE TABLE orders (order_no INTEGER PRIMARY KEY, account_ref VARCHAR(20) NOT NULL, ordered_on DATE,
  status VARCHAR(12) NOT NULL);
CREATE TABLE order_lines (order_no INTEGER NOT NULL, line_no INTEGER NOT NULL, sku VARCHAR(30) NOT NULL,
  qty INTEGER NOT NULL, unit_price NUMERIC(10, 2), PRIMARY KEY (order_no, line_no));
CREATE TABLE invoices (invoice_no VARCHAR(20) PRIMARY KEY, account_ref VARCHAR(20) NOT NULL,
  due_on DATE, balance NUMERIC(12, 2) NOT NULL);
"""

CUSTOMERS = 200
# Spellings as they come out of years of hand-typed ERP data, with how often each appears.
COUNTRIES = {
    "US": 30, "U.S.A.": 10, "United States": 20, "USA": 15, "Deutschland": 12, "Germany": 10, "DE": 5,
    "UK": 10, "Great Britain": 6, "United Kingdom": 6, "England": 4, "France": 8, "Holland": 4,
    "Netherlands": 4, "Canada": 8, "México": 3, "Österreich": 3, "Schweiz": 3, "": 3,
}  # fmt: skip
UNPLACEABLE = {13: "Untied States", 57: "Germny", 101: "Europe", 144: "N/A", 166: "Untied States"}
UNMAPPED_STATUS = {29: "X", 88: "X", 175: "X"}  # a legacy "blocked" code the sheet does not map
LONG_NAME = (5, 77, 150)
LONG_EMAIL = 120
FIRST = ["Acme", "Nordwind", "Blue Ridge", "Harbor Lane", "Meridian", "Alpine", "Keystone", "Summit",
         "Riverside", "Oak & Iron", "Lakeview", "Granite", "Silverline", "Pioneer", "Bayside",
         "Westfield"]  # fmt: skip
TRADE = ["Supply", "Foods", "Tools", "Outfitters", "Hardware", "Electric", "Logistics", "Textiles", "Medical",
         "Garden", "Plumbing"]  # fmt: skip
FORM = ["Inc.", "LLC", "GmbH", "Ltd", "B.V.", "S.A.", "Co.", "AG"]
LEGAL_TAIL = (
    " (formerly {} Trading Company), a division of {} Holdings International Incorporated, "
    "accounts payable department, attention: purchasing and receiving"
)


def _sheet_text() -> str:
    return resources.files("mapsync").joinpath("examples/demo.yaml").read_text(encoding="utf-8")


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _clean(folder: Path) -> None:
    """Remove what an earlier demo left here (only our own files)."""
    for name in (ERP_NAME, PORTAL_NAME, SHEET_NAME):
        for suffix in ("", "-wal", "-shm", "-journal"):
            (folder / (name + suffix)).unlink(missing_ok=True)
    shutil.rmtree(folder / STATE_DIR, ignore_errors=True)


def _build_erp(path: Path, now: dt.datetime) -> dict[str, int]:
    rnd = random.Random(7)
    past = [now - dt.timedelta(days=90) + dt.timedelta(minutes=37 * i) for i in range(3000)]
    spellings = [s for s, n in COUNTRIES.items() for _ in range(n)]
    customers = []
    for i in range(1, CUSTOMERS + 1):
        name = f"{rnd.choice(FIRST)} {rnd.choice(TRADE)} {rnd.choice(FORM)}"
        if i in LONG_NAME:
            name += LEGAL_TAIL.format(rnd.choice(FIRST), rnd.choice(FIRST))
        slug = name.split()[0].lower().strip("&")
        email = f"orders@{slug}{i}.example.com"
        if i == LONG_EMAIL:
            email = "; ".join(f"{p}@{slug}-{i}-wholesale.example.com" for p in ("ap", "purchasing", "ceo"))
        country = UNPLACEABLE.get(i) or rnd.choice(spellings)
        status = UNMAPPED_STATUS.get(i) or rnd.choice("AAAAAAAHI")
        limit = rnd.choice([5000, 10000, 25000, 50000, 7500.5])
        customers.append((f"C{10000 + i}", name, email, country, status, limit, _ts(past[i * 7])))
    # products came in by one bulk import: they all share one timestamp
    imported = _ts(past[100])
    products = [
        (
            f"P-{1000 + i}",
            f"{rnd.choice(FIRST)} {rnd.choice(TRADE)} item #{i}",
            round(rnd.uniform(2, 400), 2),
            "D" if i in (9, 31) else rnd.choice("AAAAI"),
            imported,
        )
        for i in range(1, 41)
    ]
    orders, lines = [], []
    for n in range(1, 121):
        placed = past[1500 + n * 9]
        order_no = 50000 + n
        orders.append(
            (
                order_no,
                f"C{10000 + rnd.randint(1, CUSTOMERS)}",
                placed.date().isoformat(),
                rnd.choice("NNRS"),
                _ts(placed),
            )
        )
        for line in range(1, rnd.randint(1, 5) + 1):
            item = rnd.choice(products)
            lines.append((order_no, line, item[0], rnd.randint(1, 24), item[2]))
    invoices = [
        (
            f"INV-{70000 + n}",
            f"C{10000 + rnd.randint(1, CUSTOMERS)}",
            (now + dt.timedelta(days=rnd.randint(-20, 45))).date().isoformat(),
            round(rnd.uniform(50, 9000), 2),
            1 if n <= 60 else 0,
            _ts(past[2000 + n]),
        )
        for n in range(1, 91)
    ]
    with sqlite3.connect(path) as db:
        db.executescript(ERP_DDL)
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", customers)
        db.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)", products)
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", orders)
        db.executemany("INSERT INTO order_lines VALUES (?, ?, ?, ?, ?)", lines)
        db.executemany("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?)", invoices)
    db.close()
    return {
        "customers": len(customers),
        "products": len(products),
        "orders": len(orders),
        "order lines": len(lines),
        "invoices": len(invoices),
        "of them open": 60,
    }


def _build_portal(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(PORTAL_DDL)
    db.close()


def _change_time(store: StateStore, names: list[str]) -> dt.datetime:
    """A whole second, about now, and not before any watermark the seed recorded."""
    marks = [store.cursors(n).get("watermark") for n in names]
    latest = max((dt.datetime.fromisoformat(str(m)) for m in marks if m), default=None)
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(seconds=1)
    if latest is not None:
        ceiling = latest.replace(microsecond=0) + dt.timedelta(seconds=1 if latest.microsecond else 0)
        moment = max(moment, ceiling)
    # the run reads up to the source's clock (minus lag 0s): let the clock pass the stamp
    while dt.datetime.now(dt.UTC).replace(tzinfo=None) <= moment:
        time.sleep(0.05)
    return moment


def _apply_changes(path: Path, moment: dt.datetime) -> list[str]:
    """Change rows in the ERP, all with the same last_modified (several rows sharing one stamp)."""
    ts = _ts(moment)
    done = []
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO customers VALUES ('C10201', 'Nordwind Handels GmbH', 'einkauf@nordwind.example.de', "
            "'Deutschland', 'A', 20000, ?)",
            (ts,),
        )
        done.append("new customer C10201 'Nordwind Handels GmbH', country 'Deutschland'")
        db.execute(
            "UPDATE customers SET name = 'Meridian Foods International Ltd', last_modified = ? "
            "WHERE customer_no = 'C10002'",
            (ts,),
        )
        done.append("C10002 renamed to 'Meridian Foods International Ltd'")
        db.execute(
            "UPDATE customers SET country = 'United States', last_modified = ? WHERE customer_no = 'C10013'",
            (ts,),
        )
        done.append("C10013 country fixed at the source: 'Untied States' -> 'United States'")
        db.execute("UPDATE customers SET last_modified = ? WHERE customer_no = 'C10040'", (ts,))
        done.append("C10040 touched (last_modified bumped, nothing else changed)")
        db.execute("INSERT INTO orders VALUES (50121, 'C10201', ?, 'N', ?)", (moment.date().isoformat(), ts))
        db.executemany(
            "INSERT INTO order_lines VALUES (50121, ?, ?, ?, ?)",
            [(1, "P-1003", 12, None), (2, "P-1007", 4, None), (3, "P-1012", 30, None)],
        )
        db.execute(
            "UPDATE order_lines SET unit_price = (SELECT price FROM products p "
            "WHERE p.item_no = order_lines.item_no) WHERE order_no = 50121"
        )
        done.append("new order 50121 for C10201 with 3 lines")
        db.execute("UPDATE products SET price = 19.99, last_modified = ? WHERE item_no = 'P-1007'", (ts,))
        done.append("product P-1007 price -> 19.99")
        db.execute(
            "UPDATE invoices SET balance = balance - 50, last_modified = ? WHERE invoice_no = 'INV-70001'",
            (ts,),
        )
        done.append("invoice INV-70001 part-paid (balance - 50.00)")
    db.close()
    return done


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


def _print_details(console: Console, reports: list[RunReport]) -> None:
    for r in reports:
        for label, counter in (("truncated", r.truncated), ("defaulted", r.defaulted)):
            for field, n in counter.items():
                console.print(f"  {r.sync}.{field}: {label} ×{n}", highlight=False)
        for s in r.samples:
            where = f" {s.field}" if s.field else ""
            console.print(
                f"  [yellow]rejected[/yellow] {r.sync} {escape(str(list(s.key)))}{where}: "
                f"{escape(s.message)}",
                highlight=False,
            )
        if r.message:
            console.print(f"  [red]{r.sync} failed ({r.failure_class}):[/red] {escape(r.message)}")


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


def run(folder: Path, console: Console) -> int:
    """Build the demo in `folder`, sync, print what happened. 0, or 1 if a run failed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _clean(folder)
    except OSError as exc:
        raise errors.ConfigError(f"--dir {folder}: {exc.strerror or exc}") from None
    erp, portal, sheet = folder / ERP_NAME, folder / PORTAL_NAME, folder / SHEET_NAME
    counts = _build_erp(erp, dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0))
    _build_portal(portal)
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
    try:
        names = checks.run_order(loaded.sheet)
        seeds = [engine.run(n, "seed", trigger="demo") for n in names]
        console.print(_runs_table("1. Seed: the first load of the portal", seeds))
        _print_details(console, seeds)

        moment = _change_time(store, names)
        changes = _apply_changes(erp, moment)
        console.print(
            f"\n[bold]2. Changes in the ERP[/bold], all stamped {_ts(moment)} (one shared timestamp):"
        )
        for line in changes:
            console.print(f"  - {escape(line)}", highlight=False)

        runs = [engine.run(n, "run", trigger="demo") for n in names]
        console.print()
        console.print(_runs_table("3. Incremental run: only what changed since the seed", runs))
        _print_details(console, runs)

        again = [engine.run(n, "run", trigger="demo") for n in names]
        console.print()
        console.print(_runs_table("4. Run again at once: nothing new", again))
        console.print(
            "  The watermark read is inclusive (>= the last stamp), so rows at that stamp are read again;\n"
            "  the key ledger knows them unchanged and skips them: rows sharing a timestamp are never lost.",
            highlight=False,
        )
        open_errors = state_report.record_errors(store, None, False, 1000)
        resolved = [e for e in state_report.record_errors(store, None, True, 1000) if e["resolved_at"]]
    finally:
        engine.close()
        store.close()

    console.print("\n[bold]Countries[/bold] as the portal got them (ERP spelling ×count):")
    for code, spellings in sorted(_countries(erp, portal).items()):
        text = ", ".join(f"{s} ×{n}" for s, n in spellings.most_common())
        console.print(f"  {code}: {escape(text)}", highlight=False)

    console.print(f"\n[bold]Open record errors[/bold] in the state store: {len(open_errors)}")
    for e in open_errors:
        console.print(
            f"  {e['sync']} {escape(e['key'])} {e['field'] or ''}: {escape(e['message'])}", highlight=False
        )
    for e in resolved:
        console.print(
            f"  resolved: {e['sync']} {escape(e['key'])} (fixed at the source, delivered)", highlight=False
        )

    failed = [r for r in [*seeds, *runs, *again] if r.status == "failed"]
    console.print(
        "\nRejected records are expected here: the ERP data is messy on purpose, and nothing is guessed."
        f"\nThe demo exits {1 if failed else 0} ({'a run failed' if failed else 'no run failed'}); "
        "`mapsync run` itself exits 1 when records were rejected.",
        highlight=False,
    )
    console.print("\n[bold]Where to look next[/bold]", highlight=False)
    for cmd, what in (
        (f"mapsync status {sheet}", "last run, cursor and open errors of each sync"),
        (f"mapsync errors {sheet}", "every rejected record: key, field, rule, message, attempts"),
        (f"mapsync state show {sheet}", "cursors, ledger size, recent runs"),
        (f"mapsync run {sheet}", "another incremental pass (change a row in erp.db first)"),
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
