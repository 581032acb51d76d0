"""`StatusWriter`, the status write-back of an export from a generic REST API: calls of at most
`batch` records, every value as text, a refused call (or a refused credential) a TransientError
naming its orders, `existing()` taking every key as held. The API is an httpx.MockTransport that
records each call's body."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import httpx
import pytest

from mapsync import errors
from mapsync.rest.client import HttpClient
from mapsync.rest.source import RestHandle
from mapsync.rest.status_writer import StatusWriter
from mapsync.sheet.connection_models import RetryPolicy
from mapsync.sheet.export_rest_models import ExportWriteBack


class Api:
    def __init__(self, code: int = 200, body: Any = None) -> None:
        self.code, self.body = code, body
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.calls.append((req.method, req.url.path, json.loads(req.content) if req.content else None))
        return httpx.Response(self.code, json=self.body if self.body is not None else {"ok": True})


def writer(api: Api, batch: int = 3, **target: Any) -> StatusWriter:
    client = HttpClient(
        "shop",
        "http://shop.invalid/api",
        timeout=dt.timedelta(seconds=2),
        retry=RetryPolicy(attempts=1),
        transport=httpx.MockTransport(api),
    )
    handle = RestHandle("shop", None, client)
    return StatusWriter(handle, "web_orders", ExportWriteBack.model_validate(target), "order_no", batch)


def updates(n: int) -> list[dict[str, Any]]:
    return [{"order_no": f"W{i}", "exported": 1, "erp_import_status": "imported"} for i in range(n)]


def test_status_records_go_in_calls_of_at_most_batch() -> None:
    api = Api()
    w = writer(api, batch=3)
    w.write(updates(7))
    assert [len(body) for _, _, body in api.calls] == [3, 3, 1]
    assert w.calls == 3 == w.calls_for(7)
    assert w.calls_for(0) == 0 and w.calls_for(3) == 1 and w.calls_for(4) == 2
    assert [body[0]["order_no"] for _, _, body in api.calls] == ["W0", "W3", "W6"]
    assert {(m, p) for m, p, _ in api.calls} == {("POST", "/api/orders")}  # the default resource


def test_values_are_sent_as_text_to_the_named_resource_and_method() -> None:
    api = Api()
    w = writer(api, batch=10, resource="/order_status/", method="PUT")
    w.write(
        [
            {
                "order_no": 17,
                "exported": True,
                "total": decimal.Decimal("12.50"),
                "when": dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC),
                "erp_import_error": None,
            }
        ]
    )
    ((method, path, body),) = api.calls
    assert (method, path) == ("PUT", "/api/order_status")
    assert body == [
        {
            "order_no": "17",
            "exported": "1",
            "total": "12.50",
            "when": "2026-12-01T08:30:00+00:00",
            "erp_import_error": "",  # NULL clears the field
        }
    ]


def test_a_batch_below_one_is_one() -> None:
    api = Api()
    w = writer(api, batch=0)
    w.write(updates(2))
    assert [len(body) for _, _, body in api.calls] == [1, 1]


def test_a_refused_call_is_a_transient_error_naming_its_orders() -> None:
    api = Api(422, {"message": "no such order"})
    w = writer(api, batch=2)
    with pytest.raises(errors.TransientError) as caught:
        w.write(updates(5))
    message = str(caught.value)
    assert "sync web_orders: writing the export status to orders (W0, W1) failed" in message
    assert "HTTP 422" in message and "no such order" in message
    assert "sent again by the next run" in message
    assert len(api.calls) == 1  # the first refused call stops the write-back


def test_a_refused_credential_stops_the_write_back_as_transient() -> None:
    """Access refused (401 without a renewable token, 403): the transactions are in the ERP
    already, so the run ends transient (sent again next run), not as a permanent failure."""
    api = Api(403, {"message": "forbidden"})
    w = writer(api)
    with pytest.raises(
        errors.TransientError, match=r"\(W0, W1, W2\) failed; .*: access refused \(HTTP 403\)"
    ):
        w.write(updates(3))


def test_existing_takes_every_key_as_held() -> None:
    api = Api()
    assert writer(api).existing(["W1", "w2", "AbC"]) == {"w1": "W1", "w2": "w2", "abc": "AbC"}
    assert api.calls == []  # nothing read: a generic API documents no read by key
