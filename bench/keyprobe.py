"""What the key-collision probe costs: a seed of text keys into a collating key column, with the
probe and without it (`KeyProbe.active` forced off), on MariaDB (`utf8mb4_unicode_ci`) and
PostgreSQL (a nondeterministic ICU collation). Runs alternate; medians are reported.

    .venv/bin/python bench/keyprobe.py --rows 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mapsync.connectors import sql_keys
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.store import StateStore

PROBE_SECONDS = [0.0]
_probe = sql_keys.KeyProbe.probe


def _timed(self: sql_keys.KeyProbe, keys: Any) -> Any:
    started = time.perf_counter()
    try:
        return _probe(self, keys)
    finally:
        PROBE_SECONDS[0] += time.perf_counter() - started


sql_keys.KeyProbe.probe = _timed  # type: ignore[method-assign]

SERVERS = {
    "mariadb": (
        "mysql+pymysql://root@127.0.0.1:3306",
        ["CREATE TABLE products (sku VARCHAR(40) PRIMARY KEY, nm VARCHAR(80)) COLLATE utf8mb4_unicode_ci"],
    ),
    "postgresql": (
        "postgresql+psycopg://postgres@127.0.0.1:5432",
        [
            "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
            "CREATE TABLE products (sku VARCHAR(40) COLLATE ci PRIMARY KEY, nm VARCHAR(80))",
        ],
    ),
}


def seed_once(server: str, source: Path, rows: int, batch: int, probe: bool) -> float:
    base, ddl = SERVERS[server]
    name = f"mapsync_b_{uuid.uuid4().hex[:10]}"
    admin_url = f"{base}/test" if server == "postgresql" else base
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = f"{base}/{name}"
    try:
        dest = sa.create_engine(url)
        with dest.begin() as conn:
            for stmt in ddl:
                conn.exec_driver_sql(stmt)
        dest.dispose()
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "sheet.yaml").write_text(f"""
version: 1
connections:
  erp: {{url: "sqlite:///{source}"}}
  portal: {{url: "{url}"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: portal, table: products}}
    key: {{from: sku, to: sku}}
    changes: {{method: full}}
    delivery: {{batch: {batch}}}
    fields: {{nm: descr}}
""")
            loaded = loader.load(Path(tmp) / "sheet.yaml")
            store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
            engine = Engine(loaded, store)
            parts = engine.parts
            if not probe:

                def no_probe(sync: str) -> object:
                    built = parts(sync)
                    built.dest.key_probe.active = False
                    return built

                engine.parts = no_probe  # type: ignore[method-assign]
            started = time.perf_counter()
            report = engine.run("items", "seed")
            seconds = time.perf_counter() - started
            engine.close()
            store.close()
            assert report.counts.written == rows, report
            return seconds
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src.db"
        with sqlite3.connect(source) as conn:
            conn.execute("CREATE TABLE items (sku TEXT PRIMARY KEY, descr TEXT)")
            conn.executemany(
                "INSERT INTO items VALUES (?, ?)",
                [(f"SKU-{i:08d}-Ab", f"item number {i}") for i in range(args.rows)],
            )
        for server in SERVERS:
            times: dict[bool, list[float]] = {True: [], False: []}
            inside: list[float] = []
            for _ in range(args.repeat):
                for probe in (False, True):
                    PROBE_SECONDS[0] = 0.0
                    times[probe].append(seed_once(server, source, args.rows, args.batch, probe))
                inside.append(PROBE_SECONDS[0])
            off, on = statistics.median(times[False]), statistics.median(times[True])
            spent = statistics.median(inside)
            print(
                f"{server}: {args.rows} rows, batch {args.batch}: without probe {off:.2f} s, "
                f"with probe {on:.2f} s ({(on - off) / off * 100:+.1f} %, "
                f"{(on - off) / (args.rows / args.batch) * 1000:.1f} ms per batch); time inside the "
                f"probe {spent:.2f} s = {spent / (args.rows / args.batch) * 1000:.1f} ms per batch"
            )


if __name__ == "__main__":
    main()
