"""`mapsync check` against real SQLite, PostgreSQL and MariaDB: a good sheet passes and changes
nothing; a missing table or column, a refused login and an unreachable host fail with clear lines
and never show the password."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from mapsync.checkup import mysql_missing
from mapsync.state.store import StateStore
from tests import helpers as h

PASSWORD = "pw-Zq81-not-shown"


def _sheet(tmp_path: Path, src: str, dst: str, table: str = "products", field: str = "nm") -> Path:
    path = tmp_path / "sheet.yaml"
    path.write_text(f"""
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: {table}}}
    key: {{from: sku, to: sku}}
    fields: {{{field}: descr}}
    changes: {{method: snapshot}}
    deletes: {{policy: hard}}
""")
    return path


def _tables(url: str) -> list[str]:
    eng = h.engine(url)
    try:
        return sorted(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def _pair(database: Callable[[], str]) -> tuple[str, str]:
    src, dst = database(), database()
    h.execute(src, "CREATE TABLE items (sku VARCHAR(10) PRIMARY KEY, descr VARCHAR(40))")
    h.execute(dst, "CREATE TABLE products (sku VARCHAR(10) PRIMARY KEY, nm VARCHAR(40))")
    return src, dst


def test_a_good_sheet_passes_and_changes_nothing(database: Callable[[], str], tmp_path: Path) -> None:
    src, dst = _pair(database)
    sheet = _sheet(tmp_path, src, dst)
    before = (_tables(src), _tables(dst))
    result = h.mapsync("check", str(sheet), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok    connection erp (") and "reachable" in line for line in lines)
    assert any(line.startswith("ok    sync items: destination (portal): products:") for line in lines)
    assert "all checks passed" in result.stdout
    assert "note  state store" in result.stdout and "not created yet" in result.stdout
    assert (_tables(src), _tables(dst)) == before
    assert not (tmp_path / ".mapsync").exists()
    as_json = h.mapsync("check", str(sheet), "--json", cwd=tmp_path)
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    privileges = [c for c in report["checks"] if c["subject"].endswith("destination (portal): privileges")]
    assert [c["status"] for c in privileges] == ["ok"]
    if h.dialect(dst) != "sqlite":
        assert privileges[0]["detail"] == "SELECT, INSERT, UPDATE, DELETE"


def test_missing_table_and_column_fail(database: Callable[[], str], tmp_path: Path) -> None:
    src, dst = _pair(database)
    result = h.mapsync("check", str(_sheet(tmp_path, src, dst, table="productz")), cwd=tmp_path)
    assert result.returncode == 1
    assert "FAIL  sync items: destination (portal): " in result.stdout
    assert "unknown table 'productz'" in result.stdout and "did you mean 'products'" in result.stdout
    assert "ok    sync items: source (erp): items" in result.stdout  # the other side still checked
    result = h.mapsync("check", str(_sheet(tmp_path, src, dst, field="name")), cwd=tmp_path)
    assert result.returncode == 1
    assert "has no column(s) 'name'" in result.stdout


def _broken(url: str, how: str, tmp_path: Path) -> str:
    parsed = sa.make_url(url)
    if h.dialect(url) == "sqlite":
        return f"sqlite:///{tmp_path / 'no-such-dir' / 'erp.db'}"
    if how == "password":
        user = "mapsync_nobody" if h.dialect(url) == "postgresql" else parsed.username
        return parsed.set(username=user, password="${DB_PASSWORD}").render_as_string(hide_password=False)
    return parsed.set(host="127.0.0.1", port=1, password="${DB_PASSWORD}").render_as_string(
        hide_password=False
    )


def test_refused_login_and_unreachable_host_fail_without_the_password(
    database: Callable[[], str], tmp_path: Path
) -> None:
    src, dst = _pair(database)
    for how in ("password", "host"):
        sheet = _sheet(tmp_path, _broken(src, how, tmp_path), dst)
        result = h.mapsync("check", str(sheet), cwd=tmp_path, env={"DB_PASSWORD": PASSWORD})
        text = result.stdout + result.stderr
        assert result.returncode == 1, text
        assert PASSWORD not in text
        (line,) = [x for x in result.stdout.splitlines() if x.startswith("FAIL  connection erp")]
        if h.dialect(src) == "sqlite":
            assert "does not exist" in line
        elif how == "password":
            assert "cannot connect" in line
            assert ("mapsync_nobody" in line) if h.dialect(src) == "postgresql" else ("Access denied" in line)
        else:
            assert "cannot connect" in line and ("refused" in line.lower() or "can't connect" in line.lower())
        assert "FAIL  sync items: source (erp): not checked: connection erp is not usable" in result.stdout
        assert "ok    sync items: destination (portal)" in result.stdout


def test_state_store_is_reported_not_created(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'erp.db'}"
    dst = f"sqlite:///{tmp_path / 'portal.db'}"
    h.execute(src, "CREATE TABLE items (sku TEXT PRIMARY KEY, descr TEXT)")
    h.execute(dst, "CREATE TABLE products (sku TEXT PRIMARY KEY, nm TEXT)")
    sheet = _sheet(tmp_path, src, dst)
    assert h.mapsync("seed", str(sheet), cwd=tmp_path).returncode == 0
    result = h.mapsync("check", str(sheet), "--json", cwd=tmp_path)
    (state,) = [c for c in json.loads(result.stdout)["checks"] if c["subject"].startswith("state store")]
    assert state["status"] == "ok" and state["detail"].startswith("schema v")


def test_mariadb_grants_are_read() -> None:
    grants = [
        "GRANT USAGE ON *.* TO `app`@`%`",
        "GRANT SELECT, INSERT ON `shop`.* TO `app`@`%`",
        "GRANT UPDATE (`nm`), DELETE ON `shop`.`products` TO `app`@`%`",
        "GRANT ALL PRIVILEGES ON `other`.* TO `app`@`%`",
    ]
    assert mysql_missing(grants, "shop", "products", ["SELECT", "INSERT", "UPDATE", "DELETE"]) == []
    assert mysql_missing(grants, "shop", "orders", ["SELECT", "INSERT", "UPDATE"]) == ["UPDATE"]
    assert mysql_missing(grants, "other", "x", ["DELETE"]) == []
    assert mysql_missing(grants, "third", "x", ["SELECT"]) == ["SELECT"]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[str]:
    """The CIMcloud sandbox (`mapsync sandbox cimcloud`) as a real process; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapsync", "sandbox", "cimcloud", "--port", str(port), "--budget", "20/3s"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/sandbox/healthcheck/canary", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "sandbox did not come up"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cimcloud_check_and_the_shared_budget(sandbox: str, tmp_path: Path) -> None:
    h.execute(f"sqlite:///{tmp_path / 'erp.db'}", "CREATE TABLE items (sku TEXT PRIMARY KEY, descr TEXT)")
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(f"""
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  shop:
    kind: cimcloud
    base_url: "{sandbox}"
    site: sandbox
    auth: {{type: token, auth_key: "${{KEY}}", username: sandbox, password: "${{PW}}"}}
    budget: ["20/3s"]
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, resource: product}}
    key: {{from: sku, to: sku}}
    fields: {{nm: descr}}
    changes: {{method: full}}
""")
    StateStore.open("sqlite:///.mapsync/state.db", tmp_path, create=True).close()
    good = h.mapsync("check", str(sheet), cwd=tmp_path, env={"KEY": "sandbox-key", "PW": "sandbox-password"})
    assert good.returncode == 0, good.stdout + good.stderr
    (line,) = [line for line in good.stdout.splitlines() if "connection shop (cimcloud)" in line]
    assert line.startswith("ok    connection shop (cimcloud): reachable, health: status Running,"), line
    assert "login accepted" in line and "{" not in line and "=" not in line  # text, not a dict repr
    (budget,) = [line for line in good.stdout.splitlines() if "connection shop: call budget" in line]
    assert "shared through the state store" in budget
    used = 20 - int(budget.split("call budget: ")[1].split("/")[0])
    assert 1 <= used <= 5  # the check's own calls (canary, token, healthcheck, validate) counted
    with sa.create_engine(f"sqlite:///{tmp_path / '.mapsync' / 'state.db'}").connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM mapsync_budget_calls")).scalar() == used
    bad = h.mapsync("check", str(sheet), cwd=tmp_path, env={"KEY": "sandbox-key", "PW": "wrong-pw-991"})
    assert bad.returncode == 1
    assert "FAIL  connection shop (cimcloud):" in bad.stdout and "401" in bad.stdout
    assert "wrong-pw-991" not in bad.stdout + bad.stderr and "sandbox-key" not in bad.stdout


def test_an_export_needs_its_write_back_columns_and_update_on_the_source(
    database: Callable[[], str], tmp_path: Path
) -> None:
    """`check` builds an export's capture: a write-back column missing from the source table is a
    FAIL naming it; the source's privileges include UPDATE (the flag is written back)."""
    src, dst = database(), database()
    h.execute(src, "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20), exported INT)")
    h.execute(dst, "CREATE TABLE so (order_no INT PRIMARY KEY, cust VARCHAR(20))")
    sheet = tmp_path / "sheet.yaml"
    text = f"""
version: 1
connections:
  portal: {{url: "{src}"}}
  erp: {{url: "{dst}"}}
syncs:
  orders:
    from: {{connection: portal, table: orders}}
    to: {{connection: erp, table: so}}
    key: {{from: id, to: order_no}}
    fields: {{cust: customer}}
    changes: {{method: export_flag, flag: exported, status: import_status}}
"""
    sheet.write_text(text)
    result = h.mapsync("check", str(sheet), "--json", cwd=tmp_path)
    report = json.loads(result.stdout)
    (export,) = [c for c in report["checks"] if c["subject"].endswith("source (portal): export")]
    assert export["status"] == "fail"
    assert "changes.status: the source table 'orders' has no column 'import_status'" in export["detail"]
    sheet.write_text(text.replace(", status: import_status", ""))
    result = h.mapsync("check", str(sheet), "--json", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert report["ok"] is True, report
    if h.dialect(src) != "sqlite":
        (privileges,) = [c for c in report["checks"] if c["subject"].endswith("source (portal): privileges")]
        assert privileges["detail"] == "SELECT, UPDATE"
