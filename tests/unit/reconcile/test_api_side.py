"""The API side's aggregation over a generic REST listing (an httpx mock: pages, `where`, exact
sums, values that are not numbers, `count`), its call estimate, and how it yields to the syncs on
the shared budget."""

from __future__ import annotations

import decimal
from typing import Any

import httpx
import pytest

from mapsync import errors
from mapsync.reconcile import api_side
from mapsync.rest.connector import open_handle
from mapsync.sheet.connection_models import CimcloudConnection, RestConnection
from mapsync.sheet.reconcile_models import ReconcileCheck

D = decimal.Decimal


def rest(**paging: Any) -> RestConnection:
    return RestConnection.model_validate(
        {"kind": "rest", "base_url": "http://api.test/", "budget": [], "paging": {"size": 2, **paging}}
    )


def check(dest: dict[str, Any], max_calls: int = 20) -> ReconcileCheck:
    return ReconcileCheck.model_validate(
        {
            "source": {"connection": "erp", "table": "t", "group": dest["group"], "count": True},
            "dest": {"connection": "api", **dest},
            "max_calls": max_calls,
        }
    )


def serve(records: list[dict[str, Any]]) -> tuple[httpx.MockTransport, list[str]]:
    """A page-style listing of `records`, 2 per page; the pages asked for are logged."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        asked.append(str(page))
        return httpx.Response(200, json=records[(page - 1) * 2 : page * 2])

    return httpx.MockTransport(handler), asked


def run(records: list[dict[str, Any]], dest: dict[str, Any], max_calls: int = 20) -> Any:
    transport, asked = serve(records)
    handle = open_handle("api", rest(), None, transport=transport)
    try:
        c = check(dest, max_calls)
        assert c.dest is not None
        return api_side.aggregate("c", c, c.dest, "dest", handle), asked
    finally:
        handle.close()


ROWS = [
    {"id": 1, "cust": "A", "amount": "0.10", "open": True},
    {"id": 2, "cust": "A", "amount": 0.2, "open": 1},
    {"id": 3, "cust": "B", "amount": 5, "open": "1"},
    {"id": 4, "cust": "B", "amount": "100.00", "open": False},
    {"id": 5, "cust": None, "amount": "", "open": "1"},
]


def test_sums_exactly_per_group_with_the_where_compared_as_text() -> None:
    side, asked = run(ROWS, {"resource": "inv", "group": "cust", "sum": "amount", "where": {"open": True}})
    # 0.10 + 0.2 (a JSON float read by its text) is exactly 0.30; a blank amount adds 0; a NULL
    # group is <null>, as a SQL side names it
    assert side.values == {("A",): D("0.30"), ("B",): D("5"), ("<null>",): D("0")}
    assert side.complete and side.calls == 3 and side.read.rows == 5 and side.read.bytes > 0
    assert asked == ["1", "2", "3"]  # until the short page


def test_counts_rows_per_group() -> None:
    side, _ = run(ROWS, {"resource": "inv", "group": ["cust", "open"], "count": True})
    assert side.values[("B", "1")] == D(1) and side.values[("A", "1")] == D(2)
    assert sum(side.values.values()) == 5


@pytest.mark.parametrize("bad", ["n/a", "NaN", "Infinity", True, [1]])
def test_a_value_that_is_not_a_number_names_check_field_and_record_but_no_value(bad: Any) -> None:
    rows = [*ROWS[:3], {"id": 9, "cust": "Ann Smith", "amount": bad}]
    with pytest.raises(errors.PermanentError) as err:
        run(rows, {"resource": "inv", "group": "cust", "sum": "amount"})
    # the text becomes the run's message: the record's position and id, not its values
    assert str(err.value) == "check c: dest: inv: record 4 (id=9): field amount is not a number"


def test_max_calls_stops_before_the_next_page() -> None:
    side, asked = run(ROWS, {"resource": "inv", "group": "cust", "count": True}, max_calls=2)
    assert not side.complete and side.note == "stopped at max_calls 2 after 4 rows"
    assert side.calls == 2 and asked == ["1", "2"]


def test_estimate_without_a_count_is_at_most_max_calls() -> None:
    c = check({"resource": "inv", "group": "g", "count": True}, max_calls=30)
    assert c.dest is not None
    cim = CimcloudConnection.model_validate(
        {
            "kind": "cimcloud",
            "site": "s",
            "auth": {"type": "token", "auth_key": "k", "username": "u", "password": "p"},
        }
    )
    calls, text = api_side.estimate(c, c.dest, cim)
    assert calls is None
    assert text == "at most max_calls 30 calls (CIMcloud documents no record count; 50 records per page)"
    # 120 records last time: pages 1, 2 full, 3 short, + the token login
    assert api_side.estimate(c, c.dest, cim, last_rows=120) == (
        4,
        "about 4 calls (120 records last time, 50 per page)",
    )
    assert api_side.estimate(c, c.dest, cim, last_rows=100)[0] == 4  # the empty third page ends it
    assert api_side.estimate(c, c.dest, rest(), last_rows=7)[0] == 4
    assert api_side.estimate(c, c.dest, rest(style="cursor", next_field="next"), last_rows=7)[0] == 4
    assert api_side.estimate(c, c.dest, rest(style="none"), last_rows=7)[0] == 1
    calls, text = api_side.estimate(c, c.dest, rest(), last_rows=1000)
    assert calls == 30 and text.endswith("more than max_calls 30, the check will stop there")


class FakeBudget:
    """`limits` and `remaining()` as `rest.budget.Budget` has them; a call frees up on each sleep."""

    def __init__(self, limits: list[tuple[int, int]], used: list[int], resets: list[float]) -> None:
        self.limits = limits
        self.used, self.resets = used, resets
        self.server: int | None = None

    def remaining(self) -> dict[str, Any]:
        return {
            "limits": [
                {"limit": f"{n}/{w}s", "remaining": n - u, "resets_in": r}
                for (n, w), u, r in zip(self.limits, self.used, self.resets, strict=True)
            ],
            "server_remaining": self.server,
            "server_reset_in": 30.0,
        }


def test_yields_when_a_long_window_is_down_to_the_syncs_reserve() -> None:
    slept: list[float] = []
    budget = FakeBudget([(2, 1), (100, 900)], [2, 79], [0.5, 600.0])
    pacing = api_side.Pacing(sleep=slept.append)
    assert api_side._yield_to_syncs(budget, pacing) is None  # type: ignore[arg-type]
    budget.used[1] = 80  # 20 left: the syncs' fifth
    note = api_side._yield_to_syncs(budget, pacing)  # type: ignore[arg-type]
    assert note == "yielded to syncs: 100/900s has 20 calls left, the last 20 are theirs (resets in 600 s)"
    assert slept == []  # a 2/1s limit at its end is `acquire`'s to pace: no reserve, no wait here


def test_waits_for_a_short_window_then_goes_on() -> None:
    budget = FakeBudget([(10, 1)], [9], [0.4])

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        budget.used[0] = 0  # the window reset

    slept: list[float] = []
    assert api_side._yield_to_syncs(budget, api_side.Pacing(sleep=sleep)) is None  # type: ignore[arg-type]
    assert slept == [pytest.approx(0.41)]


def test_the_servers_remaining_calls_count_too() -> None:
    budget = FakeBudget([(100, 900)], [0], [0.0])
    budget.server = 5
    note = api_side._yield_to_syncs(budget, api_side.Pacing(sleep=lambda s: None))  # type: ignore[arg-type]
    assert note is not None and note.startswith("yielded to syncs: the server's limit has 5 calls left")
