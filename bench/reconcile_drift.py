"""Benchmark: the drift walk (`mapsync.reconcile.drift.walk`) over two 1M-row tables against a
full download of both (issue 18).

    .venv/bin/python bench/reconcile_drift.py                 # 1,000,000 rows
    .venv/bin/python bench/reconcile_drift.py --smoke         # 10,000 rows (seconds)
    .venv/bin/python bench/reconcile_drift.py --rows 300000 --profile bench/out/drift.prof

The source is a PostgreSQL table `customers` (free-text `land`), the destination a MariaDB table
`accounts` (ISO3 `country`), both generated in SQL from the same formula (generate_series, the
Sequence engine). The ledger (a SQLite state store) is written directly: one live entry per
row with the dkey/digest `DriftForm.of` gives the row as the destination stores it — what a seed
through the engine would have recorded, without pushing 1M rows through it. Then 10 differences
are planted in the destination (4 changed, 3 missing, 3 extra), and, each in its own process
(so peak RSS is its own), through a fault proxy in front of each server (its byte counters):

- `walk`: the drift walk, destination through the proxy; the ledger is the local state store
  (its rows and bytes are the walk's own count, from text lengths);
- `download`: `SELECT *` of both tables, streamed, through the proxies (what a naive compare
  moves).

Targets: all 10 found, >= 10x less data moved from the two systems, walk peak RSS <= 150 MB.
A target missed prints `MISSED: …` (exit 0); differences not found exactly exit 1. At smoke
size the bucket figures dominate what the walk reads: the smoke checks that the script works,
not the targets. MariaDB is reached at MAPSYNC_BENCH_MARIADB_URL (default
mysql://root@127.0.0.1:3306/mysql), PostgreSQL as in bench/common.py.
"""

from __future__ import annotations

import argparse
import cProfile
import decimal
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from mapsync.connectors.sql_destination import SqlDestination
from mapsync.engine import Engine
from mapsync.reconcile import drift
from mapsync.records import key_text
from mapsync.sheet import loader
from mapsync.state.store import StateStore
from mapsync.testing.fault_proxy import Proxy, proxied_url, target_of

MARIADB_URL = os.environ.get("MAPSYNC_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/mysql")
LANDS = ["Deutschland", "France", "Germany", "Österreich", "Italia"]
ISO3 = ["DEU", "FRA", "DEU", "AUT", "ITA"]
CHANGED, MISSING, EXTRA = 4, 3, 3
LEDGER_CHUNK = 50_000
SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
state: {{url: "sqlite:///{state}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: id, to: ref}}
    fields:
      nm: name
      country: {{from: land, country: iso3}}
      balance: balance
    changes: {{method: snapshot}}
    deletes: {{policy: hard}}
"""


def _maria(db: str | None = None) -> sa.Engine:
    url = sa.make_url(MARIADB_URL).set(drivername="mysql+pymysql", database=db)
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def build(folder: Path, rows: int, pg: common.ScratchDatabase, maria: str) -> dict[str, Any]:
    """Both tables, the ledger and the planted differences; returns what the walk must find."""
    t0 = time.perf_counter()
    pg.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), land VARCHAR(40), "
        "balance NUMERIC(12,2))",
        "INSERT INTO customers SELECT g, 'c' || g, (ARRAY['"
        + "','".join(LANDS)
        + f"'])[g % 5 + 1], g / 100.0 FROM generate_series(1, {rows}) g",
        "ANALYZE customers",
    )
    with _maria(maria).connect() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE accounts (ref INTEGER PRIMARY KEY, nm VARCHAR(50), country CHAR(3), "
            "balance DECIMAL(12,2))"
        )
        conn.exec_driver_sql(
            "INSERT INTO accounts SELECT seq, CONCAT('c', seq), ELT(MOD(seq, 5) + 1, '"
            + "','".join(ISO3)
            + f"'), seq / 100 FROM seq_1_to_{rows}"
        )
    dest_url = sa.make_url(MARIADB_URL).set(database=maria).render_as_string(hide_password=False)
    sheet = write_sheet(folder, pg.url, dest_url)
    store = StateStore.open(f"sqlite:///{folder / 'state.db'}", folder, create=True)
    engine = Engine(loader.load(sheet, env={}), store)
    dest = engine.parts("customers").dest
    assert isinstance(dest, SqlDestination)
    form = dest.drift_form
    assert form is not None
    engine.close()
    store.close()
    built = time.perf_counter() - t0
    # the ledger as a seed would leave it: one live entry per row, its drift pair from the row
    con = sqlite3.connect(folder / "state.db")
    cols = "sync, key, version, hash, dest_id, deleted, updated_at, dkey, digest"
    for start in range(1, rows + 1, LEDGER_CHUNK):
        batch = []
        for i in range(start, min(start + LEDGER_CHUNK, rows + 1)):
            values = {"ref": i, "nm": f"c{i}", "country": ISO3[i % 5], "balance": decimal.Decimal(i) / 100}
            dkey, digest = form.of(values)
            batch.append(
                ("customers", key_text((i,)), None, "h", None, 0, "2026-01-01T00:00:00Z", dkey, digest)
            )
        con.executemany(f"INSERT INTO mapsync_ledger ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
        con.commit()
    con.close()
    ledger = time.perf_counter() - t0 - built
    # 10 differences, spread over the key range
    step = rows // (CHANGED + MISSING + 1)
    changed = [step * (n + 1) for n in range(CHANGED)]
    missing = [step * (CHANGED + n + 1) + 1 for n in range(MISSING)]
    extra = [rows + 1000 * (n + 1) for n in range(EXTRA)]
    with _maria(maria).connect() as conn:
        for i in changed:
            conn.exec_driver_sql(f"UPDATE accounts SET nm = 'edited by hand' WHERE ref = {i}")
        for i in missing:
            conn.exec_driver_sql(f"DELETE FROM accounts WHERE ref = {i}")
        for i in extra:
            conn.exec_driver_sql(f"INSERT INTO accounts VALUES ({i}, 'stranger', 'FRA', 1.00)")
    return {
        "changed": sorted(key_text((i,)) for i in changed),
        "missing": sorted(key_text((i,)) for i in missing),
        "extra": sorted(extra),
        "build_s": round(built, 1),
        "ledger_s": round(ledger, 1),
    }


def write_sheet(folder: Path, src: str, dst: str) -> Path:
    path = folder / "sheet.yaml"
    path.write_text(SHEET.format(src=src, dst=dst, state=folder / "state.db"))
    return path


# --------------------------------------------------------------------------- the workers


def worker_walk(folder: Path, src: str, dst: str, buckets: int, profile: str | None) -> None:
    proxy = Proxy(*target_of(dst))
    sheet = write_sheet(folder, src, proxied_url(dst, proxy))
    store = StateStore.open(f"sqlite:///{folder / 'state.db'}", folder, create=False)
    engine = Engine(loader.load(sheet, env={}), store)
    dest = engine.parts("customers").dest
    assert isinstance(dest, SqlDestination)
    cfg = engine.sheet.syncs["customers"]
    form = dest.drift_form
    assert form is not None
    proxy.bytes_up = proxy.bytes_down = 0  # the catalog reads of building the parts are not the walk's
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = drift.walk(store, "customers", dest, form, buckets=buckets, deletes=cfg.deletes)
    seconds = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    common.emit(
        {
            "seconds": seconds,
            "dest_bytes": proxy.bytes_down + proxy.bytes_up,
            "dest_rows": result.read["dest"].rows,
            "ledger_rows": result.read["ledger"].rows,
            "ledger_bytes": result.read["ledger"].bytes,
            "changed": sorted(result.changed),
            "missing": sorted(result.missing),
            "extra": sorted(e.dest_key[0] for e in result.extra),
            "peak_rss_mb": common.peak_rss_mb(),
        }
    )
    engine.close()
    store.close()
    proxy.close()


def worker_download(src: str, dst: str) -> None:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for side, url, table in (("source", src, "customers"), ("dest", dst, "accounts")):
        proxy = Proxy(*target_of(url))
        parsed = sa.make_url(proxied_url(url, proxy))
        driver = "postgresql+psycopg" if parsed.get_backend_name() == "postgresql" else "mysql+pymysql"
        engine = sa.create_engine(parsed.set(drivername=driver))
        rows = 0
        with engine.connect().execution_options(stream_results=True, max_row_buffer=10_000) as conn:
            result = conn.exec_driver_sql(f"SELECT * FROM {table}")
            while batch := result.fetchmany(10_000):
                rows += len(batch)
        engine.dispose()
        out[f"{side}_rows"], out[f"{side}_bytes"] = rows, proxy.bytes_down + proxy.bytes_up
        proxy.close()
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = common.peak_rss_mb()
    common.emit(out)


# --------------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="10,000 rows")
    parser.add_argument("--buckets", type=int, help="buckets of the walk (4096; 256 with --smoke)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the walk into FILE")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "walk":
            worker_walk(Path(rest[0]), rest[1], rest[2], int(rest[3]), rest[4] if len(rest) > 4 else None)
        else:
            worker_download(rest[0], rest[1])
        return
    rows = 10_000 if args.smoke else args.rows
    buckets = args.buckets or (256 if args.smoke else 4096)
    maria = f"bench_drift_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp, common.ScratchDatabase("bench_drift") as pg:
        with _maria().connect() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE `{maria}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        try:
            folder = Path(tmp)
            print(f"building {rows:,} rows on each side and the ledger …", flush=True)
            planted = build(folder, rows, pg, maria)
            dst = sa.make_url(MARIADB_URL).set(database=maria).render_as_string(hide_password=False)
            script = Path(__file__).resolve()
            walk_args = ["--worker", "walk", str(folder), pg.url, dst, str(buckets)]
            if args.profile:
                walk_args.append(str(Path(args.profile).resolve()))
            walk = common.run_worker(script, walk_args)
            full = common.run_worker(script, ["--worker", "download", pg.url, dst])
        finally:
            with _maria().connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{maria}`")
    if not report(rows, planted, walk, full):
        sys.exit("the walk did not find exactly the 10 planted differences")


def report(rows: int, planted: dict[str, Any], walk: dict[str, Any], full: dict[str, Any]) -> bool:
    """Print the figures and the targets (`MISSED: …` for a target missed); whether the walk
    found exactly the planted differences."""
    found = (walk["changed"], walk["missing"], walk["extra"]) == (
        planted["changed"],
        planted["missing"],
        planted["extra"],
    )
    moved_full = full["source_bytes"] + full["dest_bytes"]
    ratio = moved_full / max(walk["dest_bytes"], 1)
    mb = 1024 * 1024
    print(f"\ndrift walk vs full download, {rows:,} rows per side ({common.load_average()})")
    print(f"  build: tables {planted['build_s']} s, ledger {planted['ledger_s']} s (not measured below)")
    print(f"  {'':24}{'walk':>16}{'full download':>18}")
    print(f"  {'wall time':24}{walk['seconds']:>14.2f} s{full['seconds']:>16.2f} s")
    print(
        f"  {'source rows / MB':24}{'0 / 0':>16}{full['source_rows']:>10,} / {full['source_bytes'] / mb:.1f}"
    )
    print(
        f"  {'dest rows / MB':24}{walk['dest_rows']:>8,} / {walk['dest_bytes'] / mb:.2f}"
        f"{full['dest_rows']:>10,} / {full['dest_bytes'] / mb:.1f}"
    )
    print(
        f"  {'ledger rows / MB (local)':24}{walk['ledger_rows']:>8,} / "
        f"{walk['ledger_bytes'] / mb:.1f}{'-':>18}"
    )
    print(f"  {'peak RSS':24}{walk['peak_rss_mb']:>13.0f} MB{full['peak_rss_mb']:>15.0f} MB")
    print("targets:")
    print(f"  all 10 differences found, nothing else: {'yes' if found else 'NO'}")
    print(
        f"  data moved from the two systems {ratio:,.0f}x less (target >= 10x): "
        f"{'yes' if ratio >= 10 else 'NO'}"
    )
    print(
        f"  walk peak RSS {walk['peak_rss_mb']:.0f} MB (target <= 150 MB): "
        f"{'yes' if walk['peak_rss_mb'] <= 150 else 'NO'}"
    )
    print(json.dumps({"rows": rows, "planted": planted, "walk": walk, "full": full}))
    if ratio < 10:
        print(f"MISSED: data moved {ratio:.1f}x less, target >= 10x")
    if walk["peak_rss_mb"] > 150:
        print(f"MISSED: walk peak RSS {walk['peak_rss_mb']:.0f} MB, target <= 150 MB")
    return found


if __name__ == "__main__":
    main()
