"""Issue 9 item 4a: a resource whose GET changes it (CIMcloud `OnlineOrders` marks the orders it
returns exported) is refused as a source, before anything reads it; so is any resource the sheet
marks `destructive: true`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync import errors
from mapsync.sheet import loader
from mapsync.testing.sandbox_serve import Running
from tests import helpers as h
from tests.sandbox_fixtures import token_client

SHEET = """\
version: 1
connections:
  cim:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: basic, username: sandbox, password: "${{CIM_PASSWORD}}"}}
    budget: []{cim_extra}
  api:
    kind: rest
    base_url: "http://127.0.0.1:9/v1"
  erp: {{url: "sqlite:///erp.db"}}
syncs:
  orders:
    from: {{connection: {conn}, {src}}}
    to: {{connection: erp, table: orders}}
    key: {{from: c_ordnum, to: order_no}}
    fields: {{status: status}}
    changes: {{method: watermark, column: last_modify_date, lag: 0s}}
"""
ENV = {"CIM_PASSWORD": "sandbox-password"}
LINE = SHEET.splitlines().index("    from: {{connection: {conn}, {src}}}") + 1


def _write(
    folder: Path, src: str, conn: str = "cim", base: str = "http://127.0.0.1:9", extra: str = ""
) -> Path:
    sheet = folder / "sheet.yaml"
    sheet.write_text(SHEET.format(base=base, conn=conn, src=src, cim_extra=extra))
    return sheet


def _refusal(sheet: Path) -> str:
    with pytest.raises(errors.ConfigError) as caught:
        loader.load(sheet, env=ENV)
    return "\n".join(caught.value.problems)


@pytest.mark.parametrize(
    "resource", ["OnlineOrders", "onlineorders", "/OnlineOrders/", "OnlineOrders/searchexact~x~1"]
)
def test_cimcloud_online_orders_is_refused_as_a_source(tmp_path: Path, resource: str) -> None:
    sheet = _write(tmp_path, f'resource: "{resource}"')
    text = _refusal(sheet)
    assert f"{sheet}:{LINE}: syncs.orders.from.resource: {resource} is CIMcloud's order export" in text
    assert "marks the orders it returns as exported" in text and "would be lost" in text
    # `destructive: false` cannot talk mapsync out of what it knows about CIMcloud
    assert "order export" in _refusal(_write(tmp_path, f'resource: "{resource}", destructive: false'))


def test_a_resource_marked_destructive_is_refused(tmp_path: Path) -> None:
    sheet = _write(tmp_path, "resource: exports, destructive: true", conn="api")
    text = _refusal(sheet)
    assert f"{sheet}:{LINE}: syncs.orders.from.destructive: resource 'exports' is marked destructive" in text
    assert "would be lost" in text
    sheet = _write(tmp_path, "resource: accounts, destructive: true")  # on CIMcloud too
    assert "syncs.orders.from.destructive: resource 'accounts' is marked destructive" in _refusal(sheet)
    # on a SQL source the key means nothing: said so
    sheet = _write(tmp_path, "table: orders, destructive: true", conn="erp")
    assert "syncs.orders.from.destructive: is for a REST or CIMcloud `resource`" in _refusal(sheet)


def test_a_rest_resource_of_that_name_passes_when_the_sheet_says_it_is_not_destructive(
    tmp_path: Path,
) -> None:
    sheet = _write(tmp_path, "resource: OnlineOrders", conn="api")
    assert "order export" in _refusal(sheet)  # not set: refused (it may be CIMcloud behind REST)
    loader.load(_write(tmp_path, "resource: OnlineOrders, destructive: false", conn="api"), env=ENV)
    loader.load(_write(tmp_path, "resource: orders"), env=ENV)  # an ordinary resource: fine


def test_a_read_back_through_online_orders_is_refused(tmp_path: Path) -> None:
    sheet = _write(tmp_path, "resource: orders", extra="\n    read_paths: {order: OnlineOrders}")
    text = _refusal(sheet)
    assert "connections.cim.read_paths.order: OnlineOrders marks every order it returns as exported" in text


def test_no_order_is_consumed_by_a_refused_sheet(tmp_path: Path, cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        c.post("orders/", json=[{"c_ordnum": "W1", "exported": "0"}, {"c_ordnum": "W2", "exported": "0"}])
    h.execute(
        f"sqlite:///{tmp_path / 'erp.db'}", "CREATE TABLE orders (order_no TEXT PRIMARY KEY, status TEXT)"
    )
    _write(tmp_path, "resource: OnlineOrders", base=cimcloud_sandbox.base_url)
    for command in ("validate", "seed"):
        done = h.mapsync(command, "sheet.yaml", cwd=tmp_path, env=ENV)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "order export" in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
    with token_client(cimcloud_sandbox) as c:  # both orders are still waiting to be exported
        assert sorted(o["c_ordnum"] for o in c.get("OnlineOrders").json()) == ["W1", "W2"]


@pytest.mark.parametrize(
    ("conn", "src"),
    [("cim", "resource: OnlineOrders"), ("api", "resource: exports, destructive: true")],
)
def test_the_refusal_is_lifted_for_an_export_flag_read(tmp_path: Path, conn: str, src: str) -> None:
    """Issue 17: read with `changes: {method: export_flag}`, each page is stored in the inbox
    before it is parsed and the GET is never repeated: the sheet loads."""
    sheet = _write(tmp_path, src, conn=conn)
    sheet.write_text(
        sheet.read_text().replace(
            "changes: {method: watermark, column: last_modify_date, lag: 0s}",
            "changes: {method: export_flag, flag: exported}",
        )
    )
    sync = loader.load(sheet, env=ENV).sheet.syncs["orders"]
    assert sync.changes.method == "export_flag" and sync.from_.resource is not None
    # a read-back through OnlineOrders stays refused, export_flag or not
    text = sheet.read_text().replace("budget: []", "budget: []\n    read_paths: {order: OnlineOrders}")
    sheet.write_text(text)
    assert "connections.cim.read_paths.order: OnlineOrders marks every order" in _refusal(sheet)
