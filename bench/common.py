"""Shared pieces of the benchmarks: the cached SQLite source, the PostgreSQL scratch database,
the destination DDL, the mapping sheet and the subprocess plumbing. Not a test module."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"  # git-ignored
PG_URL = os.environ.get("MAPSYNC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# `delivery.batch` of the benchmark sheet. 10,000 measured fastest of 1,000-20,000 on the
# 15-column customers table with peak RSS ~110 MB; 20,000 is no faster and peaks near 150 MB
# (docs/performance.md). The sheet default (500) suits small syncs, not a million-row seed.
DEFAULT_BATCH = 10_000

SOURCE_DDL = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    email TEXT,
    phone TEXT,
    street TEXT,
    city TEXT,
    postcode TEXT,
    country TEXT,
    status TEXT NOT NULL,
    notes TEXT,
    credit_limit INTEGER,
    created_at TEXT NOT NULL,
    last_modified TEXT NOT NULL
)
"""
SOURCE_COLUMNS = [
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "street",
    "city",
    "postcode",
    "country",
    "status",
    "notes",
    "credit_limit",
    "created_at",
    "last_modified",
]

# destination column -> source column (None: the constant); the order of the COPY
DEST_COLUMNS = [
    ("customer_id", "id"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("email_address", "email"),
    ("phone", "phone"),
    ("street", "street"),
    ("city", "city"),
    ("postcode", "postcode"),
    ("country_code", "country"),
    ("status", "status"),
    ("notes", "notes"),
    ("credit_limit", "credit_limit"),
    ("source_system", None),
    ("created_at", "created_at"),
    ("updated_at", "last_modified"),
]
STATUS_MAP = {"A": "active", "I": "inactive", "S": "suspended", "P": "prospect"}
NOTES_LIMIT = 80
CONSTANT = "erp"


# the source columns in the order of DEST_COLUMNS (the constant left out): what the baselines read
SOURCE_SELECT = ", ".join(c for _, c in DEST_COLUMNS if c is not None)
DEST_LIST = ", ".join(d for d, _ in DEST_COLUMNS)


def mapped_rows(chunk: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The hand-written baselines' mapping, inline: `chunk` holds SOURCE_SELECT rows, the result
    DEST_LIST rows with the sheet's value map, truncation and constant applied (`write_sheet`);
    the destination parses the timestamp texts."""
    status, limit, constant = STATUS_MAP, NOTES_LIMIT, CONSTANT
    return [
        (
            i,
            first,
            last,
            email,
            phone,
            street,
            city,
            pc,
            cc,
            status[st],
            notes[:limit] if notes is not None else None,
            credit,
            constant,
            cr,
            lm,
        )
        for i, first, last, email, phone, street, city, pc, cc, st, notes, credit, cr, lm in chunk
    ]


def copy_mapped(copy: Any, chunk: list[tuple[Any, ...]]) -> None:
    """`mapped_rows(chunk)` into `copy` (psycopg's COPY, DEST_LIST order)."""
    write = copy.write_row
    for row in mapped_rows(chunk):
        write(row)


def dest_ddl(table: str) -> str:
    return f"""
CREATE TABLE {table} (
    customer_id BIGINT PRIMARY KEY,
    first_name VARCHAR(60) NOT NULL,
    last_name VARCHAR(60) NOT NULL,
    email_address VARCHAR(120),
    phone VARCHAR(40),
    street VARCHAR(120),
    city VARCHAR(80),
    postcode VARCHAR(16),
    country_code VARCHAR(2),
    status VARCHAR(16) NOT NULL,
    notes VARCHAR({NOTES_LIMIT}),
    credit_limit BIGINT,
    source_system VARCHAR(16) NOT NULL,
    created_at TIMESTAMP(6) NOT NULL,
    updated_at TIMESTAMP(6) NOT NULL
)
"""


# --------------------------------------------------------------------------- the source

_FIRST = [
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Karla",
    "Lukas", "Mia", "Noah", "Olga", "Paul", "Quinn", "Rosa", "Sven", "Tara", "Ugo", "Vera",
    "Wim", "Xenia", "Yusuf", "Zoë", "José", "Søren", "Łucja", "Chloé",
]  # fmt: skip
_LAST = [
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
    "Hoffmann", "Smith", "Johnson", "Brown", "García", "Martin", "Rossi", "Novak", "Kowalski",
    "Jansen", "de Vries", "O'Brien", "Nguyen", "Dubois", "Silva", "Andersson",
]  # fmt: skip
_CITY = [
    ("Berlin", "DE"), ("Hamburg", "DE"), ("München", "DE"), ("Köln", "DE"), ("Wien", "AT"),
    ("Zürich", "CH"), ("Paris", "FR"), ("Lyon", "FR"), ("Amsterdam", "NL"), ("Rotterdam", "NL"),
    ("London", "GB"), ("Manchester", "GB"), ("Madrid", "ES"), ("Milano", "IT"), ("Warszawa", "PL"),
    ("Praha", "CZ"), ("København", "DK"), ("Stockholm", "SE"), ("New York", "US"), ("Toronto", "CA"),
]  # fmt: skip
_STREET = ["Hauptstraße", "Bahnhofstraße", "Main Street", "Rue de la Paix", "Kerkstraat", "Via Roma"]
_WORDS = [
    "customer", "prefers", "invoices", "by", "mail,", "call", "before", "delivery,", "key",
    "account,", "VIP,", "payment", "terms", "net", "30,", "moved", "from", "the", "old", "ERP,",
    "duplicate", "merged,", "check", "credit", "limit", "yearly",
]  # fmt: skip
_STATUS = ["A"] * 80 + ["I"] * 12 + ["S"] * 3 + ["P"] * 5


def _rows(n: int, seed: int = 42) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(seed)
    base = dt.datetime(2019, 1, 1)
    span = int((dt.datetime(2024, 12, 31) - base).total_seconds())
    for i in range(1, n + 1):
        first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
        city, country = rnd.choice(_CITY)
        created = base + dt.timedelta(seconds=rnd.randrange(span))
        modified = created + dt.timedelta(seconds=rnd.randrange(86400 * 365))
        email = f"{first.lower()}.{last.lower().replace(' ', '')}{i}@example.com"
        phone = f"+49 {rnd.randrange(100, 999)} {rnd.randrange(1000000, 9999999)}"
        notes = None
        if rnd.random() < 0.6:  # about a third of the notes are longer than the 80-char column
            notes = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randrange(2, 30)))
        yield (
            i,
            first,
            last,
            email if rnd.random() < 0.95 else None,
            phone if rnd.random() < 0.8 else None,
            f"{rnd.choice(_STREET)} {rnd.randrange(1, 200)}",
            city,
            f"{rnd.randrange(10000, 99999)}",
            country,
            rnd.choice(_STATUS),
            notes,
            rnd.randrange(0, 50) * 1000 if rnd.random() < 0.9 else None,
            created.strftime("%Y-%m-%d %H:%M:%S"),
            modified.strftime("%Y-%m-%d %H:%M:%S"),
        )


def source_db(rows: int) -> Path:
    """The cached SQLite source with `rows` customers (generated once under bench/out/)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"customers_{rows}.sqlite"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    started = time.perf_counter()
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute(SOURCE_DDL)
    marks = ",".join("?" * len(SOURCE_COLUMNS))
    con.executemany(f"INSERT INTO customers VALUES ({marks})", _rows(rows))
    con.execute("CREATE INDEX customers_last_modified ON customers (last_modified, id)")
    con.commit()
    con.close()
    tmp.rename(path)
    print(f"generated {path.name} ({rows:,} rows) in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def copy_source(rows: int, target: Path) -> Path:
    """A private copy of the cached source (for benchmarks that change it)."""
    shutil.copyfile(source_db(rows), target)
    return target


# --------------------------------------------------------------------------- PostgreSQL


def pg_connect(url: str, **kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), **kwargs)


def db_url(name: str) -> str:
    head, _, _ = PG_URL.rpartition("/")
    return f"{head}/{name}"


class ScratchDatabase:
    """A uniquely named PostgreSQL database, created on enter and dropped on exit."""

    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.url = db_url(self.name)

    def __enter__(self) -> ScratchDatabase:
        with pg_connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        with pg_connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def execute(self, *statements: str) -> None:
        with pg_connect(self.url, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt)

    def scalar(self, stmt: str) -> Any:
        with pg_connect(self.url, autocommit=True) as conn:
            row = conn.execute(stmt).fetchone()
            return row[0] if row else None

    def fresh_table(self, table: str) -> None:
        """Drop and recreate `table` empty, then checkpoint so that the next run starts clean."""
        self.execute(f"DROP TABLE IF EXISTS {table}", dest_ddl(table), "CHECKPOINT")

    def differing_rows(self, a: str, b: str) -> int:
        """Rows in one of the tables `a` and `b` but not in the other (0: the same rows)."""
        count: int = self.scalar(
            f"SELECT count(*) FROM ((SELECT * FROM {a} EXCEPT SELECT * FROM {b})"
            f" UNION ALL (SELECT * FROM {b} EXCEPT SELECT * FROM {a})) d"
        )
        return count


# --------------------------------------------------------------------------- the sheet


def write_sheet(
    folder: Path, source: Path, dest_url: str, table: str, batch: int, lag: str = "1s", columnar: bool = True
) -> Path:
    """A mapping sheet with a realistic mapping: renames, a value map, a truncation, a constant
    (`columnar`: the sheet's `delivery.columnar`)."""
    fields: dict[str, Any] = {}
    for dest, src in DEST_COLUMNS[1:]:
        if dest == "status":
            fields[dest] = {"from": src, "map": STATUS_MAP}
        elif dest == "notes":
            fields[dest] = {"from": src, "truncate": NOTES_LIMIT}
        elif src is None:
            fields[dest] = {"value": CONSTANT}
        else:
            fields[dest] = src
    sheet = {
        "version": 1,
        "connections": {
            "erp": {"url": f"sqlite:///{source}"},
            "crm": {"url": dest_url},
        },
        "state": {"url": f"sqlite:///{folder / 'state.db'}"},
        "syncs": {
            "customers": {
                "from": {"connection": "erp", "table": "customers"},
                "to": {"connection": "crm", "table": table},
                "key": {"from": "id", "to": "customer_id"},
                "fields": fields,
                "changes": {"method": "watermark", "column": "last_modified", "lag": lag},
                "delivery": {"batch": batch, "columnar": columnar},
            }
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sheet.yaml"
    header = (
        "# generated by bench/common.py (JSON is YAML). delivery.batch: rows per source read,\n"
        f"# per destination write and per state commit; {batch} here ({DEFAULT_BATCH} by default:\n"
        "# the fastest measured, peak RSS about 110 MB; see docs/performance.md).\n"
    )
    text = header + json.dumps(sheet, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (the database servers' work is not in it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(result: dict[str, Any]) -> None:
    """The last stdout line of a worker: its result as JSON."""
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(script: Path, args: list[str]) -> dict[str, Any]:
    """Run `script --worker …` in its own interpreter and return its RESULT line."""
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False, cwd=HERE.parent
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"worker {' '.join(args[:3])} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------- the seed benchmarks


def emit_seed(seconds: float, cpu: float, rows: int, rss_ready: float, **extra: Any) -> None:
    """A seed worker's RESULT line: its wall and CPU seconds, rows, peak RSS (and after imports)."""
    rss = peak_rss_mb()
    emit({"seconds": seconds, "cpu": cpu, "rows": rows, "rss_mb": rss, "rss_ready_mb": rss_ready, **extra})


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every seed benchmark takes after its own: one side, a profile, and the
    hidden ones its driver passes to a worker process."""
    parser.add_argument("--only", choices=["mapsync", "records", "baseline"], help="run one side only")
    parser.add_argument(
        "--records",
        action="store_true",
        help="also run mapsync's per-record path (`delivery.columnar: false`) as a third side",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the (last) mapsync run into FILE")
    parser.add_argument("--worker", choices=["mapsync", "records", "baseline"], help=argparse.SUPPRESS)
    for hidden in ("--source", "--url", "--table", "--folder"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)


def print_seed_run(rep: int, side: str, rows: int, result: dict[str, Any]) -> None:
    print(
        f"  run {rep + 1} {side:8s} {result['seconds']:8.2f} s "
        f"{rows / result['seconds']:>10,.0f} rows/s  (client CPU {result['cpu']:.2f} s)  "
        f"peak RSS {result['rss_mb']:6.1f} MB",
        flush=True,
    )


def seed_medians(results: dict[str, list[dict[str, Any]]], rows: int) -> dict[str, dict[str, float]]:
    """Each side's medians (seconds, CPU, peak RSS, RSS after imports), printed a line a side."""
    keys = ("seconds", "cpu", "rss_mb", "rss_ready_mb")
    med = {side: {k: median([r[k] for r in runs]) for k in keys} for side, runs in results.items()}
    for side, m in med.items():
        print(
            f"  {side:8s} {m['seconds']:8.2f} s {rows / m['seconds']:>10,.0f} rows/s  "
            f"(client CPU {m['cpu']:.2f} s)  peak RSS {m['rss_mb']:6.1f} MB "
            f"(after imports {m['rss_ready_mb']:.1f} MB)"
        )
    return med


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} cores"
