"""CIMcloud order export benchmark: N orders (2 nested lines each) taken from the sandbox's
`OnlineOrders` (`changes: {method: export_flag}`, status and error written back) into PostgreSQL,
with CIMcloud's call limits on (2 per second, 100 per 15 minutes, in the sandbox and in the
connection's `budget`) and with both off (what mapsync itself costs), side by side with the plain
SQL export of the same number of orders (`bench/export.py`'s export_flag seed, SQLite portal).

    .venv/bin/python bench/cimcloud_orders.py                      # 95 and 500 orders
    .venv/bin/python bench/cimcloud_orders.py --orders 95 --no-sql # a smoke (about 10 s)

The sandbox runs in this process (an httpx transport, no socket); each case starts from a fresh
sandbox, ERP database and state store; only `engine.run("orders", "run")` is timed. Printed per
case: orders/s, API calls per order (from the sandbox's request log), and the time spent in the
budget's `acquire` (waiting for a slot plus the grant's state transaction). One run per case:
with the limits on the wall time is set by the budget, not by noise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import common
import export

LIMITS = [(2, dt.timedelta(seconds=1)), (100, dt.timedelta(minutes=15))]
SHEET = """
version: 1
state: {{url: "sqlite:///{state}"}}
connections:
  erp: {{url: "{erp}"}}
  cim:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: token, auth_key: sandbox-key, username: sandbox, password: sandbox-password}}
    budget: {budget}
syncs:
  orders:
    from: {{connection: cim, resource: OnlineOrders}}
    to: {{connection: erp, table: sales_orders}}
    key: {{from: c_ordnum, to: order_no}}
    fields: {{customer: customer, total: {{from: total, cast: decimal, scale: 2}}}}
    changes: {{method: export_flag, flag: exported, status: erp_import_status, error: erp_import_error}}
    children:
      lines:
        from: {{connection: cim, nested: details}}
        to: {{connection: erp, table: sales_order_lines}}
        parent: {{from: c_ordnum, to: order_no}}
        key: {{from: [c_ordnum, line_no], to: [order_no, line_no]}}
        fields: {{sku: sku, qty: {{from: quantity, cast: decimal}}}}
"""


ERP_DDL = (
    "CREATE TABLE sales_orders (order_no TEXT PRIMARY KEY, customer TEXT, total NUMERIC(10,2))",
    "CREATE TABLE sales_order_lines (order_no TEXT, line_no INTEGER, sku TEXT, qty NUMERIC, "
    "PRIMARY KEY (order_no, line_no))",
)


@contextmanager
def timed_acquire() -> Iterator[list[float]]:
    """Sum the time spent in `Budget.acquire` (waiting for a slot, and the grant)."""
    from mapsync.rest import budget

    spent = [0.0]
    original: Callable[[budget.Budget], int] = budget.Budget.acquire

    def acquire(self: budget.Budget) -> int:
        began = time.perf_counter()
        try:
            return original(self)
        finally:
            spent[0] += time.perf_counter() - began

    budget.Budget.acquire = acquire  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        budget.Budget.acquire = original  # type: ignore[method-assign]


def one(orders: int, limits: bool) -> dict[str, Any]:
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore
    from mapsync.testing.sandbox import Config
    from mapsync.testing.sandbox_serve import InProcess

    with tempfile.TemporaryDirectory() as tmp, common.ScratchDatabase("bench_cim") as erp:
        erp.execute(*ERP_DDL)
        url, folder = erp.url, Path(tmp)
        config = Config(db_path=str(folder / "sandbox.db"), budget=LIMITS if limits else [])
        with InProcess(config) as box:
            for i in range(1, orders + 1):
                lines = [{"sku": f"SKU-{i % 500}-{n}", "quantity": str(n)} for n in (1, 2)]
                box.sandbox.add_order(
                    {"c_ordnum": f"W{i:06d}", "customer": f"C{i}", "total": f"{i}.5"}, lines
                )
            budget = '["2/1s", "100/15m"]' if limits else "[]"
            text = SHEET.format(state=folder / "state.db", erp=url, base=box.base_url, budget=budget)
            (folder / "sheet.yaml").write_text(text)
            loaded = loader.load(folder / "sheet.yaml")
            store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
            engine = Engine(loaded, store)
            try:
                engine.run("orders", "seed")
                with timed_acquire() as waited:
                    began = time.perf_counter()
                    report = engine.run("orders", "run")
                    elapsed = time.perf_counter() - began
            finally:
                engine.close()
                store.close()
            assert report.status == "success" and report.counts.written == orders, report
            log = box.sandbox.store.requests()
            assert not [r for r in log if r["status"] == 429], "the budget let a 429 through"
            done = [o for o in box.sandbox.orders() if o.get("erp_import_status") == "success"]
            assert len(done) == orders, len(done)
    return {"seconds": elapsed, "calls": len(log), "waited": waited[0]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, nargs="+", default=[95, 500])
    parser.add_argument("--no-sql", action="store_true", help="skip the plain SQL export baseline")
    args = parser.parse_args()
    print("CIMcloud OnlineOrders -> PostgreSQL ERP, 2 nested lines per order, status written back")
    print(
        f"  {'case':40s} {'seconds':>8s} {'orders/s':>9s} {'calls':>6s} "
        f"{'calls/order':>11s} {'budget wait':>11s}"
    )
    for orders in args.orders:
        for limits in (True, False):
            r = one(orders, limits)
            label = f"{orders} orders, " + ("limits 2/1s + 100/15m" if limits else "no limits")
            print(
                f"  {label:40s} {r['seconds']:8.2f} {orders / r['seconds']:9.1f} {r['calls']:6d} "
                f"{r['calls'] / orders:11.3f} {r['waited']:10.2f}s"
            )
        if not args.no_sql:
            seconds = export.one(orders, 500, export.EXPORT)
            label = f"{orders} orders, plain SQL export_flag seed"
            print(f"  {label:40s} {seconds:8.2f} {orders / seconds:9.1f} {'-':>6s} {'-':>11s} {'-':>11s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
