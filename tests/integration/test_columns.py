"""Destination columns declared in the sheet (`to: columns:`) for REST/CIMcloud destinations,
against the CIMcloud sandbox: `truncate: auto` cuts to the declared length (counted), a declared
length/required/decimal is checked before sending (a rejection naming the field, nothing sent for
that record), and `truncate: auto` without a declared length is a `validate` error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mapsync.testing.sandbox_serve import Running
from tests import helpers as h

ENV = {"CIM_PASSWORD": "sandbox-password", "CIM_KEY": "sandbox-key"}

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  cim:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: token, auth_key: "${{CIM_KEY}}", username: sandbox, password: "${{CIM_PASSWORD}}"}}
    budget: []
    retry: {{attempts: 2, backoff: 50ms}}
syncs:
  accounts:
    from: {{connection: erp, table: customers}}
    to:
      connection: cim
      resource: account
      columns:
{columns}
    key: {{from: customer_no, to: ref_id}}
    fields:
{fields}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    deletes: {{policy: disable, field: status, value: "0"}}
"""

COLUMNS = """\
        ref_id: {type: string, length: 20, required: true}
        nm: {type: string, length: 10}
        email: {type: string, length: 30, required: true}
        credit: {type: decimal, precision: 6, scale: 2}
"""

FIELDS = """\
      nm: {from: name, truncate: auto}
      email: email
      credit: credit
"""

ROWS = [  # customer_no, name, email, credit
    ("C1", "Short", "a@example.com", "10.50"),
    ("C2", "A name far longer than ten", "b@example.com", "20.00"),
    ("C3", "Nobody", None, "1.00"),  # email required → rejected
    ("C4", "Rich", "d@example.com", "123456.00"),  # over numeric(6,2) → rejected
    ("C5", "Another too long name", "e@example.com", "5"),
]


def _world(src: str, box: Running, folder: Path, columns: str = COLUMNS, fields: str = FIELDS) -> None:
    h.execute(
        src,
        "CREATE TABLE customers (customer_no VARCHAR(20) PRIMARY KEY, name VARCHAR(100), "
        f"email VARCHAR(100), credit NUMERIC(12, 2), last_modified {h.TS[h.dialect(src)]})",
    )
    h.execute(
        src,
        "INSERT INTO customers VALUES (:k, :n, :e, :c, '2026-01-01 00:00:00')",
        params=[{"k": k, "n": n, "e": e, "c": c} for k, n, e, c in ROWS],
    )
    text = SHEET.format(src=src, base=box.base_url, columns=columns, fields=fields)
    (folder / "sheet.yaml").write_text(text)


def _posted(box: Running) -> list[dict[str, Any]]:
    return [r for r in box.sandbox.store.requests() if r["method"] == "POST" and r["path"] == "account"]


def test_declared_columns_truncate_and_reject_before_sending(
    sqlite_database: Any, cimcloud_sandbox: Running, tmp_path: Path
) -> None:
    _world(sqlite_database(), cimcloud_sandbox, tmp_path)
    done = h.mapsync("seed", "sheet.yaml", "--json", cwd=tmp_path, env=ENV)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report["counts"]["written"] == 3, json.dumps(report)
    assert report["counts"]["rejected"] == 2
    assert report["counts"]["truncated"] == 2
    assert report["truncated"] == {"nm": 2}
    accounts = {r["ref_id"]: r for r in cimcloud_sandbox.sandbox.store.all("accounts")}
    assert sorted(accounts) == ["C1", "C2", "C5"]  # the rejected ones were never sent
    assert accounts["C2"]["nm"] == "A name far"  # cut to the declared length 10
    assert accounts["C5"]["nm"] == "Another to"
    assert accounts["C1"]["nm"] == "Short" and accounts["C1"]["credit"] == "10.5"  # SQLite reads 10.5
    assert accounts["C5"]["credit"] == "5"  # declared decimal: converted, sent as text
    assert len(_posted(cimcloud_sandbox)) == 1  # one call of 3 records

    errors = h.mapsync("errors", "sheet.yaml", "--json", cwd=tmp_path, env=ENV)
    assert errors.returncode == 0, errors.stdout + errors.stderr
    messages = {e["key"]["customer_no"]: (e["field"], e["message"]) for e in json.loads(errors.stdout)}
    assert sorted(messages) == ["C3", "C4"]
    assert messages["C3"] == ("email", "field `email` is NULL but the destination column is NOT NULL")
    assert messages["C4"] == ("credit", "field `credit`: 123456 does not fit numeric(6,2)")


def test_over_long_value_without_truncate_is_rejected_naming_field(
    sqlite_database: Any, cimcloud_sandbox: Running, tmp_path: Path
) -> None:
    fields = "      nm: name\n      email: email\n      credit: credit\n"
    _world(sqlite_database(), cimcloud_sandbox, tmp_path, fields=fields)
    done = h.mapsync("seed", "sheet.yaml", "--json", cwd=tmp_path, env=ENV)
    (report,) = json.loads(done.stdout)
    assert report["counts"]["written"] == 1  # only C1 fits every declared column
    assert report["counts"]["rejected"] == 4
    messages = {s["key"]["customer_no"]: s["message"] for s in report["samples"]}
    assert messages["C2"].startswith("field `nm` length 26 > 10"), messages
    assert [r["ref_id"] for r in cimcloud_sandbox.sandbox.store.all("accounts")] == ["C1"]


def test_truncate_auto_without_a_declared_length_is_a_validate_error(
    sqlite_database: Any, cimcloud_sandbox: Running, tmp_path: Path
) -> None:
    columns = "        email: {type: string, required: true}\n"
    _world(sqlite_database(), cimcloud_sandbox, tmp_path, columns=columns)
    done = h.mapsync("validate", "sheet.yaml", cwd=tmp_path, env=ENV)
    assert done.returncode == 2, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert "nm" in text and "truncate" in text and "length" in text
    assert "Traceback" not in text
    assert cimcloud_sandbox.sandbox.store.requests() == []  # validate connects to nothing


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ("        nmx: {length: 10}\n", "did you mean `nm`"),
        ("        nm: {type: integer, length: 10}\n", "`length` is for a `string` column"),
        ("        credit: {type: decimal, scale: 2}\n", "`scale` needs `precision`"),
    ],
)
def test_bad_column_declarations_are_validate_errors(
    sqlite_database: Any, cimcloud_sandbox: Running, tmp_path: Path, columns: str, expected: str
) -> None:
    fields = "      nm: name\n      email: email\n      credit: credit\n"
    _world(sqlite_database(), cimcloud_sandbox, tmp_path, columns=columns, fields=fields)
    done = h.mapsync("validate", "sheet.yaml", cwd=tmp_path, env=ENV)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


OTHER_ENDS = """
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  shop: {{kind: rest, base_url: "http://127.0.0.1:9/api"}}
  portal: {{url: "sqlite:///portal.db"}}
syncs:
  accounts:
    from: {{connection: erp, table: customers}}
    to: {to}
    key: {{from: customer_no, to: ref_id}}
    fields:
      nm: {{from: name, truncate: auto}}
    changes: {{method: watermark, column: last_modified}}
    deletes: {{policy: ignore}}
"""


@pytest.mark.parametrize(
    ("to", "code", "expected"),
    [
        ("{connection: shop, resource: accounts}", 2, "syncs.accounts.fields.nm.truncate"),
        ("{connection: shop, resource: accounts, columns: {nm: {length: 40}}}", 0, "valid"),
        (
            "{connection: portal, table: accounts, columns: {nm: {length: 40}}}",
            2,
            "a SQL destination reads its columns from the catalog",
        ),
    ],
)
def test_generic_rest_and_sql_ends(tmp_path: Path, to: str, code: int, expected: str) -> None:
    """The same rules for a generic REST destination; `columns` on a SQL destination is refused."""
    (tmp_path / "erp.db").touch()
    (tmp_path / "sheet.yaml").write_text(OTHER_ENDS.format(to=to))
    done = h.mapsync("validate", "sheet.yaml", cwd=tmp_path)
    assert done.returncode == code, done.stdout + done.stderr
    assert expected in done.stdout + done.stderr
