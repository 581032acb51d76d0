"""`validate` on child rows by source kind (issue 17): an API source's children are `nested` in the
record or read from a `resource`; a SQL source's come from a `table`; `nested` stands alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync.errors import ConfigError
from mapsync.sheet import loader, models

ENV = {"CIM_PASSWORD": "p"}
SHEET = """\
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  portal: {{url: "sqlite:///portal.db"}}
  cim:
    kind: cimcloud
    base_url: "http://127.0.0.1:9"
    site: sandbox
    auth: {{type: token, auth_key: sandbox-key, username: sandbox, password: "${{CIM_PASSWORD}}"}}
    budget: []
syncs:
  web_orders:
    from: {parent}
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
        fields: {{sku: sku, qty: {{from: quantity, cast: decimal}}}}
"""
CIM = "{connection: cim, resource: OnlineOrders}"
SQL = "{connection: portal, table: orders}"


def write(tmp_path: Path, parent: str, child: str) -> Path:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.format(parent=parent, child=child))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader.load(path, env=ENV)
    return [p.removeprefix(f"{path}:") for p in info.value.problems or [str(info.value)]]


@pytest.mark.parametrize(
    ("child", "nested", "resource"),
    [
        ("{connection: cim, nested: details}", "details", None),
        ("{connection: cim, resource: order_detail}", None, "order_detail"),
    ],
)
def test_api_children_are_nested_or_a_resource(
    tmp_path: Path, child: str, nested: str | None, resource: str | None
) -> None:
    sheet = loader.load(write(tmp_path, CIM, child), env=ENV).sheet
    ref = sheet.syncs["web_orders"].children["lines"].from_
    assert (ref.nested, ref.resource, ref.table) == (nested, resource, None)
    assert isinstance(sheet.syncs["web_orders"].changes, models.ExportFlagChanges)


def test_an_api_child_from_a_table_is_refused(tmp_path: Path) -> None:
    found = problems(write(tmp_path, CIM, "{connection: cim, table: order_detail}"))
    assert any(
        "syncs.web_orders.children.lines.from: child rows of an API source are `nested` in the record "
        "or read from a `resource`" in p
        for p in found
    ), found


@pytest.mark.parametrize(
    "child", ["{connection: portal, nested: details}", "{connection: portal, resource: order_lines}"]
)
def test_a_sql_source_child_is_a_table(tmp_path: Path, child: str) -> None:
    found = problems(write(tmp_path, SQL, child))
    assert any(
        "syncs.web_orders.children.lines.from: child rows of a SQL source come from a `table`" in p
        for p in found
    ), found
    loader.load(write(tmp_path, SQL, "{connection: portal, table: order_lines}"), env=ENV)  # the SQL way


@pytest.mark.parametrize("other", ["table: order_detail", "resource: order_detail", "query: SELECT 1"])
def test_nested_stands_alone(tmp_path: Path, other: str) -> None:
    found = problems(write(tmp_path, CIM, f"{{connection: cim, nested: details, {other}}}"))
    assert any("give `nested` (child rows inside the parent record) alone" in p for p in found), found
