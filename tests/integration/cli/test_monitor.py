"""`mapsync monitor SHEET`: evaluates the monitors once, records and clears incidents (not with
`--dry-run`), exit 1 while anything fires and 0 when all is clear, a stable `--json`; `mapsync run`
raises the incident of a failed run at once; a sheet error is exit 2 and an unreachable state
store one line, exit 1, no traceback. (SQLite ends and store, in this process.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync.state.store import StateStore
from tests.helpers import mapsync

SHEET = """
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  shop: {url: "sqlite:///shop.db"}
state: {url: "sqlite:///state.db"}
monitors: {disabled: [no_success]}
syncs:
  items:
    from: {connection: erp, table: items}
    to: {connection: shop, table: items}
    key: {from: id, to: id}
    changes: {method: full}
    fields: {name: name}
"""


def _sql(tmp_path: Path, db: str, *statements: str) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / db}.db")
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def _open(tmp_path: Path) -> list[tuple[str, str | None, str]]:
    store = StateStore.open("sqlite:///state.db", tmp_path, create=False)
    try:
        return [(i.monitor, i.sync, i.failure_class) for i in store.incidents.open_incidents()]
    finally:
        store.close()


def test_a_failed_run_fires_at_once_and_clears_after_the_repair(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(SHEET)
    _sql(
        tmp_path,
        "erp",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO items VALUES (1, 'a')",
    )
    _sql(tmp_path, "shop", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    assert mapsync("seed", str(sheet), cwd=tmp_path).returncode == 0
    clear = mapsync("monitor", str(sheet), cwd=tmp_path)
    assert (clear.returncode, clear.stdout.splitlines()) == (0, ["sync items: all clear", "all clear"])

    _sql(tmp_path, "shop", "DROP TABLE items")
    failed = mapsync("run", str(sheet), cwd=tmp_path)
    assert failed.returncode != 0
    assert _open(tmp_path) == [("failed_run", "items", "config")]  # raised by `run` itself

    dry = mapsync("monitor", str(sheet), "--json", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 1, dry.stderr
    shown = json.loads(dry.stdout)
    assert shown["recorded"] is False and shown["firing"] is True
    assert [(r["monitor"], r["id"]) for r in shown["syncs"]["items"]] == [("failed_run", None)]

    firing = mapsync("monitor", str(sheet), "--json", cwd=tmp_path)
    assert firing.returncode == 1, firing.stderr
    data = json.loads(firing.stdout)
    assert sorted(data) == ["firing", "opened", "recorded", "resolved", "sent", "sheet", "syncs", "unknown"]
    (row,) = data["syncs"]["items"]
    assert (row["monitor"], row["severity"], row["failure_class"]) == ("failed_run", "critical", "config")
    assert row["since"] and row["runbook"] and "mapsync status" in row["runbook"]
    assert data["opened"] == 0  # `run` opened it already; this evaluation refreshed it
    text = mapsync("monitor", str(sheet), cwd=tmp_path)
    assert text.returncode == 1
    assert "sync items: 1 firing" in text.stdout and "CRITICAL failed_run since " in text.stdout
    assert "runbook: " in text.stdout and "1 incident(s) firing" in text.stdout

    _sql(tmp_path, "shop", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    assert mapsync("run", str(sheet), cwd=tmp_path).returncode == 0
    assert _open(tmp_path) == []  # the success cleared it at once
    again = mapsync("monitor", str(sheet), "--json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["syncs"] == {"items": []}


@pytest.mark.slow  # ~4 s: the store's retries of an unreachable server
def test_sheet_errors_are_exit_2_and_an_unreachable_store_is_one_line_exit_1(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(SHEET)
    StateStore.open("sqlite:///state.db", tmp_path, create=True).close()
    unknown = mapsync("monitor", str(sheet), "--sync", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown sync 'nope'" in unknown.stderr
    (tmp_path / "bad.yaml").write_text(
        SHEET.replace("monitors: {disabled: [no_success]}", "monitors: {lag: soon}")
    )
    bad = mapsync("monitor", str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "lag" in bad.stderr
    away = tmp_path / "away.yaml"
    away.write_text(
        SHEET.replace(
            'state: {url: "sqlite:///state.db"}',
            'state: {url: "postgresql+psycopg://mapsync:s3cretpw@127.0.0.1:1/state", '
            "timeouts: {connect: 1s}}",
        )
    )
    down = mapsync("monitor", str(away), "--json", cwd=tmp_path)
    assert down.returncode == 1, (down.returncode, down.stderr)
    assert "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1
    assert "s3cretpw" not in down.stderr + down.stdout and down.stdout == ""
