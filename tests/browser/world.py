"""The dashboard's world (issue 19): a portal that exports its orders to an ERP, both SQLite files,
a `ping` sync the daemon runs every second, and `web: users` (an operator and a viewer with
password hashes made by `mapsync web hash-password --stdin`).

- `orders` (portal `orders` + `order_lines` → ERP `sales_order` + `sales_order_lines`,
  `changes: {method: export_flag}`): the ERP numbers each order (`doc_no`, read back into
  `erp_order_number`) and refuses a zip code that is not 5 characters long (a CHECK). Its
  schedule is a yearly cron: no slot falls due while a test runs, so only the dashboard's requests
  (retry, re-export, run now) make the daemon run it;
- `ping` (portal `notes` → ERP `notes`, `changes: {method: full}`, `every: 1s`): a sync whose slots
  fall due all the time, to pause and resume.

`scripts/screenshots` builds the same world.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests import helpers as h

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SHEET = """
version: 1
connections:
  portal: {{url: "{portal}"}}
  erp: {{url: "{erp}"}}
syncs:
  orders:
    from: {{connection: portal, table: orders}}
    to: {{connection: erp, table: sales_order}}
    key: {{from: order_no, to: portal_ref}}
    fields:
      customer: customer
      zip: zip
      status: {{value: new}}
    changes:
      method: export_flag
      flag: exported
      status: erp_import_status
      error: erp_import_error
      document: {{from: doc_no, to: erp_order_number}}
      version: updated_at
    schedule: {{cron: "0 0 1 1 *"}}
    children:
      lines:
        from: {{connection: portal, table: order_lines}}
        to: {{connection: erp, table: sales_order_lines}}
        parent: {{from: order_no, to: portal_ref}}
        key: {{from: [order_no, line_no], to: [portal_ref, line_no]}}
        fields:
          sku: sku
          qty: qty
  ping:
    from: {{connection: portal, table: notes}}
    to: {{connection: erp, table: notes}}
    key: {{from: id, to: id}}
    fields: {{body: body}}
    changes: {{method: full}}
    schedule: {{every: 1s}}
web:
  users:
    op: {{role: operator, password_hash: "{op_hash}"}}
    viewer: {{role: viewer, password_hash: "{viewer_hash}"}}
{web_more}"""

PORTAL_DDL = [
    "CREATE TABLE orders (order_no INTEGER PRIMARY KEY, customer VARCHAR(40) NOT NULL, zip VARCHAR(10), "
    "exported INTEGER, erp_import_status VARCHAR(20), erp_import_error VARCHAR(60), "
    "erp_order_number INTEGER, updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))",
    "CREATE TABLE order_lines (order_no INTEGER NOT NULL, line_no INTEGER NOT NULL, sku VARCHAR(20), "
    "qty INTEGER, PRIMARY KEY (order_no, line_no))",
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(40))",
]
ERP_DDL = [
    "CREATE TABLE sales_order (doc_no INTEGER PRIMARY KEY AUTOINCREMENT, portal_ref INTEGER NOT NULL UNIQUE, "
    "customer VARCHAR(40), zip VARCHAR(10), status VARCHAR(20), "
    "CONSTRAINT zip_has_five CHECK (length(zip) = 5))",
    "CREATE TABLE sales_order_lines (portal_ref INTEGER NOT NULL, line_no INTEGER NOT NULL, sku VARCHAR(20), "
    "qty INTEGER, PRIMARY KEY (portal_ref, line_no))",
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(40))",
]

CHROMIUM = os.environ.get("MAPSYNC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
DAEMON = [sys.executable, "-m", "mapsync", "daemon", "sheet.yaml", "--poll", "200ms"]
SERVING = re.compile(r"serving (http://127\.0\.0\.1:\d+)")


def free_port() -> int:
    """A port free on loopback now (`--serve` takes no port 0; the daemon says where it listens,
    and that is what the tests read)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(playwright: Any) -> Browser:
    """Debian's Chromium (never a browser Playwright would download), headless, with the flags a
    CI container needs (no sandbox, no GPU) and without its calls home (no background networking,
    no component updates)."""
    browser: Browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    return browser


def hash_password(password: str) -> str:
    """`mapsync web hash-password --stdin`, as a user makes a hash for the sheet."""
    done = subprocess.run(
        [sys.executable, "-m", "mapsync", "web", "hash-password", "--stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip().splitlines()[-1]
    assert hashed.startswith("scrypt$") and password not in done.stdout + done.stderr
    return hashed


class Dashboard:
    """The databases, the sheet and the passwords in `folder`; `daemon()` runs
    `mapsync daemon sheet.yaml --serve 127.0.0.1:PORT` and sets `url`."""

    def __init__(self, folder: Path, web_more: str = "") -> None:
        self.folder = folder
        self.portal = f"sqlite:///{folder / 'portal.db'}"
        self.erp = f"sqlite:///{folder / 'erp.db'}"
        self.state = f"sqlite:///{folder / '.mapsync' / 'state.db'}"
        h.execute(self.portal, *PORTAL_DDL)
        h.execute(self.erp, *ERP_DDL)
        h.install_write_counter(self.erp, "sales_order")
        self.passwords = {"op": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
        (folder / "sheet.yaml").write_text(
            SHEET.format(
                portal=self.portal,
                erp=self.erp,
                op_hash=hash_password(self.passwords["op"]),
                viewer_hash=hash_password(self.passwords["viewer"]),
                web_more=web_more,
            ),
            encoding="utf-8",
        )
        self.url = ""
        self.log = folder / "daemon.log"
        self.env: dict[str, str] = {}  # more environment for the CLI and the daemon (`${VAR}`)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return h.mapsync(*args, cwd=self.folder, env=self.env)

    def seed(self) -> None:
        seeded = self.cli("seed", "sheet.yaml")
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    # ----------------------------------------------------------------- the daemon

    @contextlib.contextmanager
    def daemon(self) -> Iterator[subprocess.Popen[str]]:
        """The daemon with the web app beside it (its log in a file: no pipe to fill); SIGTERM at
        the end (killed if it does not stop)."""
        with self.log.open("w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                [*DAEMON, "--serve", f"127.0.0.1:{free_port()}"],
                cwd=self.folder,
                env={**os.environ, "NO_COLOR": "1", **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                assert h.wait_for(lambda: self._serving() or proc.poll() is not None, 60), self.tail()
                assert proc.poll() is None, self.tail()
                yield proc
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=30)

    def _serving(self) -> bool:
        found = SERVING.search(self.log.read_text(encoding="utf-8"))
        if found:
            self.url = found.group(1)
        return found is not None

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8")[-4000:]

    # ----------------------------------------------------------------- the portal

    def order(self, no: int, zip: str = "12345", lines: int = 2) -> None:
        """An order placed at the portal (pending: no flag yet)."""
        h.execute(
            self.portal,
            "INSERT INTO orders (order_no, customer, zip) VALUES (:n, :c, :z)",
            params={"n": no, "c": f"customer {no}", "z": zip},
        )
        h.execute(
            self.portal,
            "INSERT INTO order_lines VALUES (:n, :l, :s, :q)",
            params=[{"n": no, "l": i, "s": f"SKU{no}-{i}", "q": i * 10} for i in range(1, lines + 1)],
        )

    def edit(self, no: int, **cols: Any) -> None:
        """A user's edit of a portal order: the columns and a new `updated_at`."""
        sets = ", ".join(
            [*(f"{c} = :{c}" for c in cols), "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now')"]
        )
        h.execute(self.portal, f"UPDATE orders SET {sets} WHERE order_no = :n", params={**cols, "n": no})

    def reset(self, no: int) -> None:
        """A worker sets the flag back (only the flag, as a worker would)."""
        h.execute(self.portal, "UPDATE orders SET exported = 0 WHERE order_no = :n", params={"n": no})

    def state_of(self, no: int) -> tuple[Any, ...]:
        """(exported, erp_import_status, erp_import_error, erp_order_number) of a portal order."""
        rows = h.query(
            self.portal,
            "SELECT exported, erp_import_status, erp_import_error, erp_order_number FROM orders "
            "WHERE order_no = :n",
            {"n": no},
        )
        return tuple(rows[0])

    # ----------------------------------------------------------------- the ERP and the store

    def erp_order(self, no: int) -> tuple[Any, ...] | None:
        """(doc_no, zip) of the ERP's order for portal order `no`, or None."""
        rows = h.query(self.erp, "SELECT doc_no, zip FROM sales_order WHERE portal_ref = :n", {"n": no})
        return tuple(rows[0]) if rows else None

    def erp_lines(self, no: int) -> int:
        return int(
            h.query(self.erp, "SELECT COUNT(*) FROM sales_order_lines WHERE portal_ref = :n", {"n": no})[0][0]
        )

    def erp_writes(self) -> int:
        return h.writes(self.erp)

    def runs(self, sync: str, after: int = 0) -> list[tuple[Any, ...]]:
        """(id, kind, trigger, status, message) of the sync's runs after run id `after`."""
        return h.query(
            self.state,
            "SELECT id, kind, trigger, status, message FROM mapsync_runs "
            "WHERE sync = :s AND id > :a AND kind <> 'seed' ORDER BY id",
            {"s": sync, "a": after},
        )

    def last_run_id(self) -> int:
        return int(h.query(self.state, "SELECT COALESCE(MAX(id), 0) FROM mapsync_runs")[0][0])

    def requests(self) -> list[tuple[Any, ...]]:
        """(id, sync, kind, status) of the run requests."""
        return h.query(self.state, "SELECT id, sync, kind, status FROM mapsync_run_requests ORDER BY id")


def wait(check: Any, timeout: float = 30.0, what: str = "") -> None:
    """`check()` holds within `timeout` seconds, or the test fails saying `what`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")
