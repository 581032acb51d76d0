"""Incremental-run benchmark: after a seed of N rows, runs with 0 %, 0.1 %, 1 % and 10 % changed.

    .venv/bin/python bench/incremental.py                         # 1,000,000 rows, 3 runs per share
    .venv/bin/python bench/incremental.py --rows 10000 --repeat 1   # a smoke

A private copy of the cached SQLite source is seeded into a fresh PostgreSQL database through
the Engine API (watermark capture on `last_modified`, the mapping of bench/seed.py). Between
runs a random subset of rows gets a new `last_modified`, spread over the time since the previous
change (as real edits are), which changes the mapped `updated_at` and so the row's hash. Only
`engine.run(sync, "run")` is timed, in this process, after the imports, a warm-up run and the
source change. Exit status: 0 (also when a target is MISSED), nonzero on errors.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import common

SHARES = [0.0, 0.001, 0.01, 0.10]
TARGET_IDLE_S = 0.1  # a run with nothing to do
TARGET_ONE_PERCENT = 0.03  # of the seed time
LAG = dt.timedelta(seconds=1)  # the sheet's `lag`


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def change_rows(source: Path, rows: int, count: int, after: dt.datetime, rnd: random.Random) -> dt.datetime:
    """Give `count` random rows a `last_modified` in (after, now - 1.5 lag); return the end."""
    end = _utcnow() - 1.5 * LAG
    if end <= after:
        time.sleep((after - end).total_seconds() + 0.05)
        end = _utcnow() - 1.5 * LAG
    if count == 0:
        return end
    span = int((end - after).total_seconds() * 1_000_000)
    ids = rnd.sample(range(1, rows + 1), count)
    stamps = sorted(rnd.randrange(1, span) for _ in ids)  # ascending: a later edit, a later time
    con = sqlite3.connect(source)
    with con:
        con.executemany(
            "UPDATE customers SET last_modified = ? WHERE id = ?",
            [
                ((after + dt.timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S.%f"), i)
                for us, i in zip(stamps, ids, strict=True)
            ],
        )
    con.close()
    return end


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="seeded rows (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per share; medians are reported")
    parser.add_argument(
        "--batch",
        type=int,
        default=common.DEFAULT_BATCH,
        help=f"delivery batch (default {common.DEFAULT_BATCH})",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the timed runs into FILE")
    args = parser.parse_args()
    if args.rows <= 0 or args.repeat <= 0 or args.batch <= 0:
        parser.error("--rows, --repeat and --batch must be positive")

    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore

    rnd = random.Random(7)
    print(
        f"incremental benchmark: {args.rows:,} rows, batch {args.batch}, {args.repeat} run(s) per share; "
        f"{common.load_average()}",
        flush=True,
    )
    with common.ScratchDatabase("mapsync_bench_incr") as db, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = common.copy_source(args.rows, folder / "source.sqlite")
        table = "customer"
        db.fresh_table(table)
        sheet = common.write_sheet(folder, source, db.url, table, args.batch, lag=f"{LAG.total_seconds():g}s")
        loaded = loader.load(sheet)
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
        engine = Engine(loaded, store)
        try:
            started = time.perf_counter()
            seed = engine.run("customers", "seed")
            seed_s = time.perf_counter() - started
            if not seed.ok or seed.counts.written != args.rows:
                raise RuntimeError(f"seed: {seed.status} {seed.counts} {seed.message or ''}")
            print(f"  seed: {seed_s:.2f} s ({args.rows / seed_s:,.0f} rows/s)", flush=True)
            warm = engine.run("customers", "run")  # connections, catalog, first watermark
            if not warm.ok:
                raise RuntimeError(f"warm-up run: {warm.status} {warm.message or ''}")
            after = _utcnow() - LAG
            times: dict[float, list[float]] = {s: [] for s in SHARES}
            profiler = cProfile.Profile() if args.profile else None
            for rep in range(args.repeat):
                for share in SHARES:
                    count = round(args.rows * share)
                    after = change_rows(source, args.rows, count, after, rnd)
                    if profiler is not None:
                        profiler.enable()
                    began = time.perf_counter()
                    report = engine.run("customers", "run")
                    seconds = time.perf_counter() - began
                    if profiler is not None:
                        profiler.disable()
                    if not report.ok or report.counts.written != count:
                        problem = f"{report.status} {report.counts} {report.message or ''}"
                        raise RuntimeError(f"run with {count} changes: {problem}")
                    times[share].append(seconds)
                    print(
                        f"  run {rep + 1} {share:6.1%} changed ({count:>7,} rows): {seconds:8.3f} s "
                        f"(read {report.counts.read:,}, written {report.counts.written:,})",
                        flush=True,
                    )
            if profiler is not None:
                profiler.dump_stats(args.profile)
            total = db.scalar(f"SELECT count(*) FROM {table}")
            if total != args.rows:
                raise RuntimeError(f"{total} rows in the destination, expected {args.rows}")
        finally:
            engine.close()
            store.close()
    rss = common.peak_rss_mb()

    print(f"\nmedians of {args.repeat} run(s) after a seed of {args.rows:,} rows ({seed_s:.2f} s):")
    for share in SHARES:
        print(f"  {share:6.1%} changed: {common.median(times[share]):8.3f} s")
    idle = common.median(times[0.0])
    one = common.median(times[0.01])
    missed = []
    verdict = "met" if idle <= TARGET_IDLE_S else "MISSED"
    missed += [] if idle <= TARGET_IDLE_S else ["idle run"]
    print(f"  0 changes: {idle:.3f} s (target <= {TARGET_IDLE_S} s): {verdict}")
    ok = one <= TARGET_ONE_PERCENT * seed_s
    missed += [] if ok else ["1 % run"]
    print(
        f"  1 % changed: {one:.3f} s = {one / seed_s:.2%} of the seed "
        f"(target <= {TARGET_ONE_PERCENT:.0%}): {'met' if ok else 'MISSED'}"
    )
    print(f"  peak RSS of this process: {rss:.1f} MB; {common.load_average()}")
    if missed:
        print(f"MISSED: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
