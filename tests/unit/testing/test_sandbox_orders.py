"""The sandbox's orders (issue 17): order lines, the two inferred shapes of OnlineOrders, the test
helper that plants orders, the OnlineOrders faults (in process and over HTTP), the optional
check of order fields, and the standard `orders` GET that serves the lost-order sweep."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync.testing.sandbox_serve import InProcess
from tests.sandbox_fixtures import token_client

Factory = Callable[..., InProcess]
LINES = [
    {"line_no": "10", "sku": "B", "quantity": "1", "price": "2.50"},
    {"line_no": "2", "sku": "A", "quantity": "3", "price": "1.00"},
]


def _box(factory: Factory, **options: Any) -> InProcess:
    return factory(in_process=True, **options)


def _iso(days_ago: int) -> str:
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=days_ago)
    return moment.isoformat(timespec="microseconds")


def test_order_detail_is_a_resource_keyed_by_line_id(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory)
    with token_client(box) as c:
        line = {"line_id": "W1-1", "c_ordnum": "W1", "line_no": 1, "sku": "A", "quantity": 2, "price": 9.5}
        assert c.post("orderdetail/", json=line).json()["importedRecords"] == 1
        assert c.post("order_details/", json={**line, "quantity": 3}).json()["updatedRecords"] == 1
        (row,) = c.get("order_detail/searchexact~line_id~W1-1").json()
        assert {k: row[k] for k in ("c_ordnum", "line_no", "sku", "quantity", "price")} == {
            "c_ordnum": "W1",
            "line_no": "1",
            "sku": "A",
            "quantity": "3",
            "price": "9.5",
        }


def test_add_order_plants_an_order_and_its_lines_without_http(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory)
    sandbox = box.sandbox
    old = _iso(30)
    assert sandbox.add_order({"c_ordnum": "W1001", "total": 12, "create_date": old}, LINES) == "W1001"
    order = sandbox.order("w1001")  # user keys match case-insensitively
    assert order is not None
    assert (order["exported"], order["total"], order["create_date"]) == ("0", "12", old)
    assert order["last_modify_date"] > old and order["key"]
    assert [(d["line_no"], d["line_id"], d["c_ordnum"]) for d in order["details"]] == [
        ("2", "W1001-2", "W1001"),
        ("10", "W1001-10", "W1001"),
    ]  # ordered by line_no as a number, not as text
    assert all("key" not in d for d in order["details"])
    sandbox.add_order({"c_ordnum": "W1002", "exported": "1"}, [{"sku": "C"}, {"sku": "D", "line_id": "x"}])
    assert [o["c_ordnum"] for o in sandbox.orders()] == ["W1001", "W1002"]
    second = sandbox.order("W1002")
    assert second is not None and second["exported"] == "1"
    assert [(d["line_no"], d["line_id"]) for d in second["details"]] == [("1", "W1002-1"), ("2", "x")]
    assert sandbox.order("W9999") is None
    assert sandbox.store.requests() == []  # no HTTP, no budget
    with pytest.raises(ValueError, match="c_ordnum"):
        sandbox.add_order({"total": "1"})


def test_online_orders_nests_the_lines_by_default(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory)
    created = _iso(2)
    box.sandbox.add_order({"c_ordnum": "W1001", "create_date": created, "note": "n"}, LINES)
    box.sandbox.add_order({"c_ordnum": "W1002", "exported": ""})
    box.sandbox.add_order({"c_ordnum": "W1003", "exported": "1"}, [{"sku": "Z"}])
    with token_client(box) as c:
        first = c.get("OnlineOrders").json()
        assert [o["c_ordnum"] for o in first] == ["W1001", "W1002"]
        one = first[0]
        assert (one["create_date"], one["note"], one["o_key"]) == (created, "n", one["key"])
        assert [d["sku"] for d in one["details"]] == ["A", "B"]
        assert set(one["details"][0]) >= {"line_id", "c_ordnum", "line_no", "sku", "quantity", "price"}
        assert "key" not in one["details"][0]
        assert first[1]["details"] == []
        assert c.get("OnlineOrders").json() == []
    assert {o["c_ordnum"]: o["exported"] for o in box.sandbox.orders()} == {
        "W1001": "1",
        "W1002": "1",
        "W1003": "1",
    }


def test_online_orders_lines_field_is_configurable(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory, lines_field="lines")
    box.sandbox.add_order({"c_ordnum": "W1"}, LINES)
    with token_client(box) as c:
        (order,) = c.get("onlineorders").json()
    assert "details" not in order and [d["line_no"] for d in order["lines"]] == ["2", "10"]


def test_separate_lines_are_read_from_order_detail(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory, online_orders_lines="separate")
    for n in range(1001, 1004):
        box.sandbox.add_order({"c_ordnum": f"W{n}"}, [{"sku": f"S{i}"} for i in range(30)])
    with token_client(box) as c:
        orders = c.get("OnlineOrders").json()
        assert [o["c_ordnum"] for o in orders] == ["W1001", "W1002", "W1003"]
        assert all("details" not in o for o in orders)
        search = "searchexact~c_ordnum~W1001|or|searchexact~c_ordnum~W1002"
        page1 = c.get(f"order_detail/{search}/1").json()
        page2 = c.get(f"order_detail/{search}/2").json()
        assert (len(page1), len(page2)) == (50, 10)  # 60 lines, 50 per page
        assert {line["c_ordnum"] for line in page1 + page2} == {"W1001", "W1002"}
        # a client that percent-encodes the `|` gets the same answer
        encoded = search.replace("|", "%7C")
        assert c.get(f"order_detail/{encoded}/1").json() == page1


def test_online_orders_answers_50_per_get(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory)
    for n in range(60):
        box.sandbox.add_order({"c_ordnum": f"W{n:03}"})
    with token_client(box) as c:
        sizes = [len(c.get("OnlineOrders").json()) for _ in range(3)]
    assert sizes == [50, 10, 0]


def test_online_orders_faults_lost_and_refused(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory)
    box.sandbox.add_order({"c_ordnum": "W1"}, LINES)
    box.sandbox.faults.online_orders_refuse = 1
    box.sandbox.faults.online_orders_lost = 1
    with token_client(box) as c:
        refused = c.get("OnlineOrders")
        assert refused.status_code == 503
        order = box.sandbox.order("W1")
        assert order is not None and order["exported"] == "0"  # refused before any side effect
        lost = c.get("OnlineOrders")
        assert lost.status_code == 500
        order = box.sandbox.order("W1")
        assert order is not None and order["exported"] == "1"  # marked, though the answer was lost
        assert c.get("OnlineOrders").json() == []  # the worst case: only the sweep finds it now
        assert (box.sandbox.faults.online_orders_refuse, box.sandbox.faults.online_orders_lost) == (0, 0)


def test_faults_and_orders_over_http(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory)
    box.sandbox.add_order({"c_ordnum": "W1"}, LINES)
    with box.client() as c:
        answer = c.post("/_sandbox/faults", json={"online_orders_lost": 2, "reject": {"W9": "no"}})
        assert answer.status_code == 200
        assert answer.json() == {
            "reject": {"W9": "no"},
            "undercount": 0,
            "online_orders_lost": 2,
            "online_orders_refuse": 0,
        }
        assert box.sandbox.faults.online_orders_lost == 2
        for bad in ({"nope": 1}, {"undercount": -1}, {"undercount": "1"}, {"reject": {"a": 1}}, [1]):
            assert c.post("/_sandbox/faults", json=bad).status_code == 400
        assert box.sandbox.faults.undercount == 0
        (order,) = c.get("/_sandbox/orders").json()
        assert order["c_ordnum"] == "W1" and [d["sku"] for d in order["details"]] == ["A", "B"]
        assert c.get("/_sandbox/requests").json() == []  # the control routes are not logged


def test_faults_are_set_from_loopback_only(cimcloud_sandbox_factory: Factory) -> None:
    from mapsync.testing.sandbox import create_app

    box = _box(cimcloud_sandbox_factory)
    remote = httpx.ASGITransport(create_app(box.sandbox), client=("192.0.2.7", 5000))

    async def post() -> int:
        async with httpx.AsyncClient(transport=remote, base_url="http://sandbox") as c:
            return (await c.post("/_sandbox/faults", json={"undercount": 1})).status_code

    import anyio

    assert anyio.run(post) == 403
    assert box.sandbox.faults.undercount == 0


def test_order_fields_refuse_unknown_fields(cimcloud_sandbox_factory: Factory) -> None:
    allowed = frozenset({"exported", "erp_import_status"})
    box = _box(cimcloud_sandbox_factory, order_fields=allowed)
    with token_client(box) as c:
        answer = c.post(
            "orders/",
            json=[
                {"c_ordnum": "W1", "exported": "0"},
                {"c_ordnum": "W2", "erp_import_error": "boom", "colour": "red"},
            ],
        ).json()
        assert (answer["success"], answer["importedRecords"], answer["recordCountInRequest"]) == (False, 1, 2)
        assert "W2" in answer["message"] and "colour, erp_import_error" in answer["message"]
        key = c.get("orders/searchexact~c_ordnum~W1").json()[0]["key"]
        ok = c.put("orders/", json={"key": key, "erp_import_status": "imported"}).json()
        assert ok["success"] and ok["updatedRecords"] == 1
        # other resources are not checked
        assert c.post("accounts/", json={"ref_id": "A1", "colour": "red"}).json()["success"]
    assert box.sandbox.order("W2") is None
    plain = _box(cimcloud_sandbox_factory)  # default: any field is accepted
    with token_client(plain) as c:
        assert c.post("orders/", json={"c_ordnum": "W2", "erp_import_error": "boom"}).json()["success"]


def test_the_lost_order_sweep_reads_recent_exported_orders(cimcloud_sandbox_factory: Factory) -> None:
    box = _box(cimcloud_sandbox_factory)
    box.sandbox.add_order({"c_ordnum": "OLD", "exported": "1", "create_date": _iso(10)})
    box.sandbox.add_order({"c_ordnum": "LOST", "exported": "1", "create_date": _iso(3)})
    box.sandbox.add_order({"c_ordnum": "NEW", "exported": "0"})
    box.sandbox.add_order({"c_ordnum": "US", "exported": "1", "create_date": "1/2/2020"})
    sweep = "searchexact~exported~1|and|searchgreatherthanequal~create_date~<<dateadd:days:-7>>"
    with token_client(box) as c:
        rows = c.get(f"orders/{sweep}/1").json()
        assert [r["c_ordnum"] for r in rows] == ["LOST"]
        assert "details" not in rows[0]  # the standard GET carries no lines
        assert c.get(f"orders/{sweep}/2").json() == []


def test_the_cli_takes_the_lines_shape_and_faults_over_http(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["sandbox", "cimcloud", "--port", str(port), "--budget", "off", "--db", str(tmp_path / "sb.db")]
    args += ["--online-orders-lines", "separate"]
    proc = subprocess.Popen([sys.executable, "-m", "mapsync", *args], stdout=subprocess.PIPE, text=True)
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while True:
            try:
                assert httpx.get(f"{root}/sandbox/healthcheck/canary").json() == {"status": "Running"}
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.1)
        auth = ("sandbox", "sandbox-password")
        httpx.post(f"{root}/sandbox/orders/", json={"c_ordnum": "W1", "exported": "0"}, auth=auth)
        httpx.post(f"{root}/sandbox/order_detail/", json={"line_id": "L1", "c_ordnum": "W1"}, auth=auth)
        assert httpx.post(f"{root}/_sandbox/faults", json={"online_orders_lost": 1}).status_code == 200
        assert httpx.get(f"{root}/sandbox/OnlineOrders", auth=auth).status_code == 500
        (order,) = httpx.get(f"{root}/_sandbox/orders").json()
        assert (order["c_ordnum"], order["exported"]) == ("W1", "1")
        httpx.post(f"{root}/sandbox/orders/", json={"c_ordnum": "W1", "exported": "0"}, auth=auth)
        (again,) = httpx.get(f"{root}/sandbox/OnlineOrders", auth=auth).json()
        assert "details" not in again  # separate: lines come from order_detail
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.stdout is not None
    assert "order lines: separate" in proc.stdout.read()
