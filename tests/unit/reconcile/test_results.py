"""A check's result: counts, status, and its stored JSON form (decimals as text, lists capped)."""

from __future__ import annotations

import decimal
import json

from mapsync.reconcile import results
from mapsync.reconcile.results import CheckResult, Extra, GroupDiff

D = decimal.Decimal


def test_a_clean_result_is_ok_and_a_difference_is_not() -> None:
    clean = CheckResult("open_ar", "business", "invoices", compared=3, matched=3)
    assert clean.ok and clean.status == "ok" and clean.differences() == 0
    differs = CheckResult("open_ar", "business", mismatched=[GroupDiff(("C1",), D("10.00"), D("9.99"))])
    assert not differs.ok and differs.status == "differs" and differs.differences() == 1
    assert differs.mismatched[0].difference == D("0.01")
    assert GroupDiff(("C2",), None, D("5")).difference == D("-5")
    failed = CheckResult("open_ar", "business", error="connection erp: refused")
    assert not failed.ok and failed.status == "error"


def test_the_json_form_round_trips_exactly() -> None:
    result = CheckResult(
        "rows",
        "drift",
        "invoices",
        compared=5,
        matched=2,
        mismatched=[GroupDiff(("C1", "EU"), D("0.10"), D("0.1000000000000000055511151231257827"))],
        changed=['["INV-1"]'],
        missing=['["INV-2"]'],
        extra=[Extra(("INV-9",), None), Extra((7, D("1.5")), '["x"]')],
        read={"dest": results.Read(10, 300)},
        notes=["children not compared"],
    )
    data = json.loads(json.dumps(result.to_json()))
    assert data["status"] == "differs" and data["differences"] == 5
    assert data["mismatched"][0]["source"] == "0.10"  # decimals as their exact text
    back = CheckResult.from_json(data)
    assert back.mismatched[0].dest == D("0.1000000000000000055511151231257827")
    assert back.changed == result.changed and back.missing == result.missing
    assert back.extra[1].dest_key == (7, "1.5") and back.extra[1].ledger_key == '["x"]'
    assert back.read["dest"].bytes == 300 and back.notes == result.notes


def test_a_large_result_keeps_its_counts_when_its_lists_are_capped() -> None:
    many = [f'["K{i}"]' for i in range(results.CAP + 5)]
    data = CheckResult("rows", "drift", changed=many).to_json()
    assert len(data["changed"]) == results.CAP and data["counts"]["changed"] == results.CAP + 5
    back = CheckResult.from_json(data)
    assert back.count("changed") == results.CAP + 5 and back.differences() == results.CAP + 5
