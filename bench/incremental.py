"""Incremental-run benchmark: after a seed of N rows, runs with 0 %, 0.1 %, 1 % and 10 % changed,
mapsync against a hand-written COPY → temp table → upsert loader on the same changed rows.

    .venv/bin/python bench/incremental.py                         # 1,000,000 rows, 5 runs per share
    .venv/bin/python bench/incremental.py --rows 10000 --repeat 1   # a smoke

A private copy of the cached SQLite source is seeded into a fresh PostgreSQL database through
the Engine API (watermark capture on `last_modified`, the mapping of bench/seed.py), and into a
second table of the same database by the seed baseline's sqlite3 → COPY (the script checks that
both hold the same rows). Between runs a random subset of rows gets a new `last_modified`, spread
over the time since the previous change (as real edits are), which changes the mapped
`updated_at` and so the row's hash. Then both sides load these rows, in alternating order:

- mapsync: `engine.run(sync, "run")`, in this process, after the imports and a warm-up run;
- baseline: one sqlite3 read of the rows past its watermark (`last_modified > previous`, up to
  now - lag), the same mapping inline, COPY into a temp table, one `INSERT … ON CONFLICT (key)
  DO UPDATE`, commit; its connections are open, its watermark is kept in memory.

After each pair the changed keys' rows of both tables must be equal (md5 of the ordered rows)
and carry the new `updated_at`; at the end the whole tables must be equal. Each run's line also
says how many source rows are stamped since the day before the previous change: on SQLite,
mapsync's watermark read converts each of them in Python (`SqlSource.ts_since`). Exit status: 0 (also
when a target is MISSED), nonzero on errors (a wrong row count, tables that differ).
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
from typing import Any

import common

SHARES = [0.0, 0.001, 0.01, 0.10]
TARGET_IDLE_S = 0.1  # a run with nothing to do
TARGET_ONE_PERCENT = 0.03  # of the seed time (the first target)
TARGET_RATIO = {0.01: 1.15, 0.10: 2.0}  # mapsync / baseline (issue 20)
LAG = dt.timedelta(seconds=1)  # the sheet's `lag`
STAMP = "%Y-%m-%d %H:%M:%S.%f"
TABLE, BASE_TABLE = "customer", "customer_baseline"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def change_rows(
    source: Path, rows: int, count: int, after: dt.datetime, rnd: random.Random
) -> tuple[dt.datetime, list[int]]:
    """Give `count` random rows a `last_modified` in (after, now - 1.5 lag); return the end
    and the changed ids."""
    end = _utcnow() - 1.5 * LAG
    if end <= after:
        time.sleep((after - end).total_seconds() + 0.05)
        end = _utcnow() - 1.5 * LAG
    if count == 0:
        return end, []
    span = int((end - after).total_seconds() * 1_000_000)
    ids = rnd.sample(range(1, rows + 1), count)
    stamps = sorted(rnd.randrange(1, span) for _ in ids)  # ascending: a later edit, a later time
    con = sqlite3.connect(source)
    with con:
        con.executemany(
            "UPDATE customers SET last_modified = ? WHERE id = ?",
            [
                ((after + dt.timedelta(microseconds=us)).strftime(STAMP), i)
                for us, i in zip(stamps, ids, strict=True)
            ],
        )
    con.close()
    return end, ids


def stamped_since(source: Path, moment: dt.datetime) -> int:
    """Source rows with `last_modified` on or after the date of `moment`: what mapsync's
    index-friendly prefilter on SQLite (`SqlSource.ts_since`, the day before the watermark)
    lets through to its per-row time conversion, in every run."""
    con = sqlite3.connect(source)
    count: int = con.execute(
        "SELECT count(*) FROM customers WHERE last_modified >= ?", (moment.date().isoformat(),)
    ).fetchone()[0]
    con.close()
    return count


class Baseline:
    """The hand-written incremental loader: sqlite3 → inline mapping → COPY → temp → upsert."""

    def __init__(self, source: Path, url: str, table: str, batch: int) -> None:
        self.src = sqlite3.connect(source)
        self.pg = common.pg_connect(url)
        self.batch = batch
        self.read_sql = (
            f"SELECT {common.SOURCE_SELECT} FROM customers "
            "WHERE last_modified > ? AND last_modified <= ? ORDER BY last_modified"
        )
        update = ", ".join(f"{d} = EXCLUDED.{d}" for d, _ in common.DEST_COLUMNS[1:])
        self.upsert_sql = (
            f"INSERT INTO {table} ({common.DEST_LIST}) SELECT {common.DEST_LIST} FROM stage "
            f"ON CONFLICT (customer_id) DO UPDATE SET {update}"
        )
        self.stage_sql = f"CREATE TEMP TABLE stage (LIKE {table}) ON COMMIT DROP"
        self.watermark: str = self.src.execute("SELECT max(last_modified) FROM customers").fetchone()[0]

    def run(self) -> tuple[int, int]:
        """Load the rows changed since the last run; return (rows read, rows upserted)."""
        upper = (_utcnow() - LAG).strftime(STAMP)
        read = self.src.execute(self.read_sql, (self.watermark, upper))
        chunk = read.fetchmany(self.batch)
        if not chunk:
            return 0, 0
        rows, mark = 0, self.watermark
        with self.pg.cursor() as cur:
            cur.execute(self.stage_sql)
            with cur.copy(f"COPY stage ({common.DEST_LIST}) FROM STDIN") as copy:
                while chunk:
                    common.copy_mapped(copy, chunk)
                    rows, mark = rows + len(chunk), chunk[-1][-1]
                    chunk = read.fetchmany(self.batch)
            cur.execute(self.upsert_sql)
            written = cur.rowcount
        self.pg.commit()
        self.watermark = mark  # only once the destination has the rows
        return rows, written

    def seed(self, table: str) -> None:
        """The seed baseline of bench/seed.py: every row, COPY straight into the empty table."""
        with self.pg.cursor() as cur:
            read = self.src.execute(f"SELECT {common.SOURCE_SELECT} FROM customers ORDER BY id")
            with cur.copy(f"COPY {table} ({common.DEST_LIST}) FROM STDIN") as copy:
                while chunk := read.fetchmany(self.batch):
                    common.copy_mapped(copy, chunk)
        self.pg.commit()

    def close(self) -> None:
        self.pg.close()
        self.src.close()


def check_changed(check: Any, ids: list[int], after: dt.datetime) -> None:
    """Both tables' rows of the changed keys: as many as changed, all with an `updated_at`
    of this change, and the same rows (md5 of the rows' text in key order)."""
    if not ids:
        return
    sums = {}
    for table in (TABLE, BASE_TABLE):
        sums[table] = check.execute(
            "SELECT count(*), count(*) FILTER (WHERE updated_at > %s), "
            "md5(string_agg(t::text, E'\\n' ORDER BY customer_id)) "
            f"FROM {table} t WHERE customer_id = ANY(%s)",
            (after, ids),
        ).fetchone()
        if sums[table][:2] != (len(ids), len(ids)):
            raise RuntimeError(f"{table}: {sums[table][:2]} of {len(ids)} changed rows present and new")
    if sums[TABLE] != sums[BASE_TABLE]:
        raise RuntimeError(f"the changed rows differ: mapsync {sums[TABLE]}, baseline {sums[BASE_TABLE]}")


def run_pair(
    engine: Any, baseline: Baseline, order: tuple[str, ...], count: int, profiler: cProfile.Profile | None
) -> dict[str, tuple[float, float]]:
    """Both sides load the `count` changed rows, in `order`: {side: (seconds, client CPU seconds)}."""
    took = {}
    for side in order:
        cpu, began = common.cpu_seconds(), time.perf_counter()
        if side == "mapsync":
            if profiler is not None:
                profiler.enable()
            report = engine.run("customers", "run")
            seconds = time.perf_counter() - began
            if profiler is not None:
                profiler.disable()
            if not report.ok or report.counts.written != count:
                problem = f"{report.status} {report.counts} {report.message or ''}"
                raise RuntimeError(f"mapsync run with {count} changes: {problem}")
        else:
            done = baseline.run()
            seconds = time.perf_counter() - began
            if done != (count, count):
                raise RuntimeError(f"baseline with {count} changes: read and wrote {done}")
        took[side] = (seconds, common.cpu_seconds() - cpu)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="seeded rows (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per share and side; medians")
    parser.add_argument(
        "--batch",
        type=int,
        default=common.DEFAULT_BATCH,
        help=f"delivery batch, also the baseline's fetchmany (default {common.DEFAULT_BATCH})",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile mapsync's timed runs into FILE")
    args = parser.parse_args()
    if args.rows <= 0 or args.repeat <= 0 or args.batch <= 0:
        parser.error("--rows, --repeat and --batch must be positive")

    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore

    rnd = random.Random(7)
    print(
        f"incremental benchmark: {args.rows:,} rows, batch {args.batch}, {args.repeat} run(s) per share "
        f"and side; {common.load_average()}",
        flush=True,
    )
    sides = ("mapsync", "baseline")
    times: dict[str, dict[float, list[float]]] = {s: {sh: [] for sh in SHARES} for s in sides}
    cpus: dict[str, dict[float, list[float]]] = {s: {sh: [] for sh in SHARES} for s in sides}
    with common.ScratchDatabase("mapsync_bench_incr") as db, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = common.copy_source(args.rows, folder / "source.sqlite")
        db.fresh_table(TABLE)
        db.fresh_table(BASE_TABLE)
        sheet = common.write_sheet(folder, source, db.url, TABLE, args.batch, lag=f"{LAG.total_seconds():g}s")
        loaded = loader.load(sheet)
        store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
        engine = Engine(loaded, store)
        baseline = Baseline(source, db.url, BASE_TABLE, args.batch)
        check = common.pg_connect(db.url, autocommit=True)
        try:
            started = time.perf_counter()
            seed = engine.run("customers", "seed")
            seed_s = time.perf_counter() - started
            if not seed.ok or seed.counts.written != args.rows:
                raise RuntimeError(f"seed: {seed.status} {seed.counts} {seed.message or ''}")
            started = time.perf_counter()
            baseline.seed(BASE_TABLE)
            base_seed_s = time.perf_counter() - started
            print(
                f"  seed: mapsync {seed_s:.2f} s ({args.rows / seed_s:,.0f} rows/s), "
                f"baseline {base_seed_s:.2f} s",
                flush=True,
            )
            if (diff := db.differing_rows(TABLE, BASE_TABLE)) != 0:
                raise RuntimeError(f"the seeded tables differ in {diff} rows")
            # both tables alike on disk: visibility map and hint bits set, statistics, a checkpoint
            db.execute(f"VACUUM (ANALYZE) {TABLE}", f"VACUUM (ANALYZE) {BASE_TABLE}", "CHECKPOINT")
            warm = engine.run("customers", "run")  # connections, catalog, first watermark
            if not warm.ok:
                raise RuntimeError(f"warm-up run: {warm.status} {warm.message or ''}")
            baseline.run()
            after = _utcnow() - LAG
            profiler = cProfile.Profile() if args.profile else None
            print(f"  timed runs from here; {common.load_average()}", flush=True)
            for rep in range(args.repeat):
                for share in SHARES:
                    count = round(args.rows * share)
                    previous = after
                    after, ids = change_rows(source, args.rows, count, after, rnd)
                    since = stamped_since(source, previous - dt.timedelta(days=1))
                    order = sides if rep % 2 == 0 else sides[::-1]
                    took = run_pair(engine, baseline, order, count, profiler)
                    for side, (seconds, cpu) in took.items():
                        times[side][share].append(seconds)
                        cpus[side][share].append(cpu)
                    check_changed(check, ids, previous)
                    m, b = took["mapsync"][0], took["baseline"][0]
                    print(
                        f"  run {rep + 1} {share:6.1%} changed ({count:>7,} rows): mapsync {m:8.3f} s"
                        f"  baseline {b:8.4f} s  ratio {m / b:6.2f}  ({order[0]} first; rows equal; "
                        f"{since:,} stamped since yesterday)",
                        flush=True,
                    )
            if profiler is not None:
                profiler.dump_stats(args.profile)
            if (total := db.scalar(f"SELECT count(*) FROM {TABLE}")) != args.rows:
                raise RuntimeError(f"{total} rows in the destination, expected {args.rows}")
            if (diff := db.differing_rows(TABLE, BASE_TABLE)) != 0:
                raise RuntimeError(f"mapsync's and the baseline's tables differ in {diff} rows")
        finally:
            check.close()
            baseline.close()
            engine.close()
            store.close()
    return report(args, seed_s, times, cpus)


def report(
    args: argparse.Namespace,
    seed_s: float,
    times: dict[str, dict[float, list[float]]],
    cpus: dict[str, dict[float, list[float]]],
) -> int:
    med = {side: {sh: common.median(v) for sh, v in by.items()} for side, by in times.items()}
    cpu = {side: {sh: common.median(v) for sh, v in by.items()} for side, by in cpus.items()}
    print(
        f"\nmedians of {args.repeat} run(s) per side after a seed of {args.rows:,} rows ({seed_s:.2f} s); "
        "tables equal after every run:"
    )
    head = ["changed", "rows", "mapsync", "(CPU)", "baseline", "(CPU)", "ratio"]
    print("  " + " ".join(f"{h:>9}" for h in head) + "   spread (min–max)")
    for share in SHARES:
        m, b = med["mapsync"][share], med["baseline"][share]
        spread = "  ".join(f"{s} {min(times[s][share]):.4f}–{max(times[s][share]):.4f}" for s in med)
        print(
            f"  {share:9.1%} {round(args.rows * share):>9,} {m:8.4f}s {cpu['mapsync'][share]:8.3f}s "
            f"{b:8.4f}s {cpu['baseline'][share]:8.3f}s {m / b:8.2f}×   {spread}"
        )
    missed = []
    idle = med["mapsync"][0.0]
    ok = idle <= TARGET_IDLE_S
    missed += [] if ok else ["idle run"]
    print(f"  0 changes: {idle:.3f} s (target <= {TARGET_IDLE_S} s): {'met' if ok else 'MISSED'}")
    for share, target in TARGET_RATIO.items():
        m, b = med["mapsync"][share], med["baseline"][share]
        ok = m <= target * b
        missed += [] if ok else [f"{share * 100:g} % vs baseline"]
        print(
            f"  {share * 100:g} % changed: mapsync {m:.3f} s = {m / b:.2f} × the baseline's {b:.3f} s "
            f"(target <= {target:g} ×): {'met' if ok else 'MISSED'}"
        )
    one = med["mapsync"][0.01]
    ok = one <= TARGET_ONE_PERCENT * seed_s
    missed += [] if ok else ["1 % of the seed"]
    print(
        f"  1 % changed: {one:.3f} s = {one / seed_s:.2%} of the seed "
        f"(first target <= {TARGET_ONE_PERCENT:.0%}): {'met' if ok else 'MISSED'}"
    )
    print(f"  peak RSS of this process: {common.peak_rss_mb():.1f} MB; {common.load_average()}")
    if missed:
        print(f"MISSED: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
