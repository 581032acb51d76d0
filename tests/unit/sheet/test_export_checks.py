"""`validate` on transaction exports: where the flag lives, what a seed may do, and the return leg."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync.errors import ConfigError
from mapsync.sheet import loader

SHEET = """\
version: 1
connections:
  portal: {url: "sqlite:///portal.db"}
  erp: {url: "sqlite:///erp.db"}
  api: {kind: rest, base_url: "https://api.example.com", auth: {type: bearer, token: "${API_TOKEN}"}}
syncs:
  orders:
    from: {connection: portal, table: orders}
    to: {connection: erp, table: so}
    key: {from: id, to: order_no}
    fields: {cust: customer}
    changes: {method: export_flag, flag: exported, status: st, error: err}
"""


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sheet.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        loader.load(path, env={"API_TOKEN": "t"})
    return [p.removeprefix(f"{path}:") for p in info.value.problems or [str(info.value)]]


def test_a_plain_export_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET)
    changes = loader.load(path, env={"API_TOKEN": "t"}).sheet.syncs["orders"].changes
    assert changes.method == "export_flag"


def test_the_return_leg_may_not_write_the_flag_or_status(tmp_path: Path) -> None:
    text = SHEET + (
        "  back:\n"
        "    from: {connection: erp, table: so}\n"
        "    to: {connection: portal, table: orders}\n"
        "    key: {from: order_no, to: id}\n"
        "    fields: {order_status: status, st: status}\n"
        "    changes: {method: full}\n"
    )
    (found,) = _problems(tmp_path, text)
    assert "syncs.back.fields.st: writes st of 'orders', which export orders writes back" in found
    assert found.startswith(
        f"{text.splitlines().index('    fields: {order_status: status, st: status}') + 1}:"
    )


def test_a_return_leg_writing_other_columns_is_fine(tmp_path: Path) -> None:
    text = SHEET + (
        "  back:\n"
        "    from: {connection: erp, table: so}\n"
        "    to: {connection: portal, table: orders}\n"
        "    key: {from: order_no, to: id}\n"
        "    fields: {order_status: status}\n"
        "    changes: {method: full}\n"
    )
    path = tmp_path / "sheet.yaml"
    path.write_text(text)
    assert set(loader.load(path, env={"API_TOKEN": "t"}).sheet.syncs) == {"orders", "back"}


def test_export_existing_only_on_an_export(tmp_path: Path) -> None:
    text = SHEET.replace(
        "changes: {method: export_flag, flag: exported, status: st, error: err}",
        "changes: {method: full}\n    seed: {export_existing: true}",
    )
    (found,) = _problems(tmp_path, text)
    assert "syncs.orders.seed.export_existing: is for `changes: {method: export_flag}` only" in found


def test_an_export_needs_a_sql_table_and_a_sql_destination_to_compare(tmp_path: Path) -> None:
    text = SHEET.replace(
        "from: {connection: portal, table: orders}", "from: {connection: api, resource: orders}"
    )
    found = _problems(tmp_path, text)
    # an API's resource that changes nothing when read is no order export
    assert any("an export from an API reads its order export" in p for p in found), found
    text = SHEET.replace("to: {connection: erp, table: so}", "to: {connection: api, resource: so}").replace(
        "error: err}", "error: err, on_exists: skip}"
    )
    found = _problems(tmp_path, text)
    assert any(
        "syncs.orders.changes.on_exists: `skip` reads the destination's rows by key" in p for p in found
    ), found


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ("{method: export_flag, flag: exported, status: exported}", "must be different columns"),
        ("{method: export_flag, flag: exported, done: 0}", "cannot also be a `pending` value"),
        (
            "{method: export_flag, flag: exported, on_failure: hold, failed_value: 1}",
            "`failed_value` must differ",
        ),
        ("{method: export_flag, flag: exported, version: exported}", "cannot be `version`"),
    ],
)
def test_model_rules(tmp_path: Path, changes: str, message: str) -> None:
    text = SHEET.replace("{method: export_flag, flag: exported, status: st, error: err}", changes)
    found = _problems(tmp_path, text)
    assert any(message in p and "syncs.orders.changes" in p for p in found), found


def test_the_shipped_cimcloud_orders_example_is_a_valid_api_export(tmp_path: Path) -> None:
    shipped = Path(loader.__file__).parents[1] / "examples" / "cimcloud_orders.yaml"
    env = {"ERP_PASSWORD": "x", "CIM_AUTH_KEY": "x", "CIM_PASSWORD": "x"}
    sheet = loader.load(shipped, env=env).sheet
    orders = sheet.syncs["web_orders"]
    assert orders.from_.resource == "OnlineOrders" and orders.changes.method == "export_flag"
    cim = sheet.connections["cim"]
    assert cim.kind == "cimcloud" and getattr(cim, "budget", None) == ["2/1s", "100/15m"]
    assert orders.children["lines"].from_.nested == "details"
    # the same source read by another method is refused: OnlineOrders marks what it returns
    kept = [
        line
        for line in shipped.read_text(encoding="utf-8").splitlines()
        if not line.strip().startswith(("flag:", "status:", "error:", "on_exists:", "on_failure:"))
    ]
    other = tmp_path / "sheet.yaml"
    other.write_text("\n".join(kept).replace("method: export_flag", "method: full"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        loader.load(other, env=env)
    assert "OnlineOrders" in " ".join(info.value.problems or [str(info.value)])
