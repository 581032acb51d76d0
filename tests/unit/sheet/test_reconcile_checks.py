"""`mapsync validate` on `reconcile:` checks: connections, side kinds, names, syncs and whether a
check's groups translate through its sync, each problem with file:line and the check's path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mapsync.errors import ConfigError
from mapsync.sheet import loader

BASE = """\
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  portal: {url: "sqlite:///portal.db"}
  api: {kind: rest, base_url: "https://api.example.com"}
syncs:
  invoices:
    from: {connection: erp, table: invoices}
    to: {connection: portal, table: invoices}
    key: {from: invoice_no, to: invoice_ref}
    fields:
      account_ref: {from: customer_no, map: {C001: "1", C002: "2"}}
      region: {from: region_code, truncate: 3}
      amount: balance
    changes: {method: full}
  to_api:
    from: {connection: erp, table: invoices}
    to: {connection: api, resource: invoices}
    key: {from: invoice_no, to: id}
    fields: {amount: balance}
    changes: {method: full}
reconcile:
"""


def _load(tmp_path: Path, checks: str) -> loader.LoadedSheet:
    path = tmp_path / "sheet.yaml"
    path.write_text(BASE + textwrap.indent(textwrap.dedent(checks), "  "), encoding="utf-8")
    return loader.load(path, env={})


def _problems(tmp_path: Path, checks: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, checks)
    return info.value.problems


def test_a_good_business_check_and_a_drift_check_validate(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        """\
        open_ar:
          sync: invoices
          source: {connection: erp, table: invoices, group: customer_no, sum: balance, where: "open = 1"}
          dest: {connection: portal, table: invoices, group: account_ref, sum: amount}
          tolerance: {absolute: "0.01"}
        by_invoice:
          sync: invoices
          source: {connection: erp, table: invoices, group: invoice_no, count: true}
          dest: {connection: portal, table: invoices, group: invoice_ref, count: true}
        rows: {drift: invoices}
        """,
    )
    assert set(loaded.sheet.reconcile) == {"open_ar", "by_invoice", "rows"}


def test_a_non_invertible_rule_is_named_with_file_line_check_group_sync_and_field(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
        regions:
          sync: invoices
          source: {connection: erp, table: invoices, group: region_code, sum: balance}
          dest: {connection: portal, table: invoices, group: region, sum: amount}
        """,
    )
    assert len(problems) == 1
    line = BASE.count("\n") + 3  # the source's line
    assert problems[0].startswith(f"{tmp_path / 'sheet.yaml'}:{line}: reconcile.regions.source")
    assert (
        "check regions: group region_code cannot be translated through sync invoices: "
        "field region uses truncate (not invertible)" in problems[0]
    )


@pytest.mark.parametrize(
    ("checks", "says"),
    [
        (
            """\
            c:
              source: {connection: nowhere, table: invoices, group: a, sum: b}
              dest: {connection: portal, table: invoices, group: a, sum: b}
            """,
            "reconcile.c.source.connection: unknown connection 'nowhere'",
        ),
        (
            """\
            c:
              source: {connection: erp, resource: invoices, group: a, sum: b}
              dest: {connection: portal, table: invoices, group: a, sum: b}
            """,
            "reconcile.c.source.resource: connection 'erp' is SQL",
        ),
        (
            """\
            c:
              source: {connection: erp, table: invoices, group: a, sum: b}
              dest: {connection: api, table: invoices, group: a, sum: b}
            """,
            "reconcile.c.dest.table: connection 'api' is rest: give `resource`",
        ),
        (
            """\
            c:
              source: {connection: erp, table: "a.b.c", group: a, sum: b}
              dest: {connection: portal, table: invoices, group: "", sum: b}
            """,
            "is not `table` or `schema.table`",
        ),
        (
            """\
            c:
              sync: invoics
              source: {connection: erp, table: invoices, group: a, sum: b}
              dest: {connection: portal, table: invoices, group: a, sum: b}
            """,
            "reconcile.c.sync: unknown sync 'invoics' (did you mean 'invoices'?)",
        ),
        ("c: {drift: nosuch}\n", "reconcile.c.drift: unknown sync 'nosuch'"),
        ("c: {drift: to_api}\n", "a drift check compares a SQL destination"),
        (
            """\
            c:
              sync: invoices
              source: {connection: erp, table: invoices, group: customer_no, sum: balance}
              dest: {connection: portal, table: invoices, group: invoice_ref, sum: amount}
            """,
            "the key writes invoice_ref from invoice_no, not from customer_no",
        ),
        (
            """\
            c:
              sync: invoices
              source: {connection: erp, table: invoices, group: customer_no, sum: balance}
              dest: {connection: portal, table: invoices, group: customer, sum: amount}
            """,
            "the sync writes no field customer (dest.group at the same position) "
            "(it writes customer_no to account_ref)",
        ),
    ],
)
def test_each_mistake_is_reported_at_its_place(tmp_path: Path, checks: str, says: str) -> None:
    problems = _problems(tmp_path, checks)
    assert any(says in p for p in problems), problems


def test_the_empty_group_name_is_reported_too(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
        c:
          source: {connection: erp, table: invoices, group: a, sum: "bad\\tname"}
          dest: {connection: portal, table: invoices, group: "  ", sum: b}
        """,
    )
    text = "\n".join(problems)
    assert "reconcile.c.source.sum: 'bad\\tname' holds a control character" in text
    assert "reconcile.c.dest.group.0: '  ' is empty" in text
