"""The monitor registry (monitors/base.py): a monitor that raises is logged and answers None (its
incidents stay), and the other monitors still answer."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from mapsync.monitors import base
from mapsync.monitors.facts import SheetFacts
from mapsync.sheet.monitor_models import resolve
from mapsync.state.data import Finding


def test_a_monitor_that_raises_answers_none_and_the_others_still_answer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(facts: SheetFacts) -> list[Finding] | None:
        raise ValueError("customer 1042 has a bad value")

    def fine(facts: SheetFacts) -> list[Finding] | None:
        return []

    registry = {
        "broken": base.Spec("broken", "warning", "tool", "", "sheet", broken),
        "fine": base.Spec("fine", "warning", "tool", "", "sheet", fine),
    }
    monkeypatch.setattr(base, "REGISTRY", registry)
    facts = SheetFacts(now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), thresholds=resolve(None))
    with caplog.at_level(logging.ERROR, logger="mapsync.watch"):
        assert base.evaluate_sheet(facts) == {"broken": None, "fine": []}
    (line,) = [r for r in caplog.records if getattr(r, "action", "") == "monitor_failed"]
    assert line.monitor == "broken" and line.error == "ValueError"  # type: ignore[attr-defined]
    assert "1042" not in caplog.text
