"""The cost of watching (issue 15): one evaluation of every monitor over N syncs.

    .venv/bin/python bench/watch.py                    # 10, 100 and 500 syncs, 200 runs of history each
    .venv/bin/python bench/watch.py --syncs 10 --runs 50   # smoke (seconds)

A PostgreSQL state store (a scratch database) holds N watermark syncs' history: `--runs` finished
runs each (every 60 s, some late, some failed, some with rejections), their watermark cursors,
and a few open record errors. Their source is one PostgreSQL database with a small table per sync
(200 rows), their destination a SQLite file (never written: only the monitors run). The sheet gives
every sync `schedule: {every: 60s, start_within: 10s, finish_within: 30s}`.

Measured, each as the median of `--repeat` evaluations after one warm-up (connections open):

- **watch**: `watch.evaluate(loaded, store, names)`, every monitor of every sync and the sheet's,
  incidents reconciled (raised the first time, refreshed after): what the daemon's monitors chore
  does each minute.
- **floor** (the baseline, same run): one `store.history.runs(sync, 50)` per sync, the least any
  run-based monitor must read. The ratio says how much of the evaluation is more than that.
- **share of the minute**: watch / 60 s, the chore's interval (one daemon evaluates for all).

The databases are named bench_<pid>_… and dropped at the end. Results: docs/performance.md,
"Watching".
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mapsync import watch, watch_sources
from mapsync.sheet.loader import load
from mapsync.state import schema
from mapsync.state.clock import stamp
from mapsync.state.store import StateStore

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _db(name: str) -> str:
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _drop(name: str) -> None:
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _sheet(folder: Path, state: str, source: str, n: int) -> Path:
    syncs = "\n".join(
        f"""  s{i}:
    from: {{connection: erp, table: t{i}}}
    to: {{connection: portal, table: d{i}}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: changed_at}}
    schedule: {{every: 60s, start_within: 10s, finish_within: 30s}}"""
        for i in range(n)
    )
    path = folder / "sheet.yaml"
    path.write_text(
        f"""version: 1
state: {{url: "{state}", lease_ttl: 60s}}
connections:
  erp: {{url: "{source}"}}
  portal: {{url: "sqlite:///portal.db"}}
syncs:
{syncs}
""",
        encoding="utf-8",
    )
    return path


def _fill_source(url: str, n: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for i in range(n):
            conn.exec_driver_sql(f"CREATE TABLE t{i} (id INT PRIMARY KEY, name TEXT, changed_at TIMESTAMPTZ)")
            conn.exec_driver_sql(
                f"INSERT INTO t{i} SELECT g, 'n' || g, now() - (g || ' minutes')::interval "
                "FROM generate_series(1, 200) g"
            )
    engine.dispose()


def _fill_history(store: StateStore, n: int, runs: int) -> None:
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        for r in range(runs):
            at = now - dt.timedelta(minutes=runs - r)
            late = 15_000 if r % 17 == 0 else 300
            took = dt.timedelta(seconds=40 if r % 23 == 0 else 2)
            failed = r % 29 == 0
            rows.append(
                {
                    "sync": f"s{i}",
                    "kind": "run",
                    "trigger": "schedule",
                    "scheduled_at": stamp(at),
                    "started_at": stamp(at + dt.timedelta(milliseconds=late)),
                    "finished_at": stamp(at + dt.timedelta(milliseconds=late) + took),
                    "status": "failed" if failed else "success",
                    "failure_class": "source" if failed else None,
                    "message": "source unreachable" if failed else None,
                    "lease_token": uuid.uuid4().hex,
                    "read": 100,
                    "written": 95 if r % 13 else 90,
                    "skipped": 5,
                    "rejected": 0 if r % 13 else 5,
                    "slot": "run",
                    "lateness_ms": late,
                    "worker": "bench:1",
                }
            )
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(schema.runs), rows[start : start + 5000])
    for i in range(n):
        store.set_cursors(f"s{i}", {"watermark": {"changed_at": now - dt.timedelta(minutes=1), "id": 1}})


def _median(fn: Any, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(n: int, runs: int, repeat: int) -> dict[str, float]:
    tag = f"bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    made = [f"{tag}_state", f"{tag}_src"]
    try:
        state, source = _db(made[0]), _db(made[1])
        _fill_source(source, n)
        with tempfile.TemporaryDirectory() as tmp:
            path = _sheet(Path(tmp), state, source, n)
            loaded = load(path)
            store = StateStore.open(state, Path(tmp), create=True)
            _fill_history(store, n, runs)
            names = list(loaded.sheet.syncs)
            handles: dict[str, Any] = {}
            try:
                took = _median(
                    lambda: watch.evaluate(loaded, store, names, handles=handles, quiet=True), repeat
                )
                floor = _median(lambda: [store.history.runs(s, 50) for s in names], repeat)
            finally:
                watch_sources.release(handles)
                store.close()
        return {"syncs": n, "watch_s": took, "floor_s": floor}
    finally:
        for name in made:
            _drop(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, action="append", help="sync counts (repeatable)")
    parser.add_argument("--runs", type=int, default=200, help="finished runs of history per sync")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'syncs':>6} {'watch s':>9} {'ms/sync':>8} {'floor s':>9} {'ratio':>6} {'share of 60 s':>14}")
    for n in args.syncs or [10, 100, 500]:
        r = measure(n, args.runs, args.repeat)
        print(
            f"{n:>6} {r['watch_s']:>9.3f} {r['watch_s'] / n * 1000:>8.1f} {r['floor_s']:>9.3f} "
            f"{r['watch_s'] / max(r['floor_s'], 1e-9):>6.1f} {r['watch_s'] / 60:>13.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
