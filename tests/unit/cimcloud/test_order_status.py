"""`CimcloudStatusWriter` against the sandbox (in process): `POST orders` at most 10 per call with
every value as text; an answer whose counts add up is trusted, one that does not is checked by
reading the call's orders back (one `|or|` GET); an order that reads back different fails the
write-back naming it; `existing()` reads which orders the Orders resource holds."""

from __future__ import annotations

from typing import Any

import pytest

from mapsync import errors
from mapsync.cimcloud.connector import open_handle
from mapsync.cimcloud.order_status import CimcloudStatusWriter
from mapsync.sheet.connection_models import CimcloudConnection
from mapsync.sheet.export_rest_models import ExportWriteBack
from mapsync.testing.sandbox_serve import InProcess


def writer(box: InProcess, batch: int = 10, **target: Any) -> CimcloudStatusWriter:
    cfg = CimcloudConnection.model_validate(
        {
            "kind": "cimcloud",
            "base_url": box.base_url,
            "site": box.sandbox.config.site,
            "auth": {
                "type": "token",
                "auth_key": "sandbox-key",
                "username": "sandbox",
                "password": "sandbox-password",
            },
            "budget": [],
            "retry": {"attempts": 2, "backoff": "10ms"},
        }
    )
    handle = open_handle("cim", cfg)
    return CimcloudStatusWriter(
        handle, "web_orders", ExportWriteBack.model_validate(target), "c_ordnum", batch
    )


def plant(box: InProcess, n: int) -> list[str]:
    return [
        box.sandbox.add_order({"c_ordnum": f"W{i:03d}", "exported": "1", "total": "10.00"}) for i in range(n)
    ]


def status(numbers: list[str], state: str = "imported") -> list[dict[str, Any]]:
    return [
        {"c_ordnum": n, "exported": 1, "erp_import_status": state, "erp_order_number": i}
        for i, n in enumerate(numbers)
    ]


def calls(box: InProcess) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in box.sandbox.store.requests() if r["path"] != "authenticate"]


def test_calls_of_at_most_ten_values_as_text(cimcloud_inprocess: InProcess) -> None:
    box = cimcloud_inprocess
    numbers = plant(box, 23)
    w = writer(box, batch=10)
    w.write(status(numbers))
    assert calls(box) == [("POST", "orders")] * 3 and w.calls == 3  # 10 + 10 + 3, no read-back
    order = box.sandbox.order("W012")
    assert order is not None
    assert (order["exported"], order["erp_import_status"], order["erp_order_number"]) == (
        "1",
        "imported",
        "12",
    )
    assert order["total"] == "10.00"  # a field the status does not name is left alone


def test_an_answer_that_does_not_add_up_is_read_back(cimcloud_inprocess: InProcess) -> None:
    box = cimcloud_inprocess
    numbers = plant(box, 4)
    box.sandbox.faults.undercount = 1  # the answer reports one order fewer than it applied
    w = writer(box)
    w.write(status(numbers))  # the read-back finds every order as written: no error
    (post, get) = calls(box)
    assert post == ("POST", "orders")
    assert get[0] == "GET" and get[1].startswith("orders/") and get[1].count("|or|") == 3
    assert w.calls == 2


def test_an_order_that_reads_back_different_is_named(cimcloud_inprocess: InProcess) -> None:
    box = cimcloud_inprocess
    numbers = plant(box, 3)
    box.sandbox.faults.reject = {"W001": "order is locked"}
    w = writer(box)
    with pytest.raises(errors.TransientError) as caught:
        w.write(status(numbers))
    message = str(caught.value)
    assert "CIMcloud did not apply it to W001;" in message
    assert "W000" not in message.split("did not apply it to")[1]  # only the order that differs
    assert "order is locked" in message  # the answer's message, for the operator
    assert box.sandbox.order("W000")["erp_import_status"] == "imported"  # type: ignore[index]
    assert "erp_import_status" not in box.sandbox.order("W001")  # type: ignore[operator]


def test_an_order_the_resource_does_not_hold_is_named(cimcloud_inprocess: InProcess) -> None:
    """PUT updates only: an order that is not there is refused, and the read-back finds nothing."""
    box = cimcloud_inprocess
    numbers = plant(box, 1)
    w = writer(box, method="PUT")
    with pytest.raises(errors.TransientError, match="did not apply it to W404;"):
        w.write(status([*numbers, "W404"]))
    assert box.sandbox.order("W404") is None


def test_existing_reads_the_orders_resource_ten_keys_per_call(cimcloud_inprocess: InProcess) -> None:
    box = cimcloud_inprocess
    numbers = plant(box, 12)
    w = writer(box)
    asked = [n.lower() if i % 2 else n for i, n in enumerate(numbers)] + ["W999"]
    assert w.existing(asked) == {n.lower(): n for n in numbers}  # lower case → CIMcloud's spelling
    assert [m for m, _ in calls(box)] == ["GET", "GET"] and w.calls == 2  # 13 keys: 10 + 3
    assert w.existing([]) == {}


def test_a_resource_that_is_not_there_reads_back_nothing(cimcloud_inprocess: InProcess) -> None:
    """The POST and the read-back GET both 404 (CIMcloud's 404 also means "nothing found"):
    every order of the call is named, none is taken as written."""
    box = cimcloud_inprocess
    numbers = plant(box, 2)
    w = writer(box, resource="order_status")
    with pytest.raises(errors.TransientError, match="order_status") as caught:
        w.write(status(numbers))
    assert "did not apply it to W000, W001; it answered HTTP 404" in str(caught.value)
    assert [m for m, _ in calls(box)] == ["POST", "GET"]
