"""Seed benchmark: SQLite `customers` → PostgreSQL, mapsync against a hand-written COPY.

    .venv/bin/python bench/seed.py                       # 1,000,000 rows, median of 3
    .venv/bin/python bench/seed.py --rows 10000 --repeat 1   # the CI smoke
    .venv/bin/python bench/seed.py --records             # + mapsync's per-record path

mapsync seeds through the Engine API (the same code path as `mapsync seed`) from a generated
sheet with renames, a value map, a truncation and a constant (its columnar path, the default;
`--records` adds the per-record path, `delivery.columnar: false`, as a third side). The
baseline reads the same rows
with sqlite3 `fetchmany`, applies the same mapping inline and COPYs them with psycopg 3 in one
transaction into an identical empty table (same primary key). Each side runs in its own
subprocess, so its peak RSS (`ru_maxrss`) is its own. Exit status: 0 (also when a target is
MISSED), nonzero on errors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

TARGET_RATIO = 0.75  # issue 20: >= 75 % of the hand-written COPY baseline (goal: >= 100 %)
TARGET_RSS_MB = 150.0


# --------------------------------------------------------------------------- workers


def worker_mapsync(args: argparse.Namespace) -> None:
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore

    folder = Path(args.folder)
    columnar = args.worker != "records"
    sheet = common.write_sheet(folder, Path(args.source), args.url, args.table, args.batch, columnar=columnar)
    loaded = loader.load(sheet)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    engine = Engine(loaded, store)
    rss_ready = common.peak_rss_mb()
    profiler: Any = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu, started = common.cpu_seconds(), time.perf_counter()
    report = engine.run("customers", "seed")
    seconds, cpu = time.perf_counter() - started, common.cpu_seconds() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    engine.close()
    store.close()
    if not report.ok or report.counts.written != args.rows:
        raise SystemExit(f"mapsync seed: {report.status} {report.counts} {report.message or ''}")
    common.emit_seed(seconds, cpu, report.counts.written, rss_ready, truncated=report.counts.truncated)


def worker_baseline(args: argparse.Namespace) -> None:
    import sqlite3

    rss_ready = common.peak_rss_mb()
    cpu, started = common.cpu_seconds(), time.perf_counter()
    src = sqlite3.connect(args.source)
    rows = 0
    with common.pg_connect(args.url) as conn, conn.cursor() as cur:
        read = src.execute(f"SELECT {common.SOURCE_SELECT} FROM customers ORDER BY id")
        with cur.copy(f"COPY {args.table} ({common.DEST_LIST}) FROM STDIN") as copy:
            while chunk := read.fetchmany(args.batch):
                common.copy_mapped(copy, chunk)
                rows += len(chunk)
        conn.commit()
    src.close()
    seconds, cpu = time.perf_counter() - started, common.cpu_seconds() - cpu
    common.emit_seed(seconds, cpu, rows, rss_ready)


# --------------------------------------------------------------------------- the driver


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="source rows (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; medians are reported")
    parser.add_argument(
        "--batch",
        type=int,
        default=common.DEFAULT_BATCH,
        help="delivery batch (sheet `delivery.batch`, also the baseline's fetchmany); "
        f"default {common.DEFAULT_BATCH}",
    )
    common.add_seed_arguments(parser)
    args = parser.parse_args()
    if args.worker in ("mapsync", "records"):
        worker_mapsync(args)
        return 0
    if args.worker == "baseline":
        worker_baseline(args)
        return 0
    if args.rows <= 0 or args.repeat <= 0 or args.batch <= 0:
        parser.error("--rows, --repeat and --batch must be positive")

    source = common.source_db(args.rows)
    sides = [args.only] if args.only else ["mapsync", *(["records"] if args.records else []), "baseline"]
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    print(
        f"seed benchmark: {args.rows:,} rows, batch {args.batch}, {args.repeat} run(s) per side; "
        f"{common.load_average()}",
        flush=True,
    )
    with common.ScratchDatabase("mapsync_bench_seed") as db, tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for side in sides if rep % 2 == 0 else list(reversed(sides)):
                table = f"customer_{side}"
                db.fresh_table(table)
                worker = [
                    "--worker", side, "--source", str(source), "--url", db.url, "--table", table,
                    "--batch", str(args.batch), "--rows", str(args.rows),
                    "--folder", str(Path(tmp) / f"{side}{rep}"),
                ]  # fmt: skip
                if side != "baseline" and args.profile and rep == args.repeat - 1:
                    worker += ["--profile", str(Path(args.profile).resolve())]
                result = common.run_worker(Path(__file__), worker)
                count = db.scalar(f"SELECT count(*) FROM {table}")
                if count != args.rows:
                    raise RuntimeError(f"{side}: {count} rows in {table}, expected {args.rows}")
                results[side].append(result)
                common.print_seed_run(rep, side, args.rows, result)
        same = None
        if "mapsync" in sides and "baseline" in sides:
            others = [s for s in sides if s != "mapsync"]
            same = all(db.differing_rows("customer_mapsync", f"customer_{s}") == 0 for s in others)
    return report(args, results, same)


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], same: bool | None) -> int:
    print(f"\nmedians of {args.repeat} run(s), {args.rows:,} rows, batch {args.batch}:")
    med = common.seed_medians(results, args.rows)
    if same is not None:
        print(f"  destination tables identical: {'yes' if same else 'NO'}")
    if same is False:
        print("ERROR: the sides wrote different rows", file=sys.stderr)
        return 1
    if "mapsync" in med and "records" in med:
        gain = med["records"]["seconds"] / med["mapsync"]["seconds"]
        print(f"  columnar path against the per-record path: {gain:.1f}x faster")
    missed = []
    if "mapsync" in med and "baseline" in med:
        ratio = med["baseline"]["seconds"] / med["mapsync"]["seconds"]
        ok = ratio >= TARGET_RATIO
        missed += [] if ok else ["throughput"]
        print(
            f"  throughput ratio mapsync/baseline: {ratio:.1%} "
            f"(target >= {TARGET_RATIO:.0%}): {'met' if ok else 'MISSED'}"
        )
    if "mapsync" in med:
        rss = med["mapsync"]["rss_mb"]
        ok = rss <= TARGET_RSS_MB
        missed += [] if ok else ["memory"]
        verdict = "met" if ok else "MISSED"
        print(f"  mapsync peak RSS: {rss:.1f} MB (target <= {TARGET_RSS_MB:.0f} MB): {verdict}")
    print(f"  {common.load_average()}")
    if missed:
        print(f"MISSED: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
