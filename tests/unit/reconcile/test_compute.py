"""What `mapsync reconcile` says before a check with an API side starts (`compute.estimates`):
the calls of each API side, from the rows it read last time, or at most `max_calls`; nothing for
SQL-only checks; the budget named by its connection."""

from __future__ import annotations

import datetime as dt
import types
from typing import Any

from mapsync.reconcile import compute
from mapsync.reconcile.results import CheckResult, Read
from mapsync.sheet.connection_models import CimcloudConnection
from mapsync.sheet.models import SqlConnection
from mapsync.sheet.reconcile_models import ReconcileCheck
from mapsync.state.clock import utcnow
from mapsync.state.memory import MemoryStore

CIM = CimcloudConnection.model_validate(
    {
        "kind": "cimcloud",
        "site": "s",
        "auth": {"type": "token", "auth_key": "k", "username": "u", "password": "p"},
    }
)
SHEET: Any = types.SimpleNamespace(
    connections={"erp": SqlConnection.model_validate({"url": "sqlite:///x.db"}), "portal": CIM}
)


def check(dest: dict[str, Any]) -> ReconcileCheck:
    return ReconcileCheck.model_validate(
        {
            "source": {"connection": "erp", "table": "invoices", "group": "customer_no", "sum": "balance"},
            "dest": {"connection": dest.pop("connection", "portal"), "group": "account", **dest},
            "max_calls": 30,
        }
    )


def test_no_estimate_for_sql_sides() -> None:
    c = check({"connection": "erp", "table": "accounts", "sum": "balance"})
    assert compute.api_sides(SHEET, c) == []
    assert compute.estimates(SHEET, MemoryStore(), "open_ar", c) == []


def test_an_api_side_is_estimated_from_its_last_read() -> None:
    c = check({"resource": "invoices", "sum": "balance"})
    store = MemoryStore()
    assert compute.estimates(SHEET, store, "open_ar", c) == [
        "check open_ar: dest side (portal): at most max_calls 30 calls (CIMcloud documents no record "
        "count; 50 records per page) of CIMcloud's budget"
    ]
    last = CheckResult("open_ar", "business", read={"dest": Read(rows=120, bytes=9000)})
    now = utcnow()
    store.reconciliation.record_result(
        last.to_json(), run_id=None, started_at=now - dt.timedelta(1), finished_at=now
    )
    assert compute.estimates(SHEET, store, "open_ar", c) == [
        "check open_ar: dest side (portal): about 4 calls (120 records last time, 50 per page) of "
        "CIMcloud's budget"
    ]
