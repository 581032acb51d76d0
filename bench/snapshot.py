"""Snapshot-diff benchmark: after a seed of N rows, 1 % of the rows change (a third each new,
updated and deleted); one snapshot `run` finds and delivers them. Compared with a full reload
(`seed --again`: every row read, mapped and checked against the ledger) of the same table.

    .venv/bin/python bench/snapshot.py                        # 1,000,000 rows, 1 run each
    .venv/bin/python bench/snapshot.py --rows 10000           # a smoke
    .venv/bin/python bench/snapshot.py --source postgresql    # the source table in PostgreSQL

A private copy of the cached SQLite source goes into a fresh PostgreSQL database (the mapping of
bench/seed.py, `changes: {method: snapshot}`, `deletes: {policy: hard}`). With `--source
postgresql` the same rows are first copied into a table of a second scratch PostgreSQL database,
which is then the source (and where the changes are made); the snapshot's row fingerprints are
then computed by that server (`md5(ROW(…)::text)`, capture/keysource.py). Each timed operation
runs in its own subprocess (`--worker`), timed after the imports, the sheet and the state store,
so its peak RSS is its own. Each run checks its counts (written = inserted + updated, deleted)
and the destination's row count. Exit status: 0 (also when a target is MISSED), nonzero on errors.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

SHARE = 0.01
TARGET_S = 3.0  # issue 20: 1 % changed of 1,000,000 rows in 3 s or less (it was 4.75 s)
TARGET_RSS_MB = 150.0


def snapshot_sheet(
    folder: Path, source: Path, dest_url: str, table: str, batch: int, source_url: str | None = None
) -> Path:
    """bench/common.py's sheet with snapshot capture and hard deletes (`source_url`: the source
    connection's URL instead of the SQLite file's)."""
    path = common.write_sheet(folder, source, dest_url, table, batch)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [line for line in lines if line.startswith("#")]
    sheet = json.loads("\n".join(line for line in lines if not line.startswith("#")))
    if source_url is not None:
        sheet["connections"]["erp"]["url"] = source_url
    sync = sheet["syncs"]["customers"]
    sync["changes"] = {"method": "snapshot"}
    sync["deletes"] = {"policy": "hard"}
    path.write_text("\n".join(header) + "\n" + json.dumps(sheet, indent=2, ensure_ascii=False) + "\n")
    return path


def pg_source(source: Path, url: str) -> None:
    """The SQLite source's rows COPYed into a `customers` table of the database at `url`."""
    ddl = common.SOURCE_DDL.replace("id INTEGER PRIMARY KEY", "id BIGINT PRIMARY KEY")
    columns = ", ".join(common.SOURCE_COLUMNS)
    lite = sqlite3.connect(source)
    with common.pg_connect(url) as conn:
        conn.execute(ddl)
        with conn.cursor().copy(f"COPY customers ({columns}) FROM STDIN") as copy:
            cursor = lite.execute(f"SELECT {columns} FROM customers ORDER BY id")
            while chunk := cursor.fetchmany(10_000):
                for row in chunk:
                    copy.write_row(row)
        conn.execute("ANALYZE customers")
    lite.close()


def change_rows(source: Path | str, count: int, rnd: random.Random) -> dict[str, int]:
    """`count` changes: a third new rows (ids above `rows`), a third updated, a third deleted;
    `source` is the SQLite file or the URL of the PostgreSQL source."""
    inserts = count // 3
    deletes = count // 3
    updates = count - inserts - deletes
    postgres = isinstance(source, str)
    con: Any = common.pg_connect(source) if postgres else sqlite3.connect(source)
    mark = "%s" if postgres else "?"
    ids = [i for (i,) in con.execute("SELECT id FROM customers").fetchall()]  # deleted ones are gone
    picked = rnd.sample(ids, updates + deletes)
    del ids
    next_id = con.execute("SELECT max(id) FROM customers").fetchone()[0] + 1
    cur = con.cursor()
    cur.executemany(
        f"UPDATE customers SET city = city || ' Nord', street = 'Ringstraße ' || {mark} WHERE id = {mark}",
        [(str(i % 97), i) for i in picked[:updates]],
    )
    cur.executemany(f"DELETE FROM customers WHERE id = {mark}", [(i,) for i in picked[updates:]])
    new = list(common._rows(inserts, seed=rnd.randrange(1 << 30)))
    marks = ",".join([mark] * len(common.SOURCE_COLUMNS))
    cur.executemany(
        f"INSERT INTO customers VALUES ({marks})",
        [(next_id + n, *row[1:]) for n, row in enumerate(new)],
    )
    con.commit()
    con.close()
    return {"inserted": inserts, "updated": updates, "deleted": deletes}


# --------------------------------------------------------------------------- the worker


def worker(sheet: Path, op: str, profile: str | None) -> int:
    """One timed operation in this process: `seed`, `run` (snapshot diff) or `reload`."""
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore

    loaded = loader.load(sheet)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=op == "seed")
    engine = Engine(loaded, store)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        cpu = common.cpu_seconds()
        began = time.perf_counter()
        if op == "run":
            report = engine.run("customers", "run")
        else:
            report = engine.run("customers", "seed", again=op == "reload")
        seconds = time.perf_counter() - began
        cpu = common.cpu_seconds() - cpu
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)  # type: ignore[arg-type]
        engine.close()
        store.close()
    if not report.ok:
        raise RuntimeError(f"{op}: {report.status} {report.message or ''} {report.counts}")
    c = report.counts
    common.emit(
        {
            "seconds": seconds,
            "cpu": cpu,
            "rss_mb": common.peak_rss_mb(),
            "read": c.read,
            "written": c.written,
            "deleted": c.deleted,
            "skipped": c.skipped,
        }
    )
    return 0


def _fmt(result: dict[str, Any]) -> str:
    return f"{result['seconds']:.2f} s (client CPU {result['cpu']:.2f} s), peak RSS {result['rss_mb']:.0f} MB"


def _run(sheet: Path, op: str, profile: str | None = None) -> dict[str, Any]:
    args = ["--worker", op, "--sheet", str(sheet)] + (["--profile", profile] if profile else [])
    return common.run_worker(Path(__file__).resolve(), args)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="seeded rows (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=1, help="changed-and-diffed rounds (medians reported)")
    parser.add_argument(
        "--batch",
        type=int,
        default=common.DEFAULT_BATCH,
        help=f"delivery batch (default {common.DEFAULT_BATCH})",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the last snapshot run into FILE")
    parser.add_argument(
        "--source",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="where the source table lives (default: the SQLite file)",
    )
    parser.add_argument("--worker", choices=["seed", "run", "reload"], help=argparse.SUPPRESS)
    parser.add_argument("--sheet", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.sheet, args.worker, args.profile)
    if args.rows <= 0 or args.repeat <= 0 or args.batch <= 0:
        parser.error("--rows, --repeat and --batch must be positive")

    rnd = random.Random(11)
    print(
        f"snapshot benchmark: {args.rows:,} rows, {SHARE:.0%} changed, batch {args.batch}, "
        f"{args.source} source; "
        f"{common.load_average()}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    reloads: list[dict[str, Any]] = []
    with (
        common.ScratchDatabase("mapsync_bench_snap") as db,
        common.ScratchDatabase("mapsync_bench_snap_src") as src_db,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder = Path(tmp)
        source: Path | str = common.copy_source(args.rows, folder / "source.sqlite")
        source_url = None
        if args.source == "postgresql":
            assert isinstance(source, Path)
            pg_source(source, src_db.url)
            source = source_url = src_db.url
        table = "customer"
        db.fresh_table(table)
        sheet = snapshot_sheet(folder, Path(folder / "source.sqlite"), db.url, table, args.batch, source_url)
        seed = _run(sheet, "seed")
        print(f"  seed: {_fmt(seed)}", flush=True)
        idle = _run(sheet, "run")
        if idle["read"] or idle["written"] or idle["deleted"]:
            raise RuntimeError(f"a run right after the seed changed something: {idle}")
        print(f"  run, nothing changed: {_fmt(idle)}", flush=True)
        expected = args.rows
        for rep in range(args.repeat):
            planted = change_rows(source, max(3, round(args.rows * SHARE)), rnd)
            expected += planted["inserted"] - planted["deleted"]
            last = rep == args.repeat - 1
            result = _run(sheet, "run", args.profile if last else None)
            want = (planted["inserted"] + planted["updated"], planted["deleted"])
            if (result["written"], result["deleted"]) != want:
                raise RuntimeError(f"snapshot run: written/deleted {result}, expected {want} ({planted})")
            runs.append(result)
            print(
                f"  run {rep + 1}: {_fmt(result)} "
                f"({planted['inserted']:,} inserted, {planted['updated']:,} updated, "
                f"{planted['deleted']:,} deleted; read {result['read']:,})",
                flush=True,
            )
            if not last:
                continue
            reload = _run(sheet, "reload")  # once: it takes long and varies little
            reloads.append(reload)
            print(
                f"  full reload (seed --again): {_fmt(reload)} "
                f"(read {reload['read']:,}, written {reload['written']:,})",
                flush=True,
            )
        total = db.scalar(f"SELECT count(*) FROM {table}")
        if total != expected:
            raise RuntimeError(f"{total} rows in the destination, expected {expected}")

    run_s = common.median([r["seconds"] for r in runs])
    run_cpu = common.median([r["cpu"] for r in runs])
    run_mb = max(r["rss_mb"] for r in runs)
    reload_s = common.median([r["seconds"] for r in reloads])
    reload_mb = max(r["rss_mb"] for r in reloads)
    print(f"\n{args.rows:,} rows, {SHARE:.0%} changed, median of {args.repeat}:")
    print(f"  snapshot diff: {run_s:.2f} s (client CPU {run_cpu:.2f} s), peak RSS {run_mb:.0f} MB")
    print(
        f"  full reload:   {reload_s:.2f} s, peak RSS {reload_mb:.0f} MB ({reload_s / run_s:.1f}x the time)"
    )
    missed = []
    for what, value, target, unit in (
        ("time", run_s, TARGET_S, "s"),
        ("peak RSS", run_mb, TARGET_RSS_MB, "MB"),
    ):
        ok = value <= target
        missed += [] if ok else [what]
        print(f"  {what}: {value:.2f} {unit} (target <= {target:g} {unit}): {'met' if ok else 'MISSED'}")
    print(f"  {common.load_average()}")
    if missed:
        print(f"MISSED: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
