"""`mapsync daemon --serve ADDR --metrics ADDR` as a real process: the app of `mapsync serve`
beside the scheduler (/healthz, /readyz, /metrics with this daemon's own run counters), the
`/metrics`-only listener, both on loopback for a bare port, and a clean stop on SIGTERM;
`mapsync serve` on a sheet without webhook syncs serves metrics and health. The processes are
`slow` (a CLI start takes seconds on a busy machine); the default tier runs the same listeners
in this process (`cli.common._listeners`, what `serve_daemon` wraps the daemon in)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mapsync.cli import common
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  src: {{url: "sqlite:///{src}"}}
  dst: {{url: "sqlite:///{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    schedule: {{every: 1s}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _sheet(tmp_path: Path) -> Path:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    h.execute(
        f"sqlite:///{src}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, last_modified TEXT)"
    )
    h.execute(f"sqlite:///{dst}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    h.execute(
        f"sqlite:///{src}",
        "INSERT INTO items VALUES (1, 'one', :ts)",
        params={"ts": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")},
    )
    sheet = tmp_path / "sheet.yaml"
    sheet.write_text(SHEET.format(src=src, dst=dst))
    return sheet


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], Path]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], Path]:
        log = tmp_path / f"proc{len(procs)}.log"
        with log.open("w") as fh:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "mapsync", *args],
                    cwd=tmp_path,
                    env={**os.environ, "NO_COLOR": "1"},
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        return procs[-1], log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _up(proc: subprocess.Popen[str], log: Path, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _runs(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=15).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "mapsync_runs_total" and s.labels.get("sync") == "items"
    )


def test_the_daemon_listeners_count_this_process_runs(tmp_path: Path) -> None:
    sheet = _sheet(tmp_path)
    assert h.mapsync("seed", str(sheet), cwd=tmp_path).returncode == 0
    loaded = loader.load(sheet)
    app_port, metrics_port = _free_port(), _free_port()
    base, only = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{metrics_port}"
    with common._listeners(loaded, ("127.0.0.1", app_port), ("127.0.0.1", metrics_port)):
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
        assert _runs(base) == _runs(only) == 0  # the seed ran before
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=False)
        engine = Engine(loaded, store)
        try:
            assert engine.run("items").ok
        finally:
            engine.close()
            store.close()
        assert _runs(base) == _runs(only) == 1
        assert httpx.get(f"{only}/readyz").status_code == 404  # /metrics alone
        for port in (app_port, metrics_port):  # the webhook server's guards: a head over 16 KiB
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 20_000 + b"\r\n\r\n")
                assert s.recv(64).startswith(b"HTTP/1.1 431")
    with pytest.raises(httpx.TransportError):  # both stopped with the daemon
        httpx.get(f"{base}/healthz", timeout=2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{only}/metrics", timeout=2)


@pytest.mark.slow
def test_daemon_serve_and_metrics_listeners(
    tmp_path: Path, started: Callable[..., tuple[subprocess.Popen[str], Path]]
) -> None:
    sheet = _sheet(tmp_path)
    assert h.mapsync("seed", str(sheet), cwd=tmp_path).returncode == 0
    app_port, metrics_port = _free_port(), _free_port()
    proc, log = started(
        "daemon", str(sheet), "--poll", "0.2s", "--serve", str(app_port), "--metrics", str(metrics_port)
    )
    base, only = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{metrics_port}"
    _up(proc, log, f"{base}/healthz")
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    # the daemon's own runs are counted, and both listeners show the same counters
    assert h.wait_for(lambda: _runs(base) >= 1, timeout=40), log.read_text()
    assert _runs(only) >= 1
    assert httpx.get(f"{only}/healthz").status_code == 404  # /metrics alone
    scraped = httpx.get(f"{only}/metrics").text
    assert "mapsync_state_store_up 1.0" in scraped
    assert 'mapsync_lateness_seconds_count{sync="items"}' in scraped  # scheduled runs: their lateness
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0, log.read_text()
    text = log.read_text()
    assert f"serving http://127.0.0.1:{app_port}: the dashboard, /api, /metrics, /healthz, /readyz" in text
    assert "without TLS" not in text  # loopback: no exposure warning


@pytest.mark.slow
def test_serve_without_webhook_syncs_serves_metrics_and_health(
    tmp_path: Path, started: Callable[..., tuple[subprocess.Popen[str], Path]]
) -> None:
    sheet = _sheet(tmp_path)
    assert h.mapsync("seed", str(sheet), cwd=tmp_path).returncode == 0
    port = _free_port()
    proc, log = started("serve", str(sheet), "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    _up(proc, log, f"{base}/readyz")
    text = httpx.get(f"{base}/metrics").text
    assert 'mapsync_last_success_timestamp_seconds{sync="items"}' in text
    assert httpx.post(f"{base}/webhooks/items", content=b"{}").status_code == 404
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.mark.parametrize(
    ("given", "message"),
    [("nine", "has no port"), ("1.2.3.4:0", "has no port"), ("::1:80", "[brackets]")],
)
def test_a_bad_address_is_a_config_error(tmp_path: Path, given: str, message: str) -> None:
    sheet = _sheet(tmp_path)
    done = h.mapsync("daemon", str(sheet), "--serve", given, cwd=tmp_path, process=False)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
