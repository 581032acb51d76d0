"""Transaction export benchmark: N portal orders (2 lines each, SQLite) exported into PostgreSQL
with `changes: {method: export_flag}` (status, error, document number written back), against
the same orders and lines sent by a plain `changes: {method: full}` sync of the same tables in
the same run (no flag, no write-back, no document read-back): the figure is what the export's
selection and write-back cost over the engine's ordinary path.

    .venv/bin/python bench/export.py                        # 20,000 orders, 3 runs each
    .venv/bin/python bench/export.py --orders 2000 --repeat 1   # a smoke

Each repeat starts from fresh databases; only the seed `engine.run("orders", "seed")` is timed,
in this process: the export's with `seed: {export_existing: true}` (every order pending, paged
by key, written back batch by batch), the baseline's the plain seed of the same rows; both into
an empty ERP. Prints medians; the issue sets no target: the figures are for the notes.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

SHEET = """
version: 1
connections:
  portal: {{url: "sqlite:///{portal}"}}
  erp: {{url: "{erp}"}}
state: {{url: "sqlite:///{state}"}}
syncs:
  orders:
    from: {{connection: portal, table: orders}}
    to: {{connection: erp, table: sales_order}}
    key: {{from: order_no, to: portal_ref}}
    fields: {{customer: customer, zip: zip, total: total}}
{changes}
    delivery: {{batch: {batch}}}
    children:
      lines:
        from: {{connection: portal, table: order_lines}}
        to: {{connection: erp, table: sales_order_lines}}
        parent: {{from: order_no, to: portal_ref}}
        key: {{from: [order_no, line_no], to: [portal_ref, line_no]}}
        fields: {{sku: sku, qty: qty}}
"""
EXPORT = """    changes:
      method: export_flag
      flag: exported
      status: erp_import_status
      error: erp_import_error
      document: {from: doc_no, to: erp_order_number}
    seed: {export_existing: true}"""
FULL = "    changes: {method: full}"


def portal(path: Path, orders: int) -> None:
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE orders (order_no INTEGER PRIMARY KEY, customer TEXT, zip TEXT, total NUMERIC, "
        "exported INTEGER, erp_import_status TEXT, erp_import_error TEXT, erp_order_number INTEGER);"
        "CREATE TABLE order_lines (order_no INTEGER, line_no INTEGER, sku TEXT, qty INTEGER, "
        "PRIMARY KEY (order_no, line_no));"
    )
    con.executemany(
        "INSERT INTO orders (order_no, customer, zip, total) VALUES (?, ?, ?, ?)",
        [(i, f"customer {i}", f"{10000 + i % 89999}", i % 997 + 0.5) for i in range(1, orders + 1)],
    )
    con.executemany(
        "INSERT INTO order_lines VALUES (?, ?, ?, ?)",
        [(i, n, f"SKU-{i % 500}-{n}", n) for i in range(1, orders + 1) for n in (1, 2)],
    )
    con.commit()
    con.close()


ERP_DDL = (
    "CREATE TABLE sales_order (doc_no SERIAL PRIMARY KEY, portal_ref INTEGER NOT NULL UNIQUE, "
    "customer TEXT, zip TEXT, total NUMERIC)",
    "CREATE TABLE sales_order_lines (portal_ref INTEGER NOT NULL, line_no INTEGER NOT NULL, "
    "sku TEXT, qty INTEGER, PRIMARY KEY (portal_ref, line_no))",
)


def one(orders: int, batch: int, changes: str) -> float:
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore

    with tempfile.TemporaryDirectory() as tmp, common.ScratchDatabase("bench_export") as erp:
        folder = Path(tmp)
        portal(folder / "portal.db", orders)
        erp.execute(*ERP_DDL)
        url = erp.url
        (folder / "sheet.yaml").write_text(
            SHEET.format(
                portal=folder / "portal.db",
                erp=url,
                state=folder / "state.db",
                changes=changes,
                batch=batch,
            )
        )
        loaded = loader.load(folder / "sheet.yaml")
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
        engine = Engine(loaded, store)
        try:
            began = time.perf_counter()
            report = engine.run("orders", "seed")
            elapsed = time.perf_counter() - began
            assert report.counts.written == orders, report.counts
        finally:
            engine.close()
            store.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"export_flag seed": [], "full seed (baseline)": []}
    for _ in range(args.repeat):
        times["export_flag seed"].append(one(args.orders, args.batch, EXPORT))
        times["full seed (baseline)"].append(one(args.orders, args.batch, FULL))
    rows: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.orders} orders (2 lines each), SQLite portal -> PostgreSQL ERP, batch {args.batch}, "
        f"median of {args.repeat}"
    )
    for label, seconds in rows.items():
        print(f"  {label:24s} {seconds:8.2f} s  {args.orders / seconds:9.0f} orders/s")
    export, base = rows["export_flag seed"], rows["full seed (baseline)"]
    print(f"  export / baseline        {export / base:8.2f} x  (the write-back and per-batch selection)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
