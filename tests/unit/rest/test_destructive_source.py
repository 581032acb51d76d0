"""`DestructiveSource`, a REST resource whose GET marks what it returns (`destructive: true`, read
with `changes: {method: export_flag}`): `take()` sends one GET, never again; `split()` turns a raw
page into one inbox payload per record with its nested child rows; `row_and_children()` reads a
payload back as the sheet's columns, the parent key injected into lines that do not repeat it; a
page that cannot be split is a BadPage. The API is an httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync import errors
from mapsync.rest.connector import RestConnector, open_handle
from mapsync.rest.destructive_source import BadPage, DestructiveSource
from mapsync.sheet import loader
from mapsync.sheet.connection_models import RestConnection

SHEET = """\
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  api:
    kind: rest
    base_url: "http://shop.invalid/v1"
    paging: {size: 50, items: data.orders}
    retry: {attempts: 3, backoff: 1ms}
syncs:
  web_orders:
    from: {connection: api, resource: exports, destructive: true}
    to: {connection: erp, table: sales_orders}
    key: {from: order_no, to: order_no}
    fields: {customer: customer, total: {from: total, cast: decimal}}
    changes: {method: export_flag, flag: exported}
    children:
      lines:
        from: CHILD
        to: {connection: erp, table: sales_order_lines}
        parent: {from: order_no, to: order_no}
        key: {from: [order_no, line_no], to: [order_no, line_no]}
        fields: {sku: sku, qty: {from: quantity, cast: decimal}}
"""
NESTED = "{connection: api, nested: details}"

Answer = Callable[[httpx.Request], httpx.Response]


def source(tmp_path: Path, answer: Answer | None = None, child: str = NESTED) -> DestructiveSource:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.replace("CHILD", child))
    sheet = loader.load(path, env={}).sheet
    cfg = sheet.connections["api"]
    assert isinstance(cfg, RestConnection)
    handle = open_handle("api", cfg, transport=httpx.MockTransport(answer or (lambda r: httpx.Response(200))))
    made = RestConnector().source(handle, "web_orders", sheet.syncs["web_orders"], None)
    assert isinstance(made, DestructiveSource)
    return made


def page(*orders: Any) -> str:
    return json.dumps({"data": {"orders": list(orders)}, "total": len(orders)})


ORDER = {
    "order_no": "W1",
    "customer": "C7",
    "total": "12.50",
    "note": "not in the sheet",
    "details": [
        {"line_no": 1, "sku": "A", "quantity": "2", "price": "1.00"},
        {"line_no": 2, "sku": "B", "quantity": "1", "order_no": "W1"},
    ],
}


def test_a_page_splits_into_one_payload_per_record_with_its_lines(tmp_path: Path) -> None:
    src = source(tmp_path)
    pairs = src.split(page(ORDER, {"order_no": "W2", "customer": "C8", "total": 3}))
    assert [key for key, _ in pairs] == [("W1",), ("W2",)]
    first = json.loads(pairs[0][1])
    assert first["record"] == ORDER  # the whole record is kept, not only the sheet's columns
    assert first["children"] == {"lines": ORDER["details"]}
    assert json.loads(pairs[1][1])["children"] == {"lines": []}  # no `details`: no lines


def test_a_payload_reads_back_as_the_sheets_columns_and_lines_get_the_parent_key(tmp_path: Path) -> None:
    src = source(tmp_path)
    ((_, payload),) = src.split(page(ORDER))
    row, kids = src.row_and_children(payload)
    assert row == {"order_no": "W1", "customer": "C7", "total": "12.50"}
    assert kids == {
        "lines": [
            {"order_no": "W1", "line_no": 1, "sku": "A", "quantity": "2"},  # injected
            {"order_no": "W1", "line_no": 2, "sku": "B", "quantity": "1"},
        ]
    }


def test_null_lines_are_no_lines(tmp_path: Path) -> None:
    src = source(tmp_path)
    ((_, payload),) = src.split(page({**ORDER, "details": None}))
    assert src.row_and_children(payload)[1] == {"lines": []}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("<html>Service Unavailable</html>", "the answer is not JSON"),
        (json.dumps([ORDER]), "the answer holds no list of records"),  # not under data.orders
        (json.dumps({"data": {"orders": {"order_no": "W1"}}}), "the answer holds no list of records"),
        (page(ORDER, "W2"), "a record is not an object"),
        (page({**ORDER, "details": "none"}), r'record \["W1"\]: `details` is not a list of records'),
        (
            page({**ORDER, "details": [{"line_no": 1}, 7]}),
            r'record \["W1"\]: `details` is not a list of records',
        ),
    ],
)
def test_a_page_that_cannot_be_split_is_a_bad_page(tmp_path: Path, raw: str, message: str) -> None:
    with pytest.raises(BadPage, match=message):
        source(tmp_path).split(raw)


def test_a_record_without_its_key_is_a_bad_page(tmp_path: Path) -> None:
    """Not a PermanentError: the capture keeps a page it cannot split as `error` and says how its
    orders come back; anything else left the page `new`, failing every later run on it."""
    src = source(tmp_path)
    for keyless in ({"customer": "C7"}, {"order_no": None, "customer": "C7"}):
        with pytest.raises(BadPage, match=r"a record has no key field \['order_no'\]"):
            src.split(page(ORDER, keyless))


def test_take_sends_one_get_of_the_first_page(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def answer(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, text=page(ORDER))

    src = source(tmp_path, answer)
    assert src.take() == page(ORDER)  # the raw text, unparsed
    ((req,),) = [seen]
    assert req.method == "GET" and req.url.path == "/v1/exports"
    assert dict(req.url.params) == {"per_page": "50", "page": "1"}
    assert src.page_size == 50 and src.write_batch == 10 and src.requests == 1


@pytest.mark.parametrize("code", [500, 503])
def test_a_failed_take_is_not_sent_again(tmp_path: Path, code: int) -> None:
    seen: list[httpx.Request] = []
    src = source(tmp_path, lambda req: (seen.append(req), httpx.Response(code, text="down"))[1])
    with pytest.raises(errors.TransientError, match="not sent again") as caught:
        src.take()
    assert len(seen) == 1 and caught.value.failure_class == "source"


def test_a_refused_take_says_it_may_have_marked_records(tmp_path: Path) -> None:
    src = source(tmp_path, lambda req: httpx.Response(404, text="no such resource"))
    with pytest.raises(
        errors.TransientError, match="HTTP 404 \\(not sent again: it may have marked"
    ) as caught:
        src.take()
    assert caught.value.failure_class == "source" and "no such resource" in str(caught.value)


def test_every_other_read_is_refused(tmp_path: Path) -> None:
    src = source(tmp_path)
    with pytest.raises(errors.ConfigError, match="only `changes: \\{method: export_flag\\}` reads it"):
        next(iter(src.stream(["order_no"], [], None, 10)))
    with pytest.raises(errors.ConfigError, match="never read by key"):
        next(iter(src.fetch_keys([("W1",)])))
    with pytest.raises(errors.ConfigError, match="needs the state store"):
        src.stored([("W1",)])


def test_generic_rest_lines_from_a_resource_are_refused_by_validate(tmp_path: Path) -> None:
    # validate refuses them before any run (sheet/checks.py); the source would refuse them too
    with pytest.raises(errors.ConfigError, match="a REST source carries them `nested` in the record"):
        source(tmp_path, child="{connection: api, resource: export_lines}")
