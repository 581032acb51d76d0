"""Webhooks: `mapsync serve` as a real process (good, bad, stale, replayed signatures; nothing of a
rejected body in its log), the inbox → `mapsync run` into SQLite, PostgreSQL and MariaDB
destinations, and crashes between taking inbox items and finishing them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync.sheet import loader
from mapsync.state import inbox
from mapsync.state.store import StateStore
from mapsync.webhooks import create_app, sign
from tests import helpers as h

SECRET = "whsec-0123456789abcdef-test"
ENV = {"HOOK_SECRET": SECRET}
MARKER = "BODY-MARKER-7f3a"  # put in rejected bodies: must never reach the log


def _sheet(tmp_path: Path, dest_url: str, batch: int = 500) -> Path:
    erp = tmp_path / "erp.db"
    if not erp.exists():
        h.execute(f"sqlite:///{erp}", "CREATE TABLE items (sku TEXT PRIMARY KEY, descr TEXT)")
        h.execute(
            f"sqlite:///{erp}",
            "INSERT INTO items VALUES (:s, :d)",
            params=[{"s": "S1", "d": "first"}, {"s": "S2", "d": "second"}],
        )
    path = tmp_path / "sheet.yaml"
    path.write_text(f"""
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  portal: {{url: "{dest_url}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    fields: {{nm: descr}}
    changes: {{method: inbox}}
    deletes: {{policy: hard}}
    delivery: {{batch: {batch}}}
    webhook: {{secret: "${{HOOK_SECRET}}", max_body: 4096}}
  plain:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    fields: {{nm: descr}}
    changes: {{method: full}}
""")
    return path


def _headers(
    body: bytes, *, secret: str = SECRET, at: int | None = None, event: str | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    out = {"X-Mapsync-Timestamp": stamp, "X-Mapsync-Signature": "sha256=" + sign(secret, stamp, body)}
    if event is not None:
        out["X-Mapsync-Event-Id"] = event
    out["Content-Type"] = "application/json"
    return out


def _body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """`mapsync serve` as a real process; yields its base URL, the sheet, and its stderr file."""
    dest = tmp_path / "portal.db"
    h.execute(f"sqlite:///{dest}", "CREATE TABLE products (sku TEXT PRIMARY KEY, nm TEXT)")
    sheet = _sheet(tmp_path, "sqlite:///portal.db")
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mapsync",
                "--log-level",
                "info",
                "serve",
                str(sheet),
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env={**os.environ, **ENV},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        yield base, sheet, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _inbox_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    state = tmp_path / ".mapsync" / "state.db"
    return h.query(
        f"sqlite:///{state}", "SELECT sync, event_id, status, payload FROM mapsync_inbox ORDER BY id"
    )


def test_signatures_against_the_real_server(server: tuple[str, Path, Path], tmp_path: Path) -> None:
    base, _, log = server
    url = f"{base}/webhooks/items"
    health = httpx.get(f"{base}/healthz")
    assert health.json() == {"status": "ok"}

    good = _body({"op": "upsert", "key": {"sku": "A1"}, "data": {"descr": "new"}})
    first = httpx.post(url, content=good, headers=_headers(good, event="evt-1"))
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    again = httpx.post(url, content=good, headers=_headers(good, event="evt-1"))  # re-signed, same id
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "event_id": "evt-1"}

    other = _body({"op": "delete", "key": {"sku": "S1"}})
    replay = _headers(other)  # no event id: the signature identifies it
    assert httpx.post(url, content=other, headers=replay).status_code == 202
    assert httpx.post(url, content=other, headers=replay).json()["status"] == "duplicate"

    leaked = _body({"key": {"sku": MARKER}})
    bad = httpx.post(url, content=leaked, headers=_headers(leaked, secret="not-the-secret-at-all"))
    assert bad.status_code == 401
    stale_at = int(time.time()) - 600
    stale = httpx.post(url, content=leaked, headers=_headers(leaked, at=stale_at))
    assert stale.status_code == 401
    future = httpx.post(url, content=leaked, headers=_headers(leaked, at=int(time.time()) + 600))
    assert future.status_code == 401
    tampered = _headers(good, event="evt-2")
    assert httpx.post(url, content=leaked, headers=tampered).status_code == 401  # body swapped
    assert httpx.post(url, content=leaked, headers={"Content-Type": "application/json"}).status_code == 401
    unsigned_stamp = {**_headers(leaked), "X-Mapsync-Timestamp": "yesterday"}
    assert httpx.post(url, content=leaked, headers=unsigned_stamp).status_code == 401

    assert httpx.post(f"{base}/webhooks/plain", content=good, headers=_headers(good)).status_code == 404
    assert httpx.post(f"{base}/webhooks/nope", content=good, headers=_headers(good)).status_code == 404
    not_json = b"[1, 2"
    assert httpx.post(url, content=not_json, headers=_headers(not_json)).status_code == 400
    huge = _body({"key": {"sku": "X"}, "data": {"descr": "x" * 5000}})
    assert httpx.post(url, content=huge, headers=_headers(huge)).status_code == 413

    rows = _inbox_rows(tmp_path)
    assert [(r[0], r[2]) for r in rows] == [("items", "new"), ("items", "new")]
    assert rows[0][1] == "evt-1" and json.loads(rows[0][3]) == json.loads(good)
    assert rows[1][1].startswith("sig:")
    text = log.read_text()
    assert text.count("webhook_rejected") == 6
    assert "signature does not match" in text and "stale timestamp" in text
    assert MARKER not in text and SECRET not in text


def test_serve_refuses_a_webhook_nobody_reads(tmp_path: Path) -> None:
    h.execute(f"sqlite:///{tmp_path / 'portal.db'}", "CREATE TABLE products (sku TEXT PRIMARY KEY, nm TEXT)")
    sheet = _sheet(tmp_path, "sqlite:///portal.db")
    text = sheet.read_text().replace("changes: {method: inbox}", "changes: {method: full}")
    sheet.write_text(text.replace("deletes: {policy: hard}", "deletes: {policy: ignore}", 1))  # (no deletes)
    result = h.mapsync("serve", str(sheet), cwd=tmp_path, env=ENV, timeout=30)
    assert result.returncode == 2
    assert "sync items has a `webhook:` block but `changes: {method: full}`" in result.stderr


def _dest_table(url: str) -> None:
    h.execute(url, "CREATE TABLE products (sku VARCHAR(20) PRIMARY KEY, nm VARCHAR(40))")
    h.install_write_counter(url, "products")


async def _post_in_process(app: Any, events: list[tuple[str, Any]]) -> None:
    # httpx's own ASGI transport: starlette's TestClient warns that its httpx use is deprecated
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mapsync.test") as client:
        for event, payload in events:
            body = payload if isinstance(payload, bytes) else _body(payload)
            response = await client.post("/webhooks/items", content=body, headers=_headers(body, event=event))
            assert response.status_code == 202, response.text


def _post_all(sheet: Path, events: list[tuple[str, Any]]) -> None:
    """Post through the app in-process (the real-server test above covers the HTTP server)."""
    loaded = loader.load(sheet, env={**os.environ, **ENV})
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    try:
        asyncio.run(_post_in_process(create_app(loaded, store), events))
    finally:
        store.close()


def test_inbox_run_delivers_to_a_real_destination(database: Callable[[], str], tmp_path: Path) -> None:
    dest = database()
    _dest_table(dest)
    sheet = _sheet(tmp_path, dest)
    seeded = h.mapsync("seed", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV)
    assert seeded.returncode == 0, seeded.stderr
    assert sorted(h.query(dest, "SELECT sku, nm FROM products")) == [("S1", "first"), ("S2", "second")]
    h.execute(
        f"sqlite:///{tmp_path / 'erp.db'}", "UPDATE items SET descr = 'second, changed' WHERE sku = 'S2'"
    )
    _post_all(
        sheet,
        [
            ("e1", {"op": "upsert", "key": {"sku": "A1"}, "data": {"descr": "one"}}),
            ("e2", {"sku": "A2", "descr": "whole record"}),
            ("e3", {"op": "delete", "key": {"sku": "S1"}}),
            ("e4", {"op": "upsert", "key": "S2"}),  # no data: read from the source
            ("e5", {"op": "upsert", "key": {"sku": "A1"}, "data": {"descr": "one, newer"}}),
            ("e6", {"op": "upsert", "data": {"descr": "no key"}}),
            ("e7", {"op": "merge", "key": {"sku": "A3"}}),
        ],
    )
    before = h.writes(dest)
    ran = h.mapsync("run", str(sheet), "--sync", "items", "--json", cwd=tmp_path, env=ENV)
    assert ran.returncode == 0, ran.stderr
    assert sorted(h.query(dest, "SELECT sku, nm FROM products")) == [
        ("A1", "one, newer"),
        ("A2", "whole record"),
        ("S2", "second, changed"),
    ]
    assert h.writes(dest) - before == 3  # e1 collapsed into e5; the delete is not a row write
    rows = {r[1]: r[2] for r in _inbox_rows(tmp_path)}
    assert rows == {f"e{i}": "processed" for i in range(1, 6)} | {"e6": "error", "e7": "error"}
    state = tmp_path / ".mapsync" / "state.db"
    errors_ = dict(
        h.query(f"sqlite:///{state}", "SELECT event_id, error FROM mapsync_inbox WHERE status = 'error'")
    )
    assert "`key` lacks sku" in errors_["e6"] and "unknown op 'merge'" in errors_["e7"]
    again = h.mapsync("run", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV)
    assert again.returncode == 0, again.stderr
    assert h.writes(dest) - before == 3  # nothing new in the inbox: nothing sent


def test_a_rejected_record_marks_its_item_error(tmp_path: Path) -> None:
    dest = f"sqlite:///{tmp_path / 'portal.db'}"
    h.execute(dest, "CREATE TABLE products (sku TEXT PRIMARY KEY, nm TEXT NOT NULL)")
    sheet = _sheet(tmp_path, "sqlite:///portal.db")
    assert h.mapsync("seed", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV).returncode == 0
    _post_all(
        sheet,
        [
            ("ok", {"op": "upsert", "key": {"sku": "B1"}, "data": {"descr": "fine"}}),
            ("null", {"op": "upsert", "key": {"sku": "B2"}, "data": {"descr": None}}),
        ],
    )
    ran = h.mapsync("run", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV)
    assert ran.returncode == 1  # partial: one record rejected
    assert {r[1]: r[2] for r in _inbox_rows(tmp_path)} == {"ok": "processed", "null": "error"}
    assert h.query(dest, "SELECT sku FROM products WHERE sku LIKE 'B%'") == [("B1",)]


@pytest.mark.parametrize(
    ("point", "writes"),
    [("after_read", 3), ("after_write", 5), ("after_ack", 5), ("after_commit", 3)],
)
def test_crash_between_taking_items_and_finishing_reprocesses_once(
    point: str, writes: int, tmp_path: Path
) -> None:
    """Batches of 2 over 3 items, killed in the first batch: the items are settled only after the
    state commit, so the rerun takes the first batch's again: 2 extra row writes where the
    destination had confirmed and the ledger not yet (`after_write`, `after_ack`); after the commit
    the ledger holds them unchanged and they are only settled."""
    dest = f"sqlite:///{tmp_path / 'portal.db'}"
    _dest_table(dest)
    sheet = _sheet(tmp_path, "sqlite:///portal.db", batch=2)
    assert h.mapsync("seed", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV).returncode == 0
    base = h.writes(dest)
    _post_all(sheet, [(f"c{i}", {"sku": f"C{i}", "descr": f"c {i}"}) for i in range(3)])
    marker = tmp_path / "crash.marker"
    crashed = h.mapsync(
        "run",
        str(sheet),
        "--sync",
        "items",
        cwd=tmp_path,
        env={**ENV, "MAPSYNC_CRASH_AT": point, "MAPSYNC_CRASH_MARKER": str(marker)},
        process=False,  # the crash point in-process (mapsync.crash); the crash matrix kills for real
    )
    assert crashed.returncode == -signal.SIGKILL and marker.read_text().strip() == f"{point}:1"
    status = {r[1]: r[2] for r in _inbox_rows(tmp_path)}
    assert status == {"c0": "new", "c1": "new", "c2": "new"}
    rerun = h.mapsync("run", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV)
    assert rerun.returncode == 0, rerun.stderr
    assert {r[2] for r in _inbox_rows(tmp_path)} == {"processed"}
    assert sorted(h.query(dest, "SELECT sku, nm FROM products WHERE sku LIKE 'C%'")) == [
        ("C0", "c 0"),
        ("C1", "c 1"),
        ("C2", "c 2"),
    ]
    assert h.writes(dest) - base == writes
    assert h.mapsync("run", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV).returncode == 0
    assert h.writes(dest) - base == writes


@pytest.mark.parametrize("point", ["during_error_record", "during_state_write", "after_commit"])
def test_a_crash_before_a_refused_item_is_settled_keeps_it_for_the_rerun(point: str, tmp_path: Path) -> None:
    """An item the destination refuses becomes `error` only with its record error committed: a
    crash before that leaves it `new`, and the rerun refuses it again and keeps the error."""
    dest = f"sqlite:///{tmp_path / 'portal.db'}"
    _dest_table(dest)
    h.execute(
        dest,
        "CREATE TRIGGER refuse BEFORE INSERT ON products WHEN NEW.nm = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'nm is refused'); END",
    )
    sheet = _sheet(tmp_path, "sqlite:///portal.db", batch=10)
    assert h.mapsync("seed", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV).returncode == 0
    _post_all(sheet, [("d0", {"sku": "D0", "descr": "good"}), ("d1", {"sku": "D1", "descr": "bad"})])
    crashed = h.mapsync(
        "run",
        str(sheet),
        "--sync",
        "items",
        cwd=tmp_path,
        env={**ENV, "MAPSYNC_CRASH_AT": point},
        process=False,
    )
    assert crashed.returncode == -signal.SIGKILL
    assert {r[1]: r[2] for r in _inbox_rows(tmp_path)} == {"d0": "new", "d1": "new"}
    rerun = h.mapsync("run", str(sheet), "--sync", "items", cwd=tmp_path, env=ENV)
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr  # partial: one record refused
    assert {r[1]: r[2] for r in _inbox_rows(tmp_path)} == {"d0": "processed", "d1": "error"}
    errors_ = h.mapsync("errors", str(sheet), "--sync", "items", "--json", cwd=tmp_path, env=ENV)
    assert "nm is refused" in errors_.stdout, errors_.stdout + errors_.stderr


def test_inbox_append_is_idempotent_per_event(tmp_path: Path) -> None:
    store = StateStore.open("sqlite:///state.db", tmp_path, create=True)
    try:
        first = inbox.append(store, "s", "evt", '{"a": 1}')
        assert isinstance(first, int)
        assert inbox.append(store, "s", "evt", '{"a": 2}') is None
        assert inbox.append(store, "other", "evt", '{"a": 1}') is not None  # ids are per sync
        assert inbox.counts(store, "s") == {"new": 1}
        inbox.finish(store, [first], {})
        assert inbox.counts(store) == {"new": 1, "processed": 1}
    finally:
        store.close()


def test_bad_webhook_settings_are_named_without_the_secret(tmp_path: Path) -> None:
    sheet = _sheet(tmp_path, "sqlite:///portal.db")
    sheet.write_text(
        sheet.read_text().replace(
            'webhook: {secret: "${HOOK_SECRET}", max_body: 4096}',
            'webhook: {secret: "tiny-secret", tolerance: 5x, signature_header: "X Bad"}',
        )
    )
    result = h.mapsync("validate", str(sheet), cwd=tmp_path)
    assert result.returncode == 2
    assert "syncs.items.webhook.secret: the secret needs at least 16 characters" in result.stderr
    assert "syncs.items.webhook.tolerance: '5x' is not a duration" in result.stderr
    assert "syncs.items.webhook.signature_header" in result.stderr
    assert "tiny-secret" not in result.stderr
