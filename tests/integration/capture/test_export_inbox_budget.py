"""CIMcloud orders into a real SQL ERP with CIMcloud's call limits on in the sandbox (2 per
second, 100 per 15 minutes) and the same budget on the connection: 95 orders of two nested
lines each are all exported, their lines with them, and each order's status (success, no error)
is written back. From the sandbox's request log: no 429, never more than 2 calls in any 1 s
window nor more than 100 in 15 minutes, and exactly 13 calls: 1 authentication + 2 GETs of
OnlineOrders (50, then a short page of 45) + 10 status POSTs (≤ 10 orders each)."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests import helpers as h
from tests.cim_export_world import World

pytestmark = pytest.mark.slow

ORDERS, LINES = 95, 2
LIMITS = [(2, 1.0), (100, 900.0)]  # CIMcloud's published limits, in calls per seconds


def most_in_a_window(times: list[float], span: float) -> int:
    """The most calls any window of `span` seconds starting at a call holds."""
    return max(sum(1 for u in times if t <= u < t + span) for t in times)


@pytest.fixture(
    params=[
        pytest.param("pg_database", marks=pytest.mark.postgres),
        pytest.param("mariadb_database", marks=[pytest.mark.mariadb, pytest.mark.campaign]),  # 6 s of waiting
    ],
    ids=["postgresql", "mariadb"],
)
def erp_url(request: pytest.FixtureRequest) -> str:
    factory: Callable[[], str] = request.getfixturevalue(request.param)
    return factory()


def test_95_orders_within_cimcloud_limits(
    erp_url: str, cimcloud_sandbox_factory: Any, tmp_path: Path
) -> None:
    box = cimcloud_sandbox_factory(in_process=True, budget=[(n, dt.timedelta(seconds=s)) for n, s in LIMITS])
    for i in range(1, ORDERS + 1):
        lines = [{"sku": f"SKU{i}-{n}", "quantity": str(n)} for n in range(1, LINES + 1)]
        box.sandbox.add_order({"c_ordnum": f"W{i:04d}", "customer": f"C{i % 7}", "total": f"{i}.25"}, lines)
    world = World(erp_url, box, tmp_path, budget='["2/1s", "100/15m"]')  # the sheet's ERP and export
    try:
        assert world.run("seed").status == "success"
        started = time.monotonic()
        report = world.run()
        wall = time.monotonic() - started
    finally:
        world.close()
    assert report.status == "success", report

    # every order and line is in the ERP, as CIMcloud held it
    assert h.query(erp_url, "SELECT COUNT(*), SUM(total) FROM sales_orders")[0] == (
        ORDERS,
        Decimal(sum(range(1, ORDERS + 1))) + Decimal("0.25") * ORDERS,
    )
    assert h.query(erp_url, "SELECT COUNT(*), SUM(qty) FROM sales_order_lines")[0] == (
        ORDERS * LINES,
        Decimal(ORDERS * sum(range(1, LINES + 1))),
    )
    # every order is marked exported and its status written back
    orders = box.sandbox.orders()
    assert len(orders) == ORDERS
    assert {(o["exported"], o.get("erp_import_status"), o.get("erp_import_error") or "") for o in orders} == {
        ("1", "success", "")
    }

    log = box.sandbox.store.requests()
    assert [r for r in log if r["status"] == 429] == []
    assert [r for r in log if r["status"] >= 400] == []
    auths = [r for r in log if r["path"] == "authenticate"]
    gets = [r for r in log if r["method"] == "GET" and r["path"] == "OnlineOrders"]
    posts = [r for r in log if r["method"] == "POST" and r["path"] == "orders"]
    assert (len(auths), len(gets), len(posts)) == (1, math.ceil((ORDERS + 1) / 50), math.ceil(ORDERS / 10))
    assert len(log) == 13  # nothing else: no stray reads, no retries

    times = sorted(r["t"] for r in log)
    for limit, window in LIMITS:
        assert most_in_a_window(times, window) <= limit, (limit, window)
    # 13 calls at 2 per second cannot span less than 6 s
    span = times[-1] - times[0]
    assert span >= (len(times) - 1) // 2 * 1.0 - 0.01
    print(
        f"\n95 orders within 2/1s + 100/15m: {len(log)} calls (auth {len(auths)}, GET {len(gets)}, "
        f"POST {len(posts)}), call span {span:.2f} s, run {wall:.2f} s, "
        f"{ORDERS / wall:.1f} orders/s, {len(log) / ORDERS:.3f} calls/order"
    )
