"""Event monitors over crafted histories: the latest run that ended decides (a failed run with its
class, a guard trip, a refused credential naming its connection, a spent call budget), and the
next run that does not fail clears it."""

from __future__ import annotations

import pytest

from mapsync.monitors import events
from tests.unit.monitors.crafted import facts, run


@pytest.mark.parametrize("cls", ["source", "destination", "tool", "config", "state", "lease", "unseeded"])
def test_failed_run_fires_with_the_runs_failure_class(cls: str) -> None:
    ok = run()  # (ids grow: the newest row is made last)
    failed = run("failed", failure_class=cls, message="table orders: no such column nm (value 'Ann Smith')")
    (found,) = events.failed_run(facts([ok, failed])) or []
    assert (found.monitor, found.failure_class, found.severity) == ("failed_run", cls, "critical")
    assert found.numbers["run_id"] == failed["id"] and f"failed ({cls})" in found.message
    assert "Ann Smith" not in found.message  # names and counts only, unless include_values
    assert events.failed_run(facts([ok, failed, run()])) == []  # the next success clears it


def test_failed_run_quotes_the_message_only_with_include_values_and_ignores_runs_that_did_not_end() -> None:
    failed = run("failed", failure_class="destination", message="shop refused 'Ann Smith'")
    (shown,) = events.failed_run(facts([failed], include_values=True)) or []
    assert shown.message.endswith(": shop refused 'Ann Smith'")
    later = [failed, run("skipped"), run("running", took=None), run("stopped")]
    assert events.failed_run(facts(later)) != []  # a skip, a running or stopped run says nothing yet
    assert events.failed_run(facts([])) == []


def test_guard_tripped_fires_for_a_guard_refusal_and_failed_run_leaves_it_to_it() -> None:
    guarded = run("failed", failure_class="guard", reason="guard", message="sync orders: mass-delete guard")
    (found,) = events.guard_tripped(facts([guarded])) or []
    assert found.failure_class == "source" and "mass-delete guard" in found.message
    assert events.failed_run(facts([guarded])) == []  # one alert per condition
    # unless guard_tripped is turned off: then failed_run tells
    assert [
        f.numbers["reason"]
        for f in events.failed_run(facts([guarded], monitors={"disabled": ["guard_tripped"]})) or []
    ] == ["guard"]
    old = run("failed", failure_class="guard", message="mass-delete guard")  # recorded before reasons
    assert events.guard_tripped(facts([old])) != []
    assert events.guard_tripped(facts([guarded, run()])) == []


def test_auth_refused_names_the_connection_never_the_credential() -> None:
    refused = run(
        "failed",
        failure_class="destination",
        reason="auth",
        message="connection shop: POST /orders: access refused (HTTP 401): bad token ***",
    )
    (found,) = events.auth_refused(facts([refused])) or []
    assert found.subject == "shop" and found.key == "auth_refused|orders|shop"
    assert found.numbers["connection"] == "shop" and found.failure_class == "destination"
    assert "connection shop refused the credential" in found.message and "token" not in found.message
    assert events.failed_run(facts([refused])) == []
    # a database login refused: the message names no connection, the class says which end
    login = run(
        "failed", failure_class="source", reason="auth", message="sync orders: password authentication failed"
    )
    assert [(f.subject, f.failure_class) for f in events.auth_refused(facts([login])) or []] == [
        ("erp", "source")
    ]
    assert events.auth_refused(facts([refused, run()])) == []
    assert events.auth_refused(facts([run("failed", failure_class="destination")])) == []


def test_budget_exhausted_fires_for_a_spent_call_budget() -> None:
    spent = run(
        "failed",
        failure_class="destination",
        reason="budget",
        message="connection shop: GET /orders: the server asks to wait 3600s: HTTP 429",
    )
    (found,) = events.budget_exhausted(facts([spent])) or []
    assert (found.subject, found.severity) == ("shop", "warning") and "call budget" in found.message
    assert events.failed_run(facts([spent])) == []
    assert events.budget_exhausted(facts([spent, run()])) == []
