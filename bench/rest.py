"""CIMcloud connector benchmark against the sandbox: records/s in sync mode (10 per call) and in
async mode (queued batches of 500, confirmed by read-back or job polls).

    .venv/bin/python bench/rest.py                      # 5,000 records, budget off
    .venv/bin/python bench/rest.py --rows 1000 --repeat 1
    .venv/bin/python bench/rest.py --budget 20/3s --rows 1400   # with the budget: time vs its bound
    .venv/bin/python bench/rest.py --mode async --contract none  # async seed, batches of 500
    .venv/bin/python bench/rest.py --mode async --contract jobs --async-batch 500

The sandbox runs as its own process (`mapsync sandbox cimcloud`), so server and client do not
share a GIL. A SQLite `customers` table of N rows is seeded into it through the Engine API
(watermark capture, five fields, POST upserts of 10 records); only `engine.run(…, "seed")` is
timed. The calls are counted from the sandbox's request log. Then 1 % of the rows change and an
incremental run is timed the same way. Exit status: 0, nonzero on errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore

SHEET = """
version: 1
connections:
  erp: {{url: "sqlite:///{src}"}}
  cim:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: token, auth_key: sandbox-key, username: sandbox, password: sandbox-password}}
    budget: {budget}
    async_contract: {contract}
syncs:
  accounts:
    from: {{connection: erp, table: customers}}
    to: {{connection: cim, resource: account}}
    key: {{from: customer_no, to: ref_id}}
    fields:
      nm: name
      city: city
      status: {{from: status, map: {{A: 1, I: 0}}}}
      credit: {{from: credit, cast: decimal, scale: 2}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: {batch}, seed_mode: {mode}, async_batch: {async_batch}, poll_every: {poll}}}
"""


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sandbox(
    folder: Path, budget: str | None, contract: str = "none"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "mapsync",
        "sandbox",
        "cimcloud",
        "--port",
        str(port),
        "--db",
        str(folder / "sb.db"),
    ]
    args += ["--budget", budget or "off", "--async-contract", contract]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            httpx.get(f"{base}/sandbox/healthcheck/canary", timeout=1)
            return proc, base
        except httpx.TransportError:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("the sandbox did not start") from None
            time.sleep(0.1)


def make_source(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE customers (customer_no TEXT PRIMARY KEY, name TEXT, city TEXT, status TEXT, "
        "credit NUMERIC, last_modified TEXT)"
    )
    stamp = now()
    db.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)",
        [
            (f"C{i:07d}", f"Customer {i}", f"City {i % 97}", "A" if i % 5 else "I", i * 1.5, stamp)
            for i in range(rows)
        ],
    )
    db.commit()
    db.close()


def change(path: Path, count: int) -> None:
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE customers SET name = name || ' (changed)', last_modified = ? WHERE rowid IN "
        "(SELECT rowid FROM customers ORDER BY random() LIMIT ?)",
        (now(), count),
    )
    db.commit()
    db.close()


def calls(base: str) -> list[dict[str, object]]:
    """The sandbox's log of counted requests (the start-up canary is not counted)."""
    log: list[dict[str, object]] = httpx.get(f"{base}/_sandbox/requests", timeout=30).json()
    return [r for r in log if r["counted"] or r["status"] == 429]


def one(rows: int, budget: str | None, opts: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mapsync-bench-rest-") as tmp:
        folder = Path(tmp)
        proc, base = start_sandbox(folder, budget, opts.contract)
        try:
            make_source(folder / "src.db", rows)
            limits = f'["{budget}"]' if budget else "[]"
            sheet = SHEET.format(
                src=folder / "src.db",
                base=base,
                budget=limits,
                mode=opts.mode,
                async_batch=opts.async_batch,
                poll=opts.poll,
                contract=opts.contract,
                batch=opts.batch,
            )
            (folder / "sheet.yaml").write_text(sheet)
            loaded = loader.load(folder / "sheet.yaml")
            store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
            engine = Engine(loaded, store)
            try:
                started = time.perf_counter()
                report = engine.run("accounts", "seed")
                seed_s = time.perf_counter() - started
                assert report.status == "success" and report.counts.written == rows, report
                seed_calls = len(calls(base))
                changed = max(1, rows // 100)
                time.sleep(0.01)
                change(folder / "src.db", changed)
                started = time.perf_counter()
                report = engine.run("accounts", "run")
                run_s = time.perf_counter() - started
                assert report.status == "success" and report.counts.written == changed, report
                run_calls = len(calls(base)) - seed_calls
            finally:
                engine.close()
                store.close()
            log = calls(base)
            statuses = [r["status"] for r in log]
            submits = sum(
                1 for r in log[:seed_calls] if r["method"] == "POST" and r["path"] != "authenticate"
            )
            return {
                "seed_s": seed_s,
                "seed_calls": seed_calls,
                "records_per_s": rows / seed_s,
                "run_s": run_s,
                "run_calls": run_calls,
                "changed": changed,
                "http_429": statuses.count(429),
                "seed_submits": submits,
            }
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--budget", default=None, help="client and sandbox call limit, e.g. 20/3s")
    parser.add_argument("--mode", choices=["sync", "async"], default="sync", help="delivery of the seed")
    parser.add_argument("--contract", choices=["none", "jobs"], default="none", help="sandbox async contract")
    parser.add_argument("--async-batch", type=int, default=500, help="records per queued submit")
    parser.add_argument("--batch", type=int, default=500, help="records per read page (and per write)")
    parser.add_argument("--poll", default="100ms", help="first wait before a poll / read-back")
    args = parser.parse_args()
    results = [one(args.rows, args.budget, args) for _ in range(args.repeat)]
    rate = statistics.median(r["records_per_s"] for r in results)
    first = results[0]
    print(f"rows={args.rows} budget={args.budget or 'off'} repeat={args.repeat} seed mode={args.mode}")
    if args.mode == "async":
        print(
            f"async seed ({args.contract}, batches of {args.async_batch}): median {rate:,.0f} records/s; "
            f"calls {first['seed_calls']:.0f} of which submits {first['seed_submits']:.0f} "
            f"(⌈N/{args.async_batch}⌉ = {math.ceil(args.rows / args.async_batch)}); "
            f"seconds {[round(r['seed_s'], 2) for r in results]}"
        )
    else:
        print(
            f"seed: median {rate:,.0f} records/s; calls {first['seed_calls']:.0f} "
            f"(⌈N/10⌉ + token = {math.ceil(args.rows / 10) + 1}); "
            f"seconds {[round(r['seed_s'], 2) for r in results]}"
        )
    print(
        f"run of {first['changed']:.0f} changes: {[round(r['run_s'], 3) for r in results]} s, "
        f"calls {first['run_calls']:.0f}"
    )
    print(f"429 answers: {sum(r['http_429'] for r in results):.0f}")
    if args.budget:
        count, _, window = args.budget.partition("/")
        from mapsync.sheet.duration import parse_duration

        span = parse_duration(window).total_seconds()
        bound = (first["seed_calls"] - 1) // int(count) * span
        print(
            f"budget bound for the seed's {first['seed_calls']:.0f} calls: {bound:.1f} s; "
            f"measured {first['seed_s']:.2f} s ({first['seed_s'] / bound - 1:+.1%})"
            if bound
            else ""
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
