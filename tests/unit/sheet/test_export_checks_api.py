"""`validate` on exports from an API (issue 17): CIMcloud's `OnlineOrders` read with
`changes: {method: export_flag}` is valid (the refusal of destructive sources is lifted for it,
and only for it); the SQL-only parts of an export are refused with why; `write_back`/`sweep` are
refused on a SQL export."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync.errors import ConfigError
from mapsync.sheet import loader, models

ENV = {"CIM_PASSWORD": "p", "API_TOKEN": "t"}
CHANGES = "changes: {method: export_flag, flag: exported, status: erp_import_status, error: erp_import_error}"
SHEET = f"""\
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  portal: {{url: "sqlite:///portal.db"}}
  cim:
    kind: cimcloud
    base_url: "http://127.0.0.1:9"
    site: sandbox
    auth: {{type: token, auth_key: sandbox-key, username: sandbox, password: "${{CIM_PASSWORD}}"}}
    budget: ["2/1s", "100/15m"]
  api: {{kind: rest, base_url: "https://api.example.com", auth: {{type: bearer, token: "${{API_TOKEN}}"}}}}
syncs:
  web_orders:
    from: {{connection: cim, resource: OnlineOrders}}
    to: {{connection: erp, table: sales_orders}}
    key: {{from: c_ordnum, to: order_no}}
    fields: {{customer: customer, total: {{from: total, cast: decimal, scale: 2}}}}
    {CHANGES}
"""


def load(tmp_path: Path, text: str) -> models.Sheet:
    path = tmp_path / "sheet.yaml"
    path.write_text(text)
    return loader.load(path, env=ENV).sheet


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sheet.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        loader.load(path, env=ENV)
    return [p.removeprefix(f"{path}:") for p in info.value.problems or [str(info.value)]]


def changes(extra: str) -> str:
    return SHEET.replace(CHANGES, CHANGES.removesuffix("}") + ", " + extra + "}")


def test_online_orders_with_export_flag_validates(tmp_path: Path) -> None:
    text = changes(
        "on_exists: skip, document: {from: erp_order_no, to: erp_order_number}, "
        "write_back: {resource: orders, key: c_ordnum, method: PUT}, "
        "sweep: {window: 7d, on_lost: reset, max_calls: 20, every: 1h}"
    )
    sync = load(tmp_path, text).syncs["web_orders"]
    assert isinstance(sync.changes, models.ExportFlagChanges)
    assert sync.changes.write_back is not None and sync.changes.write_back.method == "PUT"
    assert sync.changes.sweep is not None and sync.changes.on_exists == "skip"
    assert load(tmp_path, SHEET).syncs["web_orders"].changes.write_back is None  # defaults apply later


@pytest.mark.parametrize(
    "method", ["{method: watermark, column: last_modify_date, lag: 0s}", "{method: full}"]
)
def test_online_orders_read_otherwise_is_still_refused(tmp_path: Path, method: str) -> None:
    found = problems(tmp_path, SHEET.replace(CHANGES, f"changes: {method}"))
    assert any(
        "syncs.web_orders.from.resource: OnlineOrders is CIMcloud's order export" in p for p in found
    ), found


def test_a_rest_resource_that_is_not_destructive_is_no_order_export(tmp_path: Path) -> None:
    expected = "syncs.web_orders.from.resource: an export from an API reads its order export"
    for src in ("resource: orders", "resource: OnlineOrders, destructive: false"):
        text = SHEET.replace(
            "from: {connection: cim, resource: OnlineOrders}", f"from: {{connection: api, {src}}}"
        )
        found = problems(tmp_path, text)
        assert any(expected in p for p in found), (src, found)
    text = SHEET.replace("resource: OnlineOrders}", "resource: accounts}")  # CIMcloud, not the export
    assert any(expected in p for p in problems(tmp_path, text))


def test_a_rest_resource_marked_destructive_is_an_order_export(tmp_path: Path) -> None:
    text = SHEET.replace(
        "from: {connection: cim, resource: OnlineOrders}",
        "from: {connection: api, resource: exports, destructive: true}",
    )
    assert load(tmp_path, text).syncs["web_orders"].from_.destructive is True


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ("since: create_date", "changes.since", "there is no starting point"),
        ("version: last_modify_date", "changes.version", "the hash of the record the API returned"),
        ("touch: [last_modify_date]", "changes.touch", "not an UPDATE"),
        ("created: create_date", "changes.created", "the pickup monitor reads a SQL table"),
        ("on_failure: hold", "changes.on_failure", "use `retry`"),
    ],
)
def test_sql_only_parts_of_an_export_are_refused(tmp_path: Path, extra: str, path: str, message: str) -> None:
    found = problems(tmp_path, changes(extra))
    assert len(found) == 1, found
    assert f"syncs.web_orders.{path}: " in found[0] and message in found[0]
    if path != "changes.on_failure":
        assert "is for an export from a SQL table" in found[0]


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ('seed: {where: "exported = 0"}', "seed.where", "a seed of an export from an API reads nothing"),
        ("seed: {export_existing: true}", "seed.export_existing", "a GET would mark the orders exported"),
        ('filter: "total > 0"', "filter", "the API's order export takes no condition"),
    ],
)
def test_a_seed_or_filter_of_an_api_export_is_refused(
    tmp_path: Path, extra: str, path: str, message: str
) -> None:
    found = problems(tmp_path, SHEET + f"    {extra}\n")
    assert len(found) == 1, found
    assert f"syncs.web_orders.{path}: " in found[0] and message in found[0]


@pytest.mark.parametrize(
    "extra", ["write_back: {resource: orders}", "sweep: {window: 7d}"], ids=["write_back", "sweep"]
)
def test_write_back_and_sweep_are_refused_on_a_sql_export(tmp_path: Path, extra: str) -> None:
    text = changes(extra).replace(
        "from: {connection: cim, resource: OnlineOrders}", "from: {connection: portal, table: orders}"
    )
    (found,) = problems(tmp_path, text)
    field = extra.split(":")[0]
    assert f"syncs.web_orders.changes.{field}: is for an export from an API (CIMcloud)" in found


def test_an_api_export_into_an_api_cannot_read_the_destination(tmp_path: Path) -> None:
    text = changes("on_exists: fail, document: {from: erp_order_no, to: erp_order_number}").replace(
        "to: {connection: erp, table: sales_orders}", "to: {connection: api, resource: sales_orders}"
    )
    found = problems(tmp_path, text)
    assert any("syncs.web_orders.changes.on_exists: `fail` reads the destination's rows" in p for p in found)
    assert any(
        "syncs.web_orders.changes.document: is read back from a SQL destination only" in p for p in found
    )


def test_write_back_key_other_than_the_sync_key_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, changes("write_back: {key: o_key}"))
    assert any("changes.write_back.key: must be the sync's key (c_ordnum)" in p for p in found), found


def test_a_sweep_on_a_generic_rest_export_is_refused(tmp_path: Path) -> None:
    text = changes("sweep: {every: 1h}").replace(
        "from: {connection: cim, resource: OnlineOrders}",
        "from: {connection: api, resource: exports, destructive: true}",
    )
    found = problems(tmp_path, text)
    assert any("changes.sweep: reads CIMcloud's Orders resource by searchstring" in p for p in found), found
