"""`CimcloudOrdersSource` on the sandbox (in process): `take()` is one GET of `OnlineOrders` that
marks what it returns; `split()` gives each order its lines, nested in the answer or read from
`order_detail` by order number (one `|or|` GET per 10 orders); an answer that is not a list of
orders is a BadPage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mapsync import errors
from mapsync.cimcloud.connector import CimcloudConnector, open_handle
from mapsync.cimcloud.orders import CimcloudOrdersSource
from mapsync.rest.destructive_source import BadPage
from mapsync.sheet import loader
from mapsync.sheet.connection_models import CimcloudConnection
from mapsync.testing.sandbox_serve import InProcess

SHEET = """\
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  cim:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: token, auth_key: sandbox-key, username: sandbox, password: sandbox-password}}
    budget: []
syncs:
  web_orders:
    from: {{connection: cim, resource: OnlineOrders}}
    to: {{connection: erp, table: sales_orders}}
    key: {{from: c_ordnum, to: order_no}}
    fields: {{customer: customer}}
    changes: {{method: export_flag, flag: exported}}
    children:
      lines:
        from: {child}
        to: {{connection: erp, table: sales_order_lines}}
        parent: {{from: c_ordnum, to: order_no}}
        key: {{from: [c_ordnum, line_no], to: [order_no, line_no]}}
        fields: {{sku: sku}}
"""


def source(tmp_path: Path, box: InProcess, child: str) -> CimcloudOrdersSource:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.format(base=box.base_url, child=child))
    sheet = loader.load(path, env={}).sheet
    cfg = sheet.connections["cim"]
    assert isinstance(cfg, CimcloudConnection)
    made = CimcloudConnector().source(open_handle("cim", cfg), "web_orders", sheet.syncs["web_orders"], None)
    assert isinstance(made, CimcloudOrdersSource)
    return made


def plant(box: InProcess, n: int) -> None:
    for i in range(n):
        box.sandbox.add_order(
            {"c_ordnum": f"W{i:02d}", "customer": f"C{i}"}, [{"sku": f"S{i}-{j}"} for j in range(i % 3)]
        )


def gets(box: InProcess) -> list[str]:
    return [r["path"] for r in box.sandbox.store.requests() if r["method"] == "GET"]


def test_nested_lines_come_with_their_order(tmp_path: Path, cimcloud_inprocess: InProcess) -> None:
    box = cimcloud_inprocess
    plant(box, 3)
    src = source(tmp_path, box, "{connection: cim, nested: details}")
    raw = src.take()
    assert gets(box) == ["OnlineOrders"] and src.requests == 1
    assert all(o["exported"] == "1" for o in box.sandbox.orders())  # the GET marked them
    pairs = src.split(raw)
    assert [k for k, _ in pairs] == [("W00",), ("W01",), ("W02",)]
    row, kids = src.row_and_children(pairs[2][1])
    assert row == {"c_ordnum": "W02", "customer": "C2"}
    assert [(x["c_ordnum"], x["line_no"], x["sku"]) for x in kids["lines"]] == [
        ("W02", "1", "S2-0"),
        ("W02", "2", "S2-1"),
    ]
    assert src.row_and_children(pairs[0][1])[1] == {"lines": []}
    assert gets(box) == ["OnlineOrders"]  # nested lines: no other read


def test_separate_lines_are_read_by_order_number(
    tmp_path: Path, cimcloud_sandbox_factory: Callable[..., InProcess]
) -> None:
    box = cimcloud_sandbox_factory(in_process=True, online_orders_lines="separate")
    plant(box, 12)
    src = source(tmp_path, box, "{connection: cim, resource: order_detail}")
    raw = src.take()
    assert all("details" not in o for o in json.loads(raw))
    pairs = src.split(raw)
    assert len(pairs) == 12
    reads = gets(box)[1:]
    assert len(reads) == 2 and all(r.startswith("order_detail/") and "|or|" in r for r in reads)  # 10 + 2
    lines = {k[0]: src.row_and_children(p)[1]["lines"] for k, p in pairs}
    assert [x["sku"] for x in lines["W11"]] == ["S11-0", "S11-1"]
    assert lines["W09"] == [] and len(lines["W10"]) == 1


def test_an_answer_that_is_not_a_list_of_orders_is_a_bad_page(
    tmp_path: Path, cimcloud_inprocess: InProcess
) -> None:
    src = source(tmp_path, cimcloud_inprocess, "{connection: cim, nested: details}")
    with pytest.raises(BadPage, match="not a list of orders"):
        src.split(json.dumps({"orders": []}))
    with pytest.raises(BadPage, match="not JSON"):
        src.split("<html>")
    assert src.split("[]") == []


def test_a_lost_online_orders_answer_is_not_sent_again(tmp_path: Path, cimcloud_inprocess: InProcess) -> None:
    box = cimcloud_inprocess
    plant(box, 2)
    box.sandbox.faults.online_orders_lost = 1  # marks the orders exported, then answers 500
    src = source(tmp_path, box, "{connection: cim, nested: details}")
    with pytest.raises(errors.TransientError, match="not sent again") as caught:
        src.take()
    assert caught.value.failure_class == "source"
    assert gets(box) == ["OnlineOrders"]
    assert all(o["exported"] == "1" for o in box.sandbox.orders())  # what the sweep must find
