"""The monitor `reconcile_mismatch` over crafted facts: one incident per check whose latest
result differs or errored, counts only unless `alerts.include_values`, nothing for clean checks,
unknown when the results could not be read."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from mapsync.monitors import REGISTRY
from mapsync.monitors.facts import SheetFacts
from mapsync.reconcile.results import CheckResult, Extra, GroupDiff
from mapsync.sheet.monitor_models import MonitorsConfig, resolve

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def facts(monitors: dict[str, Any] | None = None, include_values: bool = False, **extra: Any) -> SheetFacts:
    thresholds = resolve(MonitorsConfig.model_validate(monitors or {}))
    return SheetFacts(NOW, thresholds, extra=extra, include_values=include_values)


def row(result: CheckResult) -> dict[str, Any]:
    data = result.to_json()
    return {
        "check": result.check,
        "kind": result.kind,
        "status": data["status"],
        "compared": data["compared"],
        "differences": data["differences"],
        "detail": data,
    }


def open_ar() -> CheckResult:
    r = CheckResult("open_ar", "business", sync="invoices", compared=120, matched=118)
    r.mismatched = [GroupDiff(("C042",), decimal.Decimal("1200.50"), decimal.Decimal("1100.50"))]
    r.missing_dest = [GroupDiff(("C077",), decimal.Decimal("35.00"), None)]
    return r


def drift() -> CheckResult:
    r = CheckResult("rows", "drift", sync="invoices", compared=50, matched=49, changed=["7"])
    r.extra = [Extra((99,), None)]
    return r


def check(f: SheetFacts) -> Any:
    return REGISTRY["reconcile_mismatch"].check(f)


def test_unknown_without_results_and_quiet_when_clean() -> None:
    assert check(facts()) is None
    assert check(facts(reconcile={})) == []
    clean = CheckResult("open_ar", "business", compared=3, matched=3)
    assert check(facts(reconcile={"open_ar": row(clean)})) == []


def test_one_finding_per_differing_check_with_counts_never_values() -> None:
    found = check(facts(reconcile={"open_ar": row(open_ar()), "rows": row(drift())}))
    assert [(f.subject, f.sync, f.monitor) for f in found] == [
        ("open_ar", None, "reconcile_mismatch"),
        ("rows", None, "reconcile_mismatch"),
    ]
    ar, rows = found
    assert ar.message == (
        "check open_ar: 2 difference(s) (1 mismatched, 1 missing at the destination) of 120 groups compared"
    )
    assert "1200" not in ar.message and "C042" not in ar.message
    assert ar.numbers["differences"] == 2 and ar.numbers["mismatched"] == 1
    assert ar.severity == "warning" and ar.key == "reconcile_mismatch|*|open_ar"
    assert rows.message == (
        "check rows: 2 difference(s) (1 changed, 1 extra in the destination) of 50 rows compared"
    )


def test_values_only_with_include_values() -> None:
    (ar,) = check(facts(reconcile={"open_ar": row(open_ar())}, include_values=True))
    assert ar.message.endswith("; C042: 1200.50 vs 1100.50; C077: 35.00 vs None")


def test_a_check_that_could_not_run_fires_without_its_error_text() -> None:
    failed = CheckResult("open_ar", "business", error="connection erp: password authentication failed")
    (found,) = check(facts(reconcile={"open_ar": row(failed)}))
    assert found.message == "check open_ar could not run (`mapsync reconcile SHEET --check open_ar` says why)"
    assert found.failure_class == "tool"
    (shown,) = check(facts(reconcile={"open_ar": row(failed)}, include_values=True))
    assert shown.message.endswith(": connection erp: password authentication failed")


def test_severity_can_be_raised_and_the_monitor_disabled() -> None:
    (found,) = check(
        facts({"severity": {"reconcile_mismatch": "critical"}}, reconcile={"rows": row(drift())})
    )
    assert found.severity == "critical"
    assert "reconcile_mismatch" in REGISTRY and REGISTRY["reconcile_mismatch"].scope == "sheet"


def test_a_repaired_result_is_clean() -> None:
    fixed = row(CheckResult("rows", "drift", compared=5, matched=5))
    fixed["status"] = "repaired"
    assert check(facts(reconcile={"rows": fixed})) == []


def test_an_incomplete_drift_check_is_not_clean_and_says_to_backfill() -> None:
    incomplete = CheckResult("rows", "drift", sync="invoices", compared=40, matched=40, undigested=3)
    (found,) = check(facts(reconcile={"rows": row(incomplete)}))
    assert found.subject == "rows" and "3 ledger entries have no drift digest" in found.message
    assert "mapsync reconcile SHEET --sync invoices --backfill" in found.message
