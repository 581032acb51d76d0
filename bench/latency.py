"""Latency benchmark: commit in the source → visible in the destination, with `run --follow`.

    .venv/bin/python bench/latency.py                              # queue and log, 200/s for 60 s
    .venv/bin/python bench/latency.py --method queue --seconds 5   # a smoke

Source and destination are two fresh PostgreSQL databases. A writer thread inserts rows into the
source at a steady rate, one transaction per row, and notes the wall-clock time right after each
COMMIT returned. A `mapsync run --follow` process (its own interpreter, as in production) carries
them over; a trigger on the destination stamps `arrived_at = clock_timestamp()` when a row lands.
Both servers are the same machine, so the clocks agree: latency = arrived_at − committed. Every
row must arrive (a missing one is reported and fails the run). Target: p99 < 1 s.

The follower builds each sync's parts once and reuses them across passes (a pass checks the
catalogs with one query per connection); this benchmark does not time a pass itself:
docs/performance.md has idle-pass figures from before and after that change.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common

TARGET_P99_S = 1.0
METHODS = ["queue", "log"]

SOURCE_DDL = """
CREATE TABLE events (
    id BIGINT PRIMARY KEY,
    name VARCHAR(60) NOT NULL,
    last_modified TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)
"""
DEST_DDL = """
CREATE TABLE events (
    id BIGINT PRIMARY KEY,
    name VARCHAR(60) NOT NULL,
    arrived_at TIMESTAMPTZ
);
CREATE FUNCTION stamp_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.arrived_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER events_arrival BEFORE INSERT OR UPDATE ON events
FOR EACH ROW EXECUTE FUNCTION stamp_arrival();
"""


def sheet(folder: Path, method: str, src: str, dst: str) -> Path:
    changes: dict[str, Any] = {"method": method}
    if method == "watermark":
        changes.update(column="last_modified", lag="0s")
    doc = {
        "version": 1,
        "connections": {"src": {"url": src}, "dst": {"url": dst}},
        "state": {"url": f"sqlite:///{folder / 'state.db'}"},
        "syncs": {
            "events": {
                "from": {"connection": "src", "table": "events"},
                "to": {"connection": "dst", "table": "events"},
                "key": {"from": "id", "to": "id"},
                "fields": {"name": "name"},
                "changes": changes,
                "deletes": {"policy": "hard"},
                "delivery": {"batch": 500},
            }
        },
    }
    path = folder / "sheet.yaml"
    path.write_text(json.dumps(doc, indent=2))
    return path


def mapsync(folder: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mapsync", *args], cwd=folder, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mapsync {' '.join(args)} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def writer(url: str, rate: float, seconds: float, committed: dict[int, float], stop: threading.Event) -> None:
    conn = common.pg_connect(url, autocommit=True)
    start = time.monotonic()
    n = int(rate * seconds)
    try:
        for i in range(1, n + 1):
            if stop.is_set():
                break
            due = start + (i - 1) / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.execute("INSERT INTO events (id, name) VALUES (%s, %s)", (i, f"event {i}"))
            committed[i] = time.time()
    finally:
        conn.close()


def measure(method: str, rate: float, seconds: float) -> dict[str, Any]:
    with (
        common.ScratchDatabase("mapsync_bench_src") as src,
        common.ScratchDatabase("mapsync_bench_dst") as dst,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder = Path(tmp)
        src.execute(SOURCE_DDL)
        dst.execute(DEST_DDL)
        path = sheet(folder, method, src.url, dst.url)
        if method == "queue":
            mapsync(folder, "triggers", "install", str(path))
        elif method == "log":
            mapsync(folder, "changelog", "install", str(path))
        try:
            mapsync(folder, "seed", str(path))
            follower = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mapsync",
                    "--log-level",
                    "warning",
                    "run",
                    str(path),
                    "--follow",
                    "--poll",
                    "100ms",
                ],
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.0)  # the follower's imports and first pass
            committed: dict[int, float] = {}
            stop = threading.Event()
            t0 = time.monotonic()
            thread = threading.Thread(target=writer, args=(src.url, rate, seconds, committed, stop))
            thread.start()
            thread.join()
            wrote_s = time.monotonic() - t0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if dst.scalar("SELECT count(*) FROM events") >= len(committed):
                    break
                time.sleep(0.1)
            follower.send_signal(signal.SIGTERM)
            _, stderr = follower.communicate(timeout=60)
            with common.pg_connect(dst.url) as conn:
                arrived = dict(
                    conn.execute("SELECT id, extract(epoch FROM arrived_at) FROM events").fetchall()
                )
        finally:
            if method == "queue":
                mapsync(folder, "triggers", "remove", str(path))
            elif method == "log":
                mapsync(folder, "changelog", "remove", str(path))
    lat = sorted(float(arrived[i]) - t for i, t in committed.items() if i in arrived)
    missing = len(committed) - len(lat)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99 if lat else [float("nan")] * 99
    return {
        "method": method,
        "changes": len(committed),
        "rate_achieved": len(committed) / wrote_s,
        "missing": missing,
        "p50_s": q[49],
        "p99_s": q[98],
        "max_s": lat[-1] if lat else float("nan"),
        "follower_exit": follower.returncode,
        "follower_stderr": stderr[-500:] if follower.returncode else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=[*METHODS, "watermark"], action="append")
    parser.add_argument("--rate", type=float, default=200.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(common.load_average())
    failed = False
    for method in args.method or METHODS:
        r = measure(method, args.rate, args.seconds)
        verdict = "met" if r["p99_s"] < TARGET_P99_S and not r["missing"] else "MISSED"
        print(
            f"{method:9s} {r['changes']} changes at {r['rate_achieved']:.0f}/s: "
            f"p50 {r['p50_s'] * 1000:.0f} ms, "
            f"p99 {r['p99_s'] * 1000:.0f} ms, max {r['max_s'] * 1000:.0f} ms, missing {r['missing']} "
            f"(target p99 < {TARGET_P99_S:.0f} s: {verdict}); follower exit {r['follower_exit']}"
        )
        if r["follower_stderr"]:
            print(r["follower_stderr"])
        failed = failed or bool(r["missing"]) or r["follower_exit"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
