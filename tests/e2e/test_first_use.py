"""A new user's path (README: demo, init, validate, check, the views), as real processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapsync import keys
from tests.helpers import ROOT, mapsync


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's folder after its runs: 8 open record errors on customers."""
    folder = tmp_path_factory.mktemp("first_use") / "demo"
    result = mapsync("demo", "--dir", str(folder), cwd=folder.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder / "mapsync.yaml"


def _json(*args: str, cwd: Path) -> Any:
    result = mapsync(*args, "--json", cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------- `errors` says what it leaves out


def test_errors_says_how_many_are_not_shown(demo: Path) -> None:
    result = mapsync("errors", str(demo), "--limit", "3", cwd=demo.parent)
    assert result.returncode == 1
    assert "… 5 more not shown (8 in all)" in result.stdout
    assert f"mapsync errors {demo} --limit 8" in result.stdout
    everything = mapsync("errors", str(demo), cwd=demo.parent)
    assert "more not shown" not in everything.stdout + everything.stderr
    as_json = mapsync("errors", str(demo), "--limit", "3", "--json", cwd=demo.parent)
    assert len(json.loads(as_json.stdout)) == 3  # stdout stays one JSON document
    assert "… 5 more not shown" in as_json.stderr


# ---------------------------------------------------------------- `state show` has the audit


def test_state_show_text_has_the_cursor_audit(demo: Path) -> None:
    result = mapsync("state", "show", str(demo), "--sync", "customers", cwd=demo.parent)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "cursor change" in line]
    assert lines, result.stdout
    assert any("watermark:" in line and "→" in line for line in lines)
    assert '{"datetime"' not in result.stdout and '{"object"' not in result.stdout  # not the stored tags


# ---------------------------------------------------------------- JSON: data, never JSON text in JSON


def test_json_outputs_carry_keys_as_objects_and_no_json_text(demo: Path) -> None:
    errors = _json("errors", str(demo), cwd=demo.parent)
    assert {"customer_no": "C10101"} in [e["key"] for e in errors]
    assert all(not isinstance(e["version"], str) or not e["version"].startswith("{") for e in errors)
    (status,) = _json("status", str(demo), "--sync", "customers", cwd=demo.parent)
    assert status["cursors"]["seed"]["status"] == "done"
    (shown,) = _json("state", "show", str(demo), "--sync", "customers", cwd=demo.parent)
    assert shown["cursors"]["seed"]["status"] == "done"
    positions = [a["new_value"] for a in shown["audit"] if a["name"] == "position" and a["new_value"]]
    assert positions and isinstance(positions[0], dict)
    unmapped = _json("unmapped", str(demo), cwd=demo.parent)
    assert all(set(u["sample_key"]) == {"customer_no"} for u in unmapped)


def test_retry_takes_a_key_in_the_command_line_form(demo: Path) -> None:
    (report,) = _json("retry", str(demo), "--sync", "customers", "--key", "C10101", cwd=demo.parent)
    assert report["counts"]["read"] == 1
    assert [s["key"] for s in report["samples"]] == [{"customer_no": "C10101"}]
    (same,) = _json("retry", str(demo), "-s", "customers", "--key", "customer_no=C10101", cwd=demo.parent)
    assert same["counts"]["read"] == 1
    text = mapsync("retry", str(demo), "--sync", "customers", "--key", "C10101", cwd=demo.parent)
    assert "rejected key C10101 field country" in text.stdout
    bad = mapsync("retry", str(demo), "--key", "C10101", cwd=demo.parent)
    assert bad.returncode == 2 and "--key goes with --sync" in bad.stderr


def test_key_forms() -> None:
    assert keys.as_json(("C1",), ["customer_no"]) == {"customer_no": "C1"}
    assert keys.as_json((50121, 2), ["order_no", "line_no"]) == {"order_no": 50121, "line_no": 2}
    assert keys.to_arg((50121, 2), ["order_no", "line_no"]) == "order_no=50121,line_no=2"
    assert keys.parse_arg("line_no=2,order_no=50121", ["order_no", "line_no"]) == ("50121", "2")
    assert keys.to_arg(("a,b=c",), ["k"]) == "a,b=c"  # one column: the value as is
    assert keys.to_arg(("a,b", "x=y\\"), ["k", "l"]) == "k=a\\,b,l=x\\=y\\\\"
    with pytest.raises(ValueError, match="missing line_no"):
        keys.parse_arg("order_no=1", ["order_no", "line_no"])
    with pytest.raises(ValueError, match="unknown key column 'line'"):
        keys.parse_arg("order_no=1,line=2", ["order_no", "line_no"])


@given(st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=3))
def test_command_line_key_round_trips(values: list[str]) -> None:
    columns = [f"c{i}" for i in range(len(values))]
    key = tuple(values)
    assert keys.parse_arg(keys.to_arg(key, columns), columns) == key
    assert keys.matches(key, keys.parse_arg(keys.to_arg(key, columns), columns))
    if len(values) == 1:  # a one-column value that looks like `col=…` survives too
        assert keys.parse_arg(keys.to_arg(("c0=x,y",), ["c0"]), ["c0"]) == ("c0=x,y",)


# ---------------------------------------------------------------- `deletes:` only where deletes come


def test_init_example_validates_and_its_deletes_can_happen(tmp_path: Path) -> None:
    assert mapsync("init", "mapsync.yaml", cwd=tmp_path).returncode == 0
    text = (tmp_path / "mapsync.yaml").read_text()
    assert "changes: {method: snapshot}" in text  # the orders' `deletes: {policy: hard}` is true
    done = mapsync("validate", "mapsync.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "full.yaml").write_text(
        text.replace("changes: {method: snapshot}", "changes: {method: full}")
    )
    refused = mapsync("validate", "full.yaml", cwd=tmp_path)
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert "syncs.orders.deletes.policy: `hard` would never apply" in message, message
    assert "`changes: {method: full}` never sends deletes" in message
    assert "The methods that do: inbox, log, queue, snapshot, watermark" in message
    assert "Traceback" not in refused.stderr


# ---------------------------------------------------------------- `check --ddl`

DDL_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: customer_no, to: ref_id}}
    changes: {{method: snapshot}}
    deletes: {{policy: disable, field: active, value: 0}}
    fields:
      nm: {{from: name, truncate: 150}}
      email: email
      country: {{from: country, country: iso3}}
      status: {{from: status, map: {{A: 1, H: 1, I: 0}}}}
      credit_limit: {{from: credit_limit, cast: decimal, scale: 2}}
      since: {{from: since, cast: date, required: true}}
  orders:
    from: {{connection: erp, table: orders}}
    to: {{connection: portal, table: orders}}
    key: {{from: order_no, to: order_no}}
    changes: {{method: full}}
    fields: {{account_ref: customer_no}}
    children:
      lines:
        from: {{connection: erp, table: order_lines}}
        to: {{connection: portal, table: order_lines}}
        parent: {{from: order_no, to: order_no}}
        key: {{from: [order_no, line_no], to: [order_no, line_no]}}
        fields: {{sku: item_no, qty: {{from: qty, cast: int}}}}
"""


def test_check_ddl_suggests_tables_that_the_database_takes(
    tmp_path: Path, sqlite_database: Any, database: Any
) -> None:
    from tests import helpers as h

    src, dst = sqlite_database(), database()
    h.execute(
        src,
        "CREATE TABLE customers (customer_no VARCHAR(12) PRIMARY KEY, name TEXT, email VARCHAR(200), "
        "country TEXT, status CHAR(1), credit_limit NUMERIC(12, 2), since TEXT)",
        "CREATE TABLE orders (order_no INTEGER PRIMARY KEY, customer_no VARCHAR(12))",
        "CREATE TABLE order_lines (order_no INTEGER, line_no INTEGER, item_no VARCHAR(20), qty TEXT, "
        "PRIMARY KEY (order_no, line_no))",
    )
    (tmp_path / "sheet.yaml").write_text(DDL_SHEET.format(src=src, dst=dst))
    first = mapsync("check", "sheet.yaml", cwd=tmp_path)
    assert first.returncode == 1
    assert "unknown table 'accounts'" in first.stdout and "--ddl" in first.stdout
    found = mapsync("check", "sheet.yaml", "--ddl", "--json", cwd=tmp_path)
    suggested = {s["table"]: s["statement"] for s in json.loads(found.stdout)["ddl"]}
    assert sorted(suggested) == ["accounts", "order_lines", "orders"]
    accounts = suggested["accounts"]
    for text in ("VARCHAR(150)", "CHAR(3)", "NUMERIC(18, 2)", "PRIMARY KEY (ref_id)", "since DATE NOT NULL"):
        assert text in accounts.replace("`", "").replace('"', ""), accounts
    assert "VARCHAR(12)" in accounts  # the key copies the source column's type
    assert "PRIMARY KEY (order_no, line_no)" in suggested["order_lines"].replace("`", "")
    h.execute(dst, *(statement.rstrip(";") for statement in suggested.values()))
    again = mapsync("check", "sheet.yaml", "--ddl", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "every SQL destination table exists" in again.stdout


def test_the_docs_stand_alone() -> None:
    """No doc points at a file outside the repository; the budget is said to be shared."""
    root = ROOT
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        for outside in ("/work/", "/shared/", "](/", "](../"):
            assert outside not in text, f"{doc.name}: {outside}"
    rest = (root / "docs" / "rest.md").read_text(encoding="utf-8")
    assert "shared within one process" not in rest and "every sync, process and worker" in rest
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "Destination tables must exist" in readme and "check SHEET --ddl" in readme


# ---------------------------------------------------------------- deletes: what was found, what was done


@pytest.mark.parametrize(
    ("deletes", "outcome"),
    [
        ("policy: ignore", {"ignored": 2, "disabled": 0, "deleted": 0}),
        ("policy: disable, field: qty, value: -1", {"ignored": 0, "disabled": 2, "deleted": 0}),
        ("policy: hard", {"ignored": 0, "disabled": 0, "deleted": 2}),
    ],
)
def test_run_deletes_reports_keys_gone_and_what_the_policy_did(
    tmp_path: Path, sqlite_database: Any, deletes: str, outcome: dict[str, int]
) -> None:
    from tests import helpers as h
    from tests.integration.capture.test_snapshot import WATERMARK, Sync

    s = Sync(sqlite_database(), sqlite_database(), tmp_path, changes=WATERMARK, deletes=deletes)
    try:
        s.add([(i, f"n{i}", i) for i in range(1, 11)])
        assert s.engine("seed")["written"] == 10
        h.execute(s.src, "DELETE FROM items WHERE id IN (2, 5)")
    finally:
        s.close()
    policy = deletes.split(",")[0].split(": ")[1]
    code, (report,) = s.cli("--deletes")
    assert code == 0, report
    assert report["gone_at_source"] == {"found": 2, "policy": policy, **outcome}
    assert report["counts"]["disabled"] == outcome["disabled"]
    assert report["counts"]["written"] == 0  # a disabled row is not counted as written
    assert report["counts"]["deleted"] == outcome["deleted"]
    if policy == "ignore":  # ignored keys stay live in the ledger: the next check finds them again
        text = h.mapsync("run", "sheet.yaml", "--deletes", cwd=tmp_path)
        assert "gone at the source: 2 key(s); policy `ignore`: 2 left as they are" in text.stdout, text.stdout
        assert "written 0, skipped 0 unchanged" in text.stdout  # ignored deletes are not "unchanged"
    if policy == "disable":
        assert sorted(h.query(s.dst, "SELECT id FROM items WHERE qty = -1")) == [(2,), (5,)]


# ---------------------------------------------------------------- messages a new user meets


def test_a_wrong_type_in_a_union_is_one_plain_message(tmp_path: Path) -> None:
    assert mapsync("init", "s.yaml", cwd=tmp_path).returncode == 0
    text = (tmp_path / "s.yaml").read_text()
    (tmp_path / "s.yaml").write_text(text.replace("truncate: 150", "truncate: abc", 1))
    done = mapsync("validate", "s.yaml", "--json", cwd=tmp_path)
    (problem,) = json.loads(done.stdout)["problems"]
    assert problem["message"] == "`truncate` must be a whole number or `auto`, got 'abc'", problem
    assert (
        problem["path"].endswith(".truncate")
        and problem["line"] == text[: text.index("truncate: 150")].count("\n") + 1
    )


@pytest.mark.parametrize(
    ("text", "where", "hint"),
    [
        ("version: 1\nsyncs:\n  c:\n    from: x\n   to: y\n", ":5:4:", "indented differently"),
        (
            "version: 1\nsyncs:\n  c:\n    from: x\n      to: y\n",
            ":5:9:",
            "indented deeper than the key above",
        ),
        ("version: 1\nsyncs:\n  c:\n    from: {connection: erp\n    to: y\n", ":5:7:", "is not closed"),
    ],
    ids=["dedented", "indented", "unclosed"],
)
def test_yaml_mistakes_get_a_plain_hint(tmp_path: Path, text: str, where: str, hint: str) -> None:
    from mapsync import errors
    from mapsync.sheet import loader

    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(errors.ConfigError) as caught:
        loader.load(tmp_path / "s.yaml", env={})
    message = str(caught.value)
    assert where in message and "invalid YAML" in message and "Hint: " in message and hint in message


def test_check_names_the_sheet_line_of_a_missing_column(demo: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "mapsync.yaml"
    text = demo.read_text().replace(str(demo.parent), str(tmp_path))
    text = text.replace("nm:      {from: name,", "nm:      {from: nmae,").replace(
        "email:   email", "emial:   email"
    )
    sheet.write_text(text)
    for name in ("erp.db", "portal.db"):
        (tmp_path / name).write_bytes((demo.parent / name).read_bytes())
    done = mapsync("check", str(sheet), cwd=tmp_path)
    assert done.returncode == 1
    line = {k: text[: text.index(k)].count("\n") + 1 for k in ("from: nmae", "emial:")}
    assert f"named at {sheet}:{line['from: nmae']}: syncs.customers.fields.nm.from" in done.stdout
    assert f"named at {sheet}:{line['emial:']}: syncs.customers.fields.emial" in done.stdout


# ---------------------------------------------------------------- the demo and `unmapped`


def test_demo_report_speaks_for_itself(tmp_path: Path) -> None:
    done = mapsync("demo", "--dir", str(tmp_path / "d"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no log lines in the middle of the report
    out = done.stdout
    assert "Values no rule could place" in out and "customers.country (country): 'Germny'" in out
    assert "rejected customers C10013 country" in out and "['C10013']" not in out  # keys as typed
    where = out.index("Where to look next")
    command = out.index("The `mapsync` command")
    assert where < command < out.index("mapsync status ")


def test_unmapped_prints_one_pasteable_snippet_per_field(demo: Path) -> None:
    import yaml

    done = mapsync("unmapped", str(demo), cwd=demo.parent)
    lines = done.stdout.splitlines()
    at = lines.index("  customers.country (country):")
    snippet = lines[at + 1].strip()
    assert snippet == 'map: {"Untied States": "United States", "Germny": "Germany"}, on_unknown: keep'
    assert yaml.safe_load("{" + snippet + "}")["on_unknown"] == "keep"  # it pastes as YAML
    assert lines[at + 2].strip() == '# no sure mapping for "Europe", "N/A": add them to the map yourself'
    assert sum(1 for line in lines if line.startswith("  customers.country")) == 1
    assert "..." not in done.stdout


def test_far_fetched_near_misses_are_no_ready_mapping() -> None:
    from mapsync.web.read_unmapped import ready, suggest

    assert ready("country", "Narnia", None) is None and "Armenia" not in suggest("country", "Narnia", None)
    assert ready("country", "Germny", None) == "Germany"
    assert ready("country", "Frnace", None) is None  # close, but not sure enough to write for you


# ---------------------------------------------------------------- stderr stays quiet on a refusal


def test_a_postgresql_refusal_leaves_stderr_quiet(tmp_path: Path, pg_database: Any) -> None:
    from tests import helpers as h

    dst, src = pg_database(), f"sqlite:///{tmp_path / 'src.db'}"
    h.execute(
        dst,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER CHECK (qty > 0), note TEXT)",
        # added to a table with old rows: SQLAlchemy's reflection of it used to warn
        "ALTER TABLE items ADD CONSTRAINT note_short CHECK (length(note) < 100) NOT VALID",
    )
    h.execute(src, "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER)")
    h.execute(src, "INSERT INTO items VALUES (:id, :qty)", params=[{"id": i, "qty": i} for i in range(1, 6)])
    (tmp_path / "sheet.yaml").write_text(f"""
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    fields: {{qty: qty}}
    changes: {{method: full}}
""")
    assert mapsync("seed", "sheet.yaml", cwd=tmp_path).returncode == 0
    h.execute(src, "UPDATE items SET qty = qty + 10", "UPDATE items SET qty = -1 WHERE id = 3")
    done = mapsync("run", "sheet.yaml", cwd=tmp_path)  # an upsert of 5 rows, one refused
    assert done.returncode == 1
    assert "rejected key 3: destination refused the record" in done.stdout
    assert done.stderr == "", done.stderr  # no driver echo, no SQLAlchemy warning


def test_source_text_in_keys_and_messages_is_printed_as_it_is(tmp_path: Path) -> None:
    """Keys and messages quote source data: `[/x]` in them is text, not rich markup (it used to
    end `run` and `errors` with a MarkupError traceback)."""
    from tests import helpers as h

    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    h.execute(dst, "CREATE TABLE items (code TEXT PRIMARY KEY, qty INTEGER CHECK (qty > 0))")
    h.execute(src, "CREATE TABLE items (code TEXT PRIMARY KEY, qty INTEGER)")
    h.execute(src, "INSERT INTO items VALUES ('ok', 1), ('k[/x]', -1), ('[bold]b', -2)")
    (tmp_path / "sheet.yaml").write_text(f"""
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: code, to: code}}
    fields: {{qty: qty}}
    changes: {{method: full}}
""")
    done = mapsync("seed", "sheet.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "rejected key k[/x]" in done.stdout and "rejected key [bold]b" in done.stdout, done.stdout
    listed = mapsync("errors", "sheet.yaml", cwd=tmp_path)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr, listed.stderr
    assert "k[/x]" in listed.stdout and "[bold]b" in listed.stdout, listed.stdout
