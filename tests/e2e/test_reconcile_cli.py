"""`mapsync reconcile` as a real process on SQLite: a clean sheet exits 0, planted differences
exit 1 with both values and the difference printed (and in `--json`), `--repair` fixes them and
says so, mistakes exit 2 with one line and no traceback, and the check's runs and results are in
the state store for `mapsync runs` and the monitor."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mapsync.state.store import StateStore
from tests import cli_runner
from tests import helpers as h

SHEET = """
version: 1
state: {{url: "sqlite:///state.db"}}
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: id, to: ref}}
    fields:
      nm: name
      balance: balance
    changes: {{method: snapshot}}
    deletes: {{policy: hard, max_delete_ratio: 1}}
reconcile:
  balances:
    sync: customers
    source: {{connection: erp, table: customers, group: id, sum: balance}}
    dest: {{connection: portal, table: accounts, group: ref, sum: balance}}
    tolerance: {{absolute: "0.01"}}
  rows:
    drift: customers
"""


def mapsync(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "mapsync", *args],
        cwd=folder,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src, dst = f"sqlite:///{tmp_path / 'erp.db'}", f"sqlite:///{tmp_path / 'portal.db'}"
    h.execute(src, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), balance NUMERIC(12,2))")
    h.execute(
        src,
        "INSERT INTO customers VALUES (:id, :name, :balance)",
        params=[{"id": i, "name": f"c{i}", "balance": f"{i}00.25"} for i in range(1, 31)],
    )
    h.execute(dst, "CREATE TABLE accounts (ref INTEGER PRIMARY KEY, nm VARCHAR(50), balance DECIMAL(12,2))")
    (tmp_path / "sheet.yaml").write_text(SHEET.format(src=src, dst=dst))
    seeded = mapsync(tmp_path, "seed", "sheet.yaml")
    assert seeded.returncode == 0, seeded.stderr
    return tmp_path


def test_clean_then_planted_differences_then_repaired(folder: Path) -> None:
    clean = mapsync(folder, "reconcile", "sheet.yaml")
    assert clean.returncode == 0, clean.stderr
    assert "balances (business, sync customers): ok — 30 groups compared, 30 matched" in clean.stdout
    assert "rows (drift, sync customers): ok" in clean.stdout

    dst = f"sqlite:///{folder / 'portal.db'}"
    h.execute(dst, "UPDATE accounts SET balance = 700.00 WHERE ref = 7")
    h.execute(dst, "UPDATE accounts SET balance = 800.26 WHERE ref = 8")  # within the tolerance
    h.execute(dst, "INSERT INTO accounts VALUES (99, 'by hand', 5.00)")
    found = mapsync(folder, "reconcile", "sheet.yaml", "--sync", "customers")
    assert found.returncode == 1, found.stderr
    assert "balances (business, sync customers): differs" in found.stdout
    line = next(x for x in found.stdout.splitlines() if x.strip().startswith("│ 7 "))
    assert "700.25" in line and "700" in line and "0.25" in line and "differs" in line
    assert "99" in found.stdout and "missing at the source" in found.stdout
    assert "extra in the destination: 99 (not delivered by mapsync)" in found.stdout
    assert "changed in the destination: 7" in found.stdout  # 7 and 8 were edited by hand
    assert "checks found differences" in found.stderr and "Traceback" not in found.stderr

    as_json = mapsync(folder, "reconcile", "sheet.yaml", "--check", "balances", "--json")
    assert as_json.returncode == 1
    (data,) = json.loads(as_json.stdout)
    assert data["status"] == "differs" and data["counts"]["mismatched"] == 1
    assert data["mismatched"][0] == {"group": ["7"], "source": "700.25", "dest": "700", "difference": "0.25"}

    fixed = mapsync(folder, "reconcile", "sheet.yaml", "--sync", "customers", "--repair")
    assert fixed.returncode == 1, fixed.stderr  # the hand-made row 99 is not mapsync's: left
    assert "rows (drift, sync customers) (before the repair): differs" in fixed.stdout
    assert "1 extra row(s) not ours left" in fixed.stdout
    assert "balances (business, sync customers) (after the repair): differs" in fixed.stdout
    assert h.query(dst, "SELECT ref, balance FROM accounts WHERE ref IN (7, 8) ORDER BY ref") == [
        (7, 700.25),
        (8, 800.25),
    ]
    h.execute(dst, "DELETE FROM accounts WHERE ref = 99")
    assert mapsync(folder, "reconcile", "sheet.yaml").returncode == 0


def test_mistakes_exit_2_with_one_line_and_help_names_every_option(folder: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPSYNC_")}
    for args, message in (
        (("--check", "nope"), "unknown check 'nope'"),
        (("--sync", "nope"), "unknown sync 'nope'"),
        (("--backfill",), "--backfill goes with --sync"),
        (("--force-deletes",), "--force-deletes goes with --repair"),
        (("--max-keys", "5"), "--max-keys goes with --repair"),
    ):
        bad = cli_runner.run(["reconcile", "sheet.yaml", *args], folder, env)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    shown = cli_runner.run(["reconcile", "--help"], folder, env)
    assert shown.returncode == 0
    for option in ("--check", "--sync", "--repair", "--force-deletes", "--max-keys", "--backfill", "--json"):
        assert option in shown.stdout


def test_repair_of_a_busy_sync_still_shows_the_check(folder: Path) -> None:
    """A LeaseHeld from the repair (the sync runs elsewhere) does not swallow the check's result."""
    h.execute(f"sqlite:///{folder / 'portal.db'}", "UPDATE accounts SET nm = 'edited' WHERE ref = 4")
    store = StateStore.open("sqlite:///state.db", folder, create=False)
    held = store.leases.acquire("customers", dt.timedelta(minutes=5))
    try:
        busy = mapsync(folder, "reconcile", "sheet.yaml", "--check", "rows", "--repair")
    finally:
        store.leases.release(held)
        store.close()
    assert busy.returncode == 1, busy.stderr
    assert "rows (drift, sync customers): differs" in busy.stdout
    assert "repair not run: " in busy.stderr and "Traceback" not in busy.stderr
    assert h.query(f"sqlite:///{folder / 'portal.db'}", "SELECT nm FROM accounts WHERE ref = 4") == [
        ("edited",)
    ]


def test_a_repair_of_more_keys_than_max_keys_is_refused_before_anything_is_written(folder: Path) -> None:
    dst = f"sqlite:///{folder / 'portal.db'}"
    h.execute(dst, "UPDATE accounts SET nm = 'edited' WHERE ref IN (4, 5)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPSYNC_")}
    refused = cli_runner.run(
        ["reconcile", "sheet.yaml", "--check", "rows", "--repair", "--max-keys", "1"], folder, env
    )
    assert refused.returncode != 0 and "more than max_keys 1" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert h.query(dst, "SELECT nm FROM accounts WHERE ref IN (4, 5)") == [("edited",), ("edited",)]
    done = cli_runner.run(
        ["reconcile", "sheet.yaml", "--check", "rows", "--repair", "--max-keys", "2"], folder, env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert h.query(dst, "SELECT nm FROM accounts WHERE ref IN (4, 5) ORDER BY ref") == [("c4",), ("c5",)]
