"""`mapsync demo` end to end, as a real process: the outcomes land in the portal and the state."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pycountry
import pytest

from tests.helpers import mapsync

UNPLACEABLE = ("Untied States", "Germny", "Europe", "N/A")


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("demo") / "run"
    result = mapsync("demo", "--dir", str(folder), cwd=folder.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, result.stdout


def test_demo_prints_what_happened(demo: tuple[Path, str]) -> None:
    folder, out = demo
    for text in ("Seed", "Incremental run", "rejected", "Untied States", "mapsync status", "mapsync errors"):
        assert text in out
    assert str(folder / "portal.db") in out


def test_customers_translated_and_rejected(demo: tuple[Path, str]) -> None:
    folder = demo[0]
    erp, portal, state = folder / "erp.db", folder / "portal.db", folder / ".mapsync" / "state.db"
    source = dict(rows(erp, "SELECT customer_no, country FROM customers"))
    dest = dict(rows(portal, "SELECT ref_id, country FROM accounts"))
    errors = {
        json.loads(key)[0]: (field, rule, message)
        for key, field, rule, message in rows(
            state,
            "SELECT key, field, rule, message FROM mapsync_record_errors "
            "WHERE sync = 'customers' AND resolved_at IS NULL",
        )
    }
    assert len(source) == 201  # 200 seeded + 1 added before the incremental run
    # every customer is either in the portal or an open record error, never both, never neither
    assert set(dest) | set(errors) == set(source)
    assert not set(dest) & set(errors)
    assert len(dest) == 201 - len(errors)

    # every country arriving is NULL or an ISO 3166 alpha-3 code
    assert all(c is None or pycountry.countries.get(alpha_3=c) is not None for c in dest.values())
    for spelling, code in (("U.S.A.", "USA"), ("US", "USA"), ("Deutschland", "DEU"), ("UK", "GBR")):
        keys = [k for k, v in source.items() if v == spelling]
        assert keys, spelling
        assert {dest[k] for k in keys if k in dest} == {code}

    # spellings nobody can place are record errors naming the field and the value, not guesses
    bad = [k for k, v in source.items() if v in UNPLACEABLE]
    assert len(bad) >= 4
    for key in bad:
        field, rule, message = errors[key]
        assert (field, rule) == ("country", "country")
        assert repr(source[key]) in message

    # the unmapped status code and the overlong e-mail are rejections too
    assert {k for k, (f, r, _) in errors.items() if r == "map"} == {
        k for (k,) in rows(erp, "SELECT customer_no FROM customers WHERE status = 'X'")
    }
    assert any(f == "email" and r == "length" for f, r, _ in errors.values())

    # names longer than VARCHAR(150) are cut to 150
    long = [k for (k,) in rows(erp, "SELECT customer_no FROM customers WHERE length(name) > 150")]
    assert long
    assert {n for (n,) in rows(portal, "SELECT length(nm) FROM accounts WHERE length(nm) >= 150")} == {150}


def test_incremental_changes_applied(demo: tuple[Path, str]) -> None:
    folder = demo[0]
    portal, state = folder / "portal.db", folder / ".mapsync" / "state.db"
    assert rows(portal, "SELECT nm, country FROM accounts WHERE ref_id = 'C10201'") == [
        ("Nordwind Handels GmbH", "DEU")
    ]
    assert rows(portal, "SELECT nm FROM accounts WHERE ref_id = 'C10002'") == [
        ("Meridian Foods International Ltd",)
    ]
    # a rejected customer fixed at the source is delivered and its error resolved
    assert rows(portal, "SELECT country FROM accounts WHERE ref_id = 'C10013'") == [("USA",)]
    resolved = rows(
        state,
        "SELECT resolved_at FROM mapsync_record_errors WHERE sync = 'customers' AND key = ?",
        '["C10013"]',
    )
    assert len(resolved) == 1 and resolved[0][0] is not None
    assert rows(portal, "SELECT price FROM products WHERE sku = 'P-1007'") == [(19.99,)]
    # the changed rows shared one timestamp; all of them were read by the first incremental run
    runs = rows(state, "SELECT sync, kind, read, written, skipped FROM mapsync_runs ORDER BY id")
    first_run = {sync: (read, written, skipped) for sync, kind, read, written, skipped in runs[4:8]}
    # then step 5: the two checks before and after the hand edits, the repair, the two checks after it
    expected = ["seed"] * 4 + ["run"] * 8 + ["reconcile"] * 4 + ["repair"] + ["reconcile"] * 2
    assert [kind for _, kind, *_ in runs] == expected
    assert first_run["customers"] == (4, 3, 1)  # new, renamed, fixed; one touched but unchanged
    assert first_run["orders"] == (1, 1, 0)
    assert first_run["invoices"][1] == 1  # full re-read: only the part-paid invoice is written


def test_order_lines_travel_with_their_order(demo: tuple[Path, str]) -> None:
    folder = demo[0]
    erp, portal = folder / "erp.db", folder / "portal.db"
    source = rows(erp, "SELECT order_no, line_no, item_no, qty FROM order_lines ORDER BY 1, 2")
    dest = rows(portal, "SELECT order_no, line_no, sku, qty FROM order_lines ORDER BY 1, 2")
    assert dest == source
    assert len(rows(portal, "SELECT order_no FROM orders")) == 121
    assert rows(portal, "SELECT account_ref, status FROM orders WHERE order_no = 50121") == [
        ("C10201", "open")
    ]
    assert [r[1] for r in dest if r[0] == 50121] == [1, 2, 3]
    orphans = rows(
        portal, "SELECT COUNT(*) FROM order_lines WHERE order_no NOT IN (SELECT order_no FROM orders)"
    )
    assert orphans == [(0,)]


def test_demo_reruns_from_scratch(demo: tuple[Path, str]) -> None:
    folder = demo[0]
    before = rows(folder / "portal.db", "SELECT COUNT(*) FROM accounts")
    again = mapsync("demo", "--dir", str(folder), cwd=folder.parent)
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows(folder / "portal.db", "SELECT COUNT(*) FROM accounts") == before
    assert len(rows(folder / ".mapsync" / "state.db", "SELECT id FROM mapsync_runs")) == 12 + 7  # + step 5
    # the CLI finds the state next to the sheet, from another working directory
    status = mapsync("status", str(folder / "mapsync.yaml"), "--json", cwd=Path("/"))
    assert status.returncode == 0, status.stderr
    assert {s["sync"] for s in json.loads(status.stdout)} == {"customers", "products", "orders", "invoices"}


def test_readme_sheet_example_is_valid(tmp_path: Path) -> None:
    from mapsync.sheet import checks, loader

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sheet.yaml").write_text(example, encoding="utf-8")
    loaded = loader.load(tmp_path / "sheet.yaml", env={"ERP_PASSWORD": "pw1", "PORTAL_PASSWORD": "pw2"})
    assert list(loaded.sheet.syncs) == ["customers", "orders"]
    assert checks.run_order(loaded.sheet) == ["customers", "orders"]


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """Issue 9 item 19: `demo --dir X` never replaces someone's own sheet and state store."""
    folder = tmp_path / "mine"
    (folder / ".mapsync").mkdir(parents=True)
    (folder / "mapsync.yaml").write_text("version: 1  # my own sheet\n")
    (folder / ".mapsync" / "state.db").write_bytes(b"my state")
    result = mapsync("demo", "--dir", str(folder), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    text = " ".join((result.stdout + result.stderr).split())
    assert "not empty and was not made by `mapsync demo`" in text and ".mapsync-demo" in text
    assert "Traceback" not in text
    assert (folder / "mapsync.yaml").read_text() == "version: 1  # my own sheet\n"
    assert (folder / ".mapsync" / "state.db").read_bytes() == b"my state"
    assert sorted(p.name for p in folder.iterdir()) == [".mapsync", "mapsync.yaml"]
    # a file given as the folder is refused too
    (tmp_path / "file").write_text("x")
    result = mapsync("demo", "--dir", str(tmp_path / "file"), cwd=tmp_path)
    assert result.returncode == 2 and "not a folder" in result.stdout + result.stderr


def test_demo_takes_an_empty_folder_and_its_own(tmp_path: Path, demo: tuple[Path, str]) -> None:
    from mapsync import demo as demo_mod

    empty = tmp_path / "empty"
    empty.mkdir()
    demo_mod._claim(empty)  # an empty folder is taken and marked
    assert (empty / ".mapsync-demo").is_file()
    assert (demo[0] / ".mapsync-demo").is_file()  # the demo marks what it builds (rerun above works)


def test_demo_reconciles_finds_two_hand_edits_and_repairs_them(demo: tuple[Path, str]) -> None:
    """Step 5: both checks clean, a raised balance and a deleted invoice in the portal found by
    the open-AR check (the two customers) and the drift check (the two invoices), repaired."""
    folder, out = demo
    step = out[out.index("5. Reconcile") : out.index("Countries as the portal")]
    assert step.count("ok — 51 groups compared, 51 matched") == 2  # before the edits, after the repair
    assert "differs — 51 groups compared, 49 matched; 1 mismatched, 1 missing dest" in step
    assert "-100.00" in step and "missing at the destination" in step
    assert "1 changed, 1 missing" in step
    assert (
        "changed in the destination: INV-70001" in step and "missing from the destination: INV-70002" in step
    )
    assert "(after the repair): ok" in step
    # the portal holds the ERP's open invoices again, to the cent
    erp = dict(
        rows(folder / "erp.db", "SELECT invoice_no, CAST(balance AS TEXT) FROM invoices WHERE open = 1")
    )
    portal = dict(rows(folder / "portal.db", "SELECT invoice_no, CAST(balance AS TEXT) FROM invoices"))
    assert portal == erp
    state = folder / ".mapsync" / "state.db"
    kinds = rows(
        state, "SELECT kind, status FROM mapsync_runs WHERE kind IN ('reconcile', 'repair') ORDER BY id"
    )
    assert ("repair", "success") in kinds and ("reconcile", "partial") in kinds
    stored = rows(state, 'SELECT "check", status FROM mapsync_reconcile_results ORDER BY id')
    assert stored[-2:] == [("open_ar", "repaired"), ("invoice_rows", "ok")]
