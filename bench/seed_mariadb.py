"""Seed benchmark into MariaDB: SQLite `customers` → MariaDB, mapsync against a multi-row INSERT.

    .venv/bin/python bench/seed_mariadb.py                          # 1,000,000 rows, median of 3
    .venv/bin/python bench/seed_mariadb.py --rows 20000 --repeat 1  # smoke
    .venv/bin/python bench/seed_mariadb.py --records                # + mapsync's per-record path

`bench/seed.py` with a MariaDB destination. mapsync seeds through the Engine API (the same code
path as `mapsync seed`, `seed.worker_mapsync`) from the same generated sheet (renames, a value
map, a truncation, a constant); on MariaDB its columnar path maps, hashes and digests each
batch column-wise and writes it with a multi-row `INSERT … ON DUPLICATE KEY UPDATE`
(`--records` adds the per-record path, `delivery.columnar: false`, as a third side). The
baseline reads the same rows with sqlite3 `fetchmany`, applies the same mapping inline
(`common.mapped_rows`) and sends them with PyMySQL `executemany` of a plain `INSERT … VALUES`
(PyMySQL rewrites it into multi-row INSERTs of up to 1 MB each) in one transaction, into an
identical empty table. Neither side uses `LOAD DATA LOCAL INFILE`; both
connect with `local_infile` off. Each side runs in its own subprocess, so its peak RSS
(`ru_maxrss`) is its own. After the runs all tables must hold the same row count and the same
checksums (a CRC32 sum over all columns and `CHECKSUM TABLE`). There is no MariaDB target in
issue 20: the throughput ratio and peak RSS are printed beside the PostgreSQL seed targets
(`bench/seed.py`), for reference. Exit status: 0 (also when a reference target is MISSED),
nonzero on errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import common
import seed

MARIADB_URL = os.environ.get("MAPSYNC_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
# rows per `executemany` of the baseline (also its fetchmany). 1,000, 2,000, 5,000 and 10,000
# were within noise of each other at 50,000 rows (about 1.4 s, client CPU 0.8 s, either way).
# PyMySQL cuts each call into statements of at most 1 MB (`Cursor.max_stmt_length`), about
# 4,300 of these rows; 2,000 rows (about 470 KB) is one multi-row INSERT per call.
DEFAULT_INSERT_ROWS = 2_000


def connect_args(url: str, database: str | None = None) -> dict[str, Any]:
    """PyMySQL's keyword arguments for a `mysql://user:password@host:port/` URL."""
    parts = urllib.parse.urlsplit(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": urllib.parse.unquote(parts.username or "root"),
        "password": urllib.parse.unquote(parts.password or ""),
        "database": database,
        "charset": "utf8mb4",
        "local_infile": False,  # the server may otherwise ask the client for any file
    }


def dest_ddl(table: str) -> str:
    """`common.dest_ddl` in MariaDB: DATETIME(6) is PostgreSQL's TIMESTAMP (no zone, no
    session-zone conversion, no automatic defaults)."""
    ddl = common.dest_ddl(table).replace("TIMESTAMP(6)", "DATETIME(6)")
    return ddl.rstrip() + " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"


class ScratchMariaDB:
    """A uniquely named MariaDB database (`mapsync_bench_seed_<pid>`), created on enter and
    dropped on exit."""

    def __init__(self, url: str) -> None:
        self.name = f"mapsync_bench_seed_{os.getpid()}"
        parts = urllib.parse.urlsplit(url)
        self.admin_url = url
        self.url = urllib.parse.urlunsplit(parts._replace(path=f"/{self.name}"))

    def _connect(self, database: str | None) -> Any:
        import pymysql

        return pymysql.connect(**connect_args(self.admin_url, database), autocommit=True)

    def __enter__(self) -> ScratchMariaDB:
        with self._connect(None) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
        return self

    def __exit__(self, *exc: object) -> None:
        with self._connect(None) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")

    def query(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run `statements` in one connection; the rows of the last."""
        rows: list[tuple[Any, ...]] = []
        with self._connect(self.name) as conn, conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
                rows = list(cur.fetchall())
        return rows

    def fresh_table(self, table: str) -> None:
        self.query(f"DROP TABLE IF EXISTS {table}", dest_ddl(table))

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM {table}")[0][0])

    def checksums(self, table: str) -> tuple[int, int, int]:
        """Row count, the sum of each row's CRC32 over all columns (NULL marked, so a NULL and an
        empty text differ) and `CHECKSUM TABLE`."""
        cols = ", ".join(f"IFNULL({d}, '\\\\N')" for d, _ in common.DEST_COLUMNS)
        count, crc = self.query(f"SELECT COUNT(*), SUM(CRC32(CONCAT_WS(0x1f, {cols}))) FROM {table}")[0]
        (_, checksum), *_ = self.query(f"CHECKSUM TABLE {table} EXTENDED")
        return int(count), int(crc or 0), int(checksum or 0)


# --------------------------------------------------------------------------- workers


def worker_baseline(args: argparse.Namespace) -> None:
    import sqlite3

    import pymysql

    parts = urllib.parse.urlsplit(args.url)
    database = parts.path.lstrip("/")
    rss_ready = common.peak_rss_mb()
    cpu, started = common.cpu_seconds(), time.perf_counter()
    src = sqlite3.connect(args.source)
    rows = 0
    marks = ", ".join(["%s"] * len(common.DEST_COLUMNS))
    insert = f"INSERT INTO {args.table} ({common.DEST_LIST}) VALUES ({marks})"
    with pymysql.connect(**connect_args(args.url, database), autocommit=False) as conn:
        with conn.cursor() as cur:
            read = src.execute(f"SELECT {common.SOURCE_SELECT} FROM customers ORDER BY id")
            while chunk := read.fetchmany(args.insert_rows):
                cur.executemany(insert, common.mapped_rows(chunk))
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
        help=f"mapsync's delivery batch (sheet `delivery.batch`); default {common.DEFAULT_BATCH}",
    )
    parser.add_argument(
        "--insert-rows",
        type=int,
        default=DEFAULT_INSERT_ROWS,
        help=f"rows per baseline fetchmany and executemany; default {DEFAULT_INSERT_ROWS}",
    )
    common.add_seed_arguments(parser)
    args = parser.parse_args()
    if args.worker in ("mapsync", "records"):
        seed.worker_mapsync(args)
        return 0
    if args.worker == "baseline":
        worker_baseline(args)
        return 0
    if args.rows <= 0 or args.repeat <= 0 or args.batch <= 0 or args.insert_rows <= 0:
        parser.error("--rows, --repeat, --batch and --insert-rows must be positive")

    source = common.source_db(args.rows)
    sides = [args.only] if args.only else ["mapsync", *(["records"] if args.records else []), "baseline"]
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    print(
        f"MariaDB seed benchmark: {args.rows:,} rows, mapsync batch {args.batch}, baseline "
        f"{args.insert_rows} rows per executemany, {args.repeat} run(s) per side; {common.load_average()}",
        flush=True,
    )
    with ScratchMariaDB(MARIADB_URL) as db, tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for side in sides if rep % 2 == 0 else list(reversed(sides)):
                table = f"customer_{side}"
                db.fresh_table(table)
                worker = [
                    "--worker", side, "--source", str(source), "--url", db.url, "--table", table,
                    "--batch", str(args.batch), "--insert-rows", str(args.insert_rows),
                    "--rows", str(args.rows), "--folder", str(Path(tmp) / f"{side}{rep}"),
                ]  # fmt: skip
                if side != "baseline" and args.profile and rep == args.repeat - 1:
                    worker += ["--profile", str(Path(args.profile).resolve())]
                result = common.run_worker(Path(__file__), worker)
                count = db.count(table)
                if count != args.rows:
                    raise RuntimeError(f"{side}: {count} rows in {table}, expected {args.rows}")
                results[side].append(result)
                common.print_seed_run(rep, side, args.rows, result)
        sums = {side: db.checksums(f"customer_{side}") for side in sides}
    return report(args, results, sums)


def report(
    args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], sums: dict[str, tuple[int, int, int]]
) -> int:
    print(
        f"\nmedians of {args.repeat} run(s), {args.rows:,} rows, mapsync batch {args.batch}, "
        f"baseline {args.insert_rows} rows per executemany:"
    )
    med = common.seed_medians(results, args.rows)
    for side, (count, crc, checksum) in sums.items():
        print(f"  {side:8s} {count:,} rows, CRC32 sum {crc}, CHECKSUM TABLE {checksum}")
    if len(sums) >= 2:
        same = len(set(sums.values())) == 1
        print(f"  destination tables equal (count and checksums): {'yes' if same else 'NO'}")
        if not same:
            print("ERROR: the sides wrote different rows", file=sys.stderr)
            return 1
    if "mapsync" in med and "records" in med:
        gain = med["records"]["seconds"] / med["mapsync"]["seconds"]
        print(f"  columnar path against the per-record path: {gain:.1f}x faster")
    missed = []
    if "mapsync" in med and "baseline" in med:
        ratio = med["baseline"]["seconds"] / med["mapsync"]["seconds"]
        ok = ratio >= seed.TARGET_RATIO
        missed += [] if ok else ["throughput"]
        print(
            f"  throughput ratio mapsync/baseline: {ratio:.1%} (PostgreSQL seed target >= "
            f"{seed.TARGET_RATIO:.0%}, for reference): {'met' if ok else 'MISSED'}"
        )
    if "mapsync" in med:
        rss = med["mapsync"]["rss_mb"]
        ok = rss <= seed.TARGET_RSS_MB
        missed += [] if ok else ["memory"]
        print(
            f"  mapsync peak RSS: {rss:.1f} MB (PostgreSQL seed target <= {seed.TARGET_RSS_MB:.0f} MB, "
            f"for reference): {'met' if ok else 'MISSED'}"
        )
    print(f"  {common.load_average()}")
    if missed:
        print(f"MISSED (PostgreSQL targets; none is set for MariaDB): {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
