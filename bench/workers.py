"""Several daemons on one PostgreSQL state store (issue 14): coordination share and scheduling delay.

    .venv/bin/python bench/workers.py coordination                  # 1M customers + 11 tables, 1,2,4 daemons
    .venv/bin/python bench/workers.py schedule                      # 1000 syncs every 60 s, 3 minutes
    .venv/bin/python bench/workers.py coordination --rows 20000     # smoke (about a minute)
    .venv/bin/python bench/workers.py schedule --syncs 100 --minutes 1

**coordination** (Part A). A source PostgreSQL database holds `customers` (bench/common's
generated rows, via the cached SQLite file) and 11 smaller tables (10k-100k rows at 1M
customers, scaled with `--rows`); 12 watermark syncs (`schedule: {every: 5s}`) copy them into a
destination PostgreSQL database; the state store is a third PostgreSQL database. All syncs are
seeded first (not measured). Then, for each daemon count N: N `mapsync daemon` processes start
and settle (every worker alive and owning syncs, when `mapsync workers` exists), 5 % of the
customers and 20 % of each small table get a new marker value, the daemons run until every marker
is in the destination, and SIGTERM stops them. Each daemon's `daemon_stopped` log line gives
`coordination_ms` (worker beats and claims, lease acquire/renew/release, run-row start/finish,
batch state commits) and `run_ms` (wall time of its runs); share = sum(coordination_ms) /
sum(run_ms). Target: < 5 % at 4 daemons. The 1-daemon share is the in-run baseline
(coordination a lone daemon pays as well).

**schedule** (Part B). `--syncs` syncs (`schedule: {every: 60s}`) each read the same empty
SQLite table into a table of their own in a SQLite destination (a capture that finds nothing);
the state store is PostgreSQL, so the PostgreSQL server works for the state store alone. After a
seed of every sync (not measured) the daemon(s) start about 30 s before a full minute and run
for `--minutes` slots. From `mapsync_runs`: scheduled runs, lateness_ms p50/p95/p99/max (target
p99 < 1 s), skipped rows and why. State-store CPU per scheduled run = the CPU time (utime +
stime) of every `postgres` server process, read from /proc before the daemons start and after
they stopped (plus what the postmaster collected from children that exited), divided by the
scheduled runs: it is the whole server's CPU, all databases, so measure on a quiet machine.

The daemons are the ordinary CLI (`mapsync --log-format json --log-level info daemon SHEET`)
run through a few lines that also print, at exit, the coordination meters by name
(`state/meter.py`: state_commit, lease_acquire, worker_beat, …): where the time goes.
`--quiet-wait S` waits up to S s before each measured run for a quiet machine (at most a quarter
of the cores busy over 3 s) and prints what it saw. The databases are named bench_<pid>_… and
dropped at the end (also on Ctrl-C or SIGTERM). Exit status 0, also when a target is MISSED
(printed); nonzero on errors. Results and what they mean: docs/performance.md, "Several workers".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import common

TARGET_SHARE = 0.05  # coordination / run time at 4 daemons
TARGET_P99_MS = 1000.0  # scheduling delay
SMALL_TABLES = 11
CUSTOMERS_SHARE = 20  # every 20th customer changes per round (5 %)
SMALL_SHARE = 5  # every 5th row of a small table changes per round (20 %)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- plumbing


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def say(text: str) -> None:
    print(text, flush=True)


def mapsync(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mapsync", *args], cwd=folder, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"mapsync {' '.join(args)} exited {proc.returncode}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


# `python -m mapsync …` plus one JSON line at exit with the daemon's meters by name (state/meter.py:
# worker_beat, lease_renew, state_commit, …): where the coordination time goes
METERED = """
import atexit, json, sys
from mapsync.state.meter import COORDINATION, RUNS
def _meters():
    line = {"action": "bench_meters", "coordination": COORDINATION.sums(), "runs": RUNS.sums()}
    print(json.dumps(line), file=sys.stderr, flush=True)
atexit.register(_meters)
from mapsync.cli import main
main()
"""


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: dict[str, Any] | None = None
    meters: dict[str, Any] | None = None
    exit_code: int | None = None


@dataclass
class Daemons:
    """N `mapsync daemon` processes of one sheet, each logging JSON lines into its own file."""

    folder: Path
    sheet: Path
    extra: list[str] = field(default_factory=list)
    running: list[Daemon] = field(default_factory=list)

    def start(self, n: int, tag: str) -> None:
        for i in range(n):
            log = self.folder / f"{tag}_daemon{i + 1}.log"
            cmd = [sys.executable, "-c", METERED, "--log-format", "json", "--log-level", "info"]
            cmd += ["daemon", str(self.sheet), *self.extra]
            with log.open("wb") as err:
                proc = subprocess.Popen(cmd, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=err)
            self.running.append(Daemon(proc, log))

    def alive(self) -> list[int]:
        return [d.proc.pid for d in self.running if d.proc.poll() is None]

    def stop(self, timeout: float = 90.0) -> list[Daemon]:
        """SIGTERM to all, wait (SIGKILL after `timeout`), parse each log's `daemon_stopped` line."""
        for d in self.running:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for d in self.running:
            try:
                d.proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
            d.exit_code = d.proc.returncode
            d.stopped = stopped_line(d.log)
            d.meters = stopped_line(d.log, "bench_meters")
        done, self.running = self.running, []
        return done


def stopped_line(log: Path, action: str = "daemon_stopped") -> dict[str, Any] | None:
    """The last JSON log line of `action` in a daemon's log."""
    found: dict[str, Any] | None = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if f'"{action}"' not in line:
            continue
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if data.get("action") == action:
                found = data
    return found


def meter_sums(stopped: list[Daemon]) -> dict[str, float]:
    """The daemons' coordination meters by name, summed, in ms (empty where none was logged)."""
    sums: dict[str, float] = {}
    for d in stopped:
        for name, seconds in ((d.meters or {}).get("coordination") or {}).items():
            sums[name] = sums.get(name, 0.0) + float(seconds) * 1000
    return sums


def breakdown(sums: dict[str, float]) -> str:
    total = sum(sums.values())
    if not total:
        return "n/a"
    parts = sorted(sums.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {ms:,.0f} ms ({ms / total:.0%})" for name, ms in parts)


def log_tail(log: Path, lines: int = 8) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def workers_view(folder: Path, sheet: Path) -> dict[str, Any] | None:
    """`mapsync workers --json`, or None where the command does not exist (before issue 14)."""
    proc = mapsync(folder, "workers", str(sheet), "--json", check=False)
    if proc.returncode != 0:
        return None
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return None
    return data


def settle(folder: Path, sheet: Path, daemons: Daemons, n: int, timeout: float) -> str:
    """Wait until N live workers each own a sync and none is unclaimed; returns what was seen."""
    end = time.monotonic() + timeout
    seen = "n/a (no `mapsync workers`)"
    while time.monotonic() < end:
        if len(daemons.alive()) < n:
            raise RuntimeError("a daemon exited while starting: " + log_tail(daemons.running[0].log))
        view = workers_view(folder, sheet)
        if view is None:
            time.sleep(3.0)  # the old daemon: its imports and first tick
            return seen
        live = [w for w in view.get("workers", []) if w.get("alive")]
        owns = sorted(len(w.get("owns", [])) for w in live)
        seen = f"{len(live)} live worker(s) owning {owns}, unclaimed {len(view.get('unclaimed', []))}"
        if len(live) == n and all(owns) and not view.get("unclaimed"):
            return seen
        time.sleep(0.5)
    return seen + f" (not settled after {timeout:.0f} s)"


def postgres_cpu_s() -> float:
    """utime + stime of every live `postgres` process, plus cutime + cstime of the postmasters
    (the time of children that exited: backends of closed connections)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if comm != "postgres":
            continue
        fields = stat.rpartition(")")[2].split()  # from field 3 (state) on
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        ticks += utime + stime
        try:
            parent = Path(f"/proc/{ppid}/comm").read_text().strip()
        except OSError:
            parent = ""
        if parent != "postgres":  # the postmaster: its reaped children's time
            ticks += cutime + cstime
    return ticks / CLK_TCK


def busy_share(seconds: float = 3.0) -> float:
    """The share of all cores busy over `seconds` (from /proc/stat: everything but idle and iowait)."""

    def sample() -> tuple[int, int]:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(values), values[3] + values[4]

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


QUIET = 0.25  # at most this share of the cores busy before a measured run


def quiet_check(wait: float = 0.0) -> str:
    """The machine's load before a measured run; waits up to `wait` s for it to be quiet (at most
    a quarter of the cores busy over 3 s), and says so when it is not."""
    end = time.monotonic() + wait
    busy = busy_share()
    while busy > QUIET and time.monotonic() < end:
        busy = busy_share(5.0)
    note = "" if busy <= QUIET else "  (NOT quiet: other work is running, figures are disturbed)"
    return f"{busy:.0%} of the cores busy, {common.load_average()}{note}"


def fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


@contextlib.contextmanager
def databases(*roles: str) -> Iterator[list[common.ScratchDatabase]]:
    """Scratch PostgreSQL databases bench_<pid>_<role>_<hex>, dropped on the way out."""
    made: list[common.ScratchDatabase] = []
    try:
        for role in roles:
            db = common.ScratchDatabase(f"bench_{os.getpid()}_{role}")
            made.append(db.__enter__())
        yield made
    finally:
        for db in reversed(made):
            with contextlib.suppress(Exception):
                db.__exit__(None, None, None)


def pg_url(db: common.ScratchDatabase) -> str:
    return db.url.replace("postgresql://", "postgresql+psycopg://", 1)


# --------------------------------------------------------------------------- Part A: coordination


def small_sizes(rows: int) -> list[int]:
    """10k, 19k, … 100k at 1M customers, scaled with `rows` (at least 100 each)."""
    return [max(100, round((10_000 + 9_000 * i) * rows / 1_000_000)) for i in range(SMALL_TABLES)]


def small_name(i: int) -> str:
    return f"t{i + 1:02d}"


def load_source(src: common.ScratchDatabase, dst: common.ScratchDatabase, rows: int) -> None:
    cached = common.source_db(rows)
    ddl = common.SOURCE_DDL.replace("last_modified TEXT NOT NULL", "last_modified TIMESTAMP(6) NOT NULL")
    started = time.perf_counter()
    con = sqlite3.connect(cached)
    cols = ", ".join(common.SOURCE_COLUMNS)
    with common.pg_connect(src.url) as conn, conn.cursor() as cur:
        cur.execute(ddl)
        read = con.execute(f"SELECT {cols} FROM customers ORDER BY id")
        with cur.copy(f"COPY customers ({cols}) FROM STDIN") as copy:
            while chunk := read.fetchmany(10_000):
                for row in chunk:
                    copy.write_row(row)
        cur.execute("CREATE INDEX customers_last_modified ON customers (last_modified, id)")
        for i, size in enumerate(small_sizes(rows)):
            t = small_name(i)
            cur.execute(
                f"CREATE TABLE {t} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, val INTEGER NOT NULL, "
                "marker TEXT, last_modified TIMESTAMP(6) NOT NULL)"
            )
            cur.execute(
                f"INSERT INTO {t} SELECT g, 'name ' || g, g %% 1000, NULL, "
                "timestamp '2024-01-01' + g * interval '1 second' FROM generate_series(1, %s) g",
                (size,),
            )
            cur.execute(f"CREATE INDEX {t}_last_modified ON {t} (last_modified, id)")
        conn.commit()
        cur.execute("ANALYZE")
    con.close()
    dst.execute(common.dest_ddl("customer"))
    for i in range(SMALL_TABLES):
        dst.execute(
            f"CREATE TABLE {small_name(i)} (id BIGINT PRIMARY KEY, name VARCHAR(60) NOT NULL, "
            "val INTEGER NOT NULL, marker VARCHAR(40), updated_at TIMESTAMP(6) NOT NULL)"
        )
    total = rows + sum(small_sizes(rows))
    say(
        f"  source loaded: {rows:,} customers + {SMALL_TABLES} tables, {total:,} rows "
        f"in {time.perf_counter() - started:.1f} s"
    )


def customers_sync(folder: Path) -> dict[str, Any]:
    """The customers sync of bench/common's sheet (its mapping: renames, a value map, a truncation,
    a constant), read back from the sheet common.write_sheet writes."""
    path = common.write_sheet(
        folder / "common", Path("unused.sqlite"), "postgresql://unused/x", "customer", common.DEFAULT_BATCH
    )
    text = "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    )
    sync: dict[str, Any] = json.loads(text)["syncs"]["customers"]
    return sync


def coordination_sheet(folder: Path, src: str, dst: str, state: str, every: str, lag: str) -> Path:
    changes = {"method": "watermark", "column": "last_modified", "lag": lag}
    customers = customers_sync(folder)
    customers["from"]["connection"] = "src"
    customers["to"]["connection"] = "dst"
    customers["changes"] = changes
    customers["schedule"] = {"every": every}
    syncs: dict[str, Any] = {"customers": customers}
    for i in range(SMALL_TABLES):
        t = small_name(i)
        syncs[t] = {
            "from": {"connection": "src", "table": t},
            "to": {"connection": "dst", "table": t},
            "key": {"from": "id", "to": "id"},
            "fields": {"name": "name", "val": "val", "marker": "marker", "updated_at": "last_modified"},
            "changes": changes,
            "delivery": {"batch": common.DEFAULT_BATCH},
            "schedule": {"every": every},
        }
    doc = {
        "version": 1,
        "connections": {"src": {"url": src}, "dst": {"url": dst}},
        "state": {"url": state},
        "syncs": syncs,
    }
    path = folder / "sheet.yaml"
    path.write_text(
        "# generated by bench/workers.py (JSON is YAML)\n" + json.dumps(doc, indent=2) + "\n",
        encoding="utf-8",
    )
    return path


def change_source(src: common.ScratchDatabase, marker: str, rnd: int) -> dict[str, int]:
    """Round `rnd`: 5 % of customers and 20 % of each small table get `marker`; returns the
    expected count per destination table."""
    expected: dict[str, int] = {}
    with common.pg_connect(src.url) as conn:
        cur = conn.execute(
            "UPDATE customers SET notes = %s, last_modified = clock_timestamp() WHERE id %% %s = %s",
            (marker, CUSTOMERS_SHARE, rnd % CUSTOMERS_SHARE),
        )
        expected["customer"] = cur.rowcount
        for i in range(SMALL_TABLES):
            t = small_name(i)
            cur = conn.execute(
                f"UPDATE {t} SET marker = %s, last_modified = clock_timestamp() WHERE id %% %s = %s",
                (marker, SMALL_SHARE, rnd % SMALL_SHARE),
            )
            expected[t] = cur.rowcount
        conn.commit()
    return expected


def arrived(dst: common.ScratchDatabase, marker: str) -> dict[str, int]:
    with common.pg_connect(dst.url, autocommit=True) as conn:
        counts = {
            "customer": conn.execute("SELECT count(*) FROM customer WHERE notes = %s", (marker,)).fetchone()[
                0
            ]
        }
        for i in range(SMALL_TABLES):
            t = small_name(i)
            counts[t] = conn.execute(f"SELECT count(*) FROM {t} WHERE marker = %s", (marker,)).fetchone()[0]
    return counts


def run_rows(state: common.ScratchDatabase, after_id: int) -> list[dict[str, Any]]:
    with common.pg_connect(state.url, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT id, sync, status, worker, written, message FROM mapsync_runs WHERE id > %s ORDER BY id",
            (after_id,),
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def last_run_id(state: common.ScratchDatabase) -> int:
    return int(state.scalar("SELECT coalesce(max(id), 0) FROM mapsync_runs"))


def coordination(args: argparse.Namespace) -> int:
    counts = [int(x) for x in args.daemons.split(",")]
    say(
        f"coordination benchmark: {args.rows:,} customers + {SMALL_TABLES} smaller tables, 12 syncs every "
        f"{args.every}, daemons {counts}; {quiet_check()}"
    )
    results: list[dict[str, Any]] = []
    with databases("src", "dst", "state") as (src, dst, state), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        load_source(src, dst, args.rows)
        sheet = coordination_sheet(folder, pg_url(src), pg_url(dst), pg_url(state), args.every, args.lag)
        mapsync(folder, "check", str(sheet))
        started = time.perf_counter()
        mapsync(folder, "seed", str(sheet))
        say(f"  seed of all 12 syncs (not measured): {time.perf_counter() - started:.1f} s")
        extra = ["--parallel", str(args.parallel)] if args.parallel else []
        daemons = Daemons(folder, sheet, extra)
        try:
            for rnd, n in enumerate(counts):
                results.append(coordination_round(args, folder, sheet, src, dst, state, daemons, rnd, n))
        finally:
            daemons.stop(timeout=30)
    return coordination_report(args, results)


def coordination_round(
    args: argparse.Namespace,
    folder: Path,
    sheet: Path,
    src: common.ScratchDatabase,
    dst: common.ScratchDatabase,
    state: common.ScratchDatabase,
    daemons: Daemons,
    rnd: int,
    n: int,
) -> dict[str, Any]:
    say(f"\n  {n} daemon(s): {quiet_check(args.quiet_wait)}")
    first_id = last_run_id(state)
    daemons.start(n, f"a{n}")
    t_start = time.perf_counter()
    seen = settle(folder, sheet, daemons, n, args.settle)
    say(f"    settled after {time.perf_counter() - t_start:.1f} s: {seen}")
    marker = f"round{rnd + 1}_{n}d"
    expected = change_source(src, marker, rnd)
    t0 = time.perf_counter()
    say(
        f"    changed {sum(expected.values()):,} rows ({expected['customer']:,} customers); "
        "waiting for delivery"
    )
    done = False
    got: dict[str, int] = {}
    while time.perf_counter() - t0 < args.timeout:
        if not daemons.alive():
            break
        got = arrived(dst, marker)
        if all(got[t] >= c for t, c in expected.items()):
            done = True
            break
        time.sleep(0.25)
    delivered_s = time.perf_counter() - t0
    stopped = daemons.stop()
    alive_s = time.perf_counter() - t_start
    if not done:
        short = {t: f"{got.get(t, 0)}/{c}" for t, c in expected.items() if got.get(t, 0) < c}
        raise RuntimeError(
            f"{n} daemon(s): not delivered after {args.timeout:.0f} s: {short}; "
            f"last log lines:\n{log_tail(stopped[0].log)}"
        )
    rows = run_rows(state, first_id)
    per: list[dict[str, Any]] = []
    for d in stopped:
        line = d.stopped or {}
        worker = line.get("worker")
        mine = [r for r in rows if r["worker"] == worker]
        per.append(
            {
                "pid": d.proc.pid,
                "exit": d.exit_code,
                "worker": worker,
                "coordination_ms": number(line.get("coordination_ms")),
                "run_ms": number(line.get("run_ms")),
                "runs": len(mine),
                "written": sum(r["written"] or 0 for r in mine),
                "syncs": len({r["sync"] for r in mine if r["written"]}),
            }
        )
        if d.stopped is None:
            say(
                f"    daemon {d.proc.pid} exited {d.exit_code} without a daemon_stopped line:\n"
                + log_tail(d.log)
            )
    coord = [p["coordination_ms"] for p in per]
    run = [p["run_ms"] for p in per]
    c_sum = sum(c for c in coord if c is not None) if all(c is not None for c in coord) else None
    r_sum = sum(r for r in run if r is not None) if all(r is not None for r in run) else None
    share = c_sum / r_sum if c_sum is not None and r_sum else None
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    meters = meter_sums(stopped)
    result = {
        "daemons": n,
        "meters": meters,
        "delivered_s": delivered_s,
        "alive_s": alive_s,
        "changed": sum(expected.values()),
        "coordination_ms": c_sum,
        "run_ms": r_sum,
        "share": share,
        "per": per,
        "statuses": statuses,
    }
    for p in per:
        say(
            f"    daemon {p['pid']} (exit {p['exit']}): "
            f"coordination {fmt(p['coordination_ms'], ',.0f', ' ms')}, "
            f"runs {fmt(p['run_ms'], ',.0f', ' ms')} ({p['runs']} run rows, {p['written']:,} rows written, "
            f"{p['syncs']} syncs with changes)"
        )
    say(
        f"    delivered in {delivered_s:.1f} s after the change (daemons up {alive_s:.1f} s); "
        f"run rows {statuses}; share {fmt(share * 100 if share is not None else None, '.2f', ' %')}"
    )
    say(f"    coordination by kind: {breakdown(meters)}")
    return result


def coordination_report(args: argparse.Namespace, results: list[dict[str, Any]]) -> int:
    say(
        f"\ncoordination share, {args.rows:,} customers + {SMALL_TABLES} tables, 12 syncs every {args.every}:"
    )
    say(
        f"  {'daemons':>7} {'coordination':>14} {'run time':>12} {'share':>8} "
        f"{'vs 1 daemon':>12} {'delivered':>10}"
    )
    base = next((r["share"] for r in results if r["daemons"] == 1), None)
    for r in results:
        share = r["share"]
        vs = (
            f"{share / base:.2f}x"
            if share is not None and base and r["daemons"] != 1
            else "baseline"
            if r["daemons"] == 1
            else "n/a"
        )
        say(
            f"  {r['daemons']:>7} {fmt(r['coordination_ms'], ',.0f', ' ms'):>14} "
            f"{fmt(r['run_ms'], ',.0f', ' ms'):>12} "
            f"{fmt(share * 100 if share is not None else None, '.2f', ' %'):>8} {vs:>12} "
            f"{r['delivered_s']:>8.1f} s"
        )
    four = next((r for r in results if r["daemons"] == 4), None)
    if four is None:
        say("  target < 5 % at 4 daemons: not measured (no 4 in --daemons)")
    elif four["share"] is None:
        say("  target < 5 % at 4 daemons: n/a (the daemons report no coordination_ms/run_ms)")
    else:
        ok = four["share"] < TARGET_SHARE
        say(f"  target < 5 % at 4 daemons: {four['share']:.2%}: {'met' if ok else 'MISSED'}")
    say(f"  after the runs (the benchmark's own load included): {common.load_average()}")
    return 0


# --------------------------------------------------------------------------- Part B: schedule


def schedule_sheet(folder: Path, syncs: int, state: str, every: str) -> Path:
    source = folder / "source.sqlite"
    dest = folder / "dest.sqlite"
    con = sqlite3.connect(source)
    con.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, last_modified TEXT NOT NULL)"
    )
    con.execute("CREATE INDEX items_last_modified ON items (last_modified, id)")
    con.commit()
    con.close()
    con = sqlite3.connect(dest)
    for i in range(syncs):
        con.execute(
            f"CREATE TABLE d{i + 1:04d} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "updated_at TEXT NOT NULL)"
        )
    con.commit()
    con.close()
    doc = {
        "version": 1,
        "connections": {"src": {"url": f"sqlite:///{source}"}, "dst": {"url": f"sqlite:///{dest}"}},
        "state": {"url": state},
        "syncs": {
            f"s{i + 1:04d}": {
                "from": {"connection": "src", "table": "items"},
                "to": {"connection": "dst", "table": f"d{i + 1:04d}"},
                "key": {"from": "id", "to": "id"},
                "fields": {"name": "name", "updated_at": "last_modified"},
                "changes": {"method": "watermark", "column": "last_modified", "lag": "1s"},
                "schedule": {"every": every},
            }
            for i in range(syncs)
        },
    }
    path = folder / "sheet.yaml"
    path.write_text(
        "# generated by bench/workers.py (JSON is YAML)\n" + json.dumps(doc, indent=2) + "\n",
        encoding="utf-8",
    )
    return path


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def schedule(args: argparse.Namespace) -> int:
    counts = [int(x) for x in args.daemons.split(",")]
    say(
        f"schedule benchmark: {args.syncs} syncs every 60s, {args.minutes} slot(s), daemons {counts}"
        f"{', --parallel ' + str(args.parallel) if args.parallel else ''}; {quiet_check()}"
    )
    results: list[dict[str, Any]] = []
    with databases("state") as (state,), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sheet = schedule_sheet(folder, args.syncs, pg_url(state), "60s")
        mapsync(folder, "check", str(sheet))
        started = time.perf_counter()
        mapsync(folder, "seed", str(sheet))
        say(f"  seed of {args.syncs} syncs (not measured): {time.perf_counter() - started:.1f} s")
        extra = ["--parallel", str(args.parallel)] if args.parallel else []
        daemons = Daemons(folder, sheet, extra)
        try:
            for n in counts:
                results.append(schedule_round(args, state, daemons, n))
        finally:
            daemons.stop(timeout=30)
    return schedule_report(args, results)


def schedule_round(
    args: argparse.Namespace, state: common.ScratchDatabase, daemons: Daemons, n: int
) -> dict[str, Any]:
    lead = args.lead
    quiet = quiet_check(args.quiet_wait)
    now = time.time()
    first_slot = (int(now + lead) // 60 + 1) * 60  # the first full minute at least `lead` s away
    time.sleep(max(0.0, first_slot - lead - time.time()))
    say(f"\n  {n} daemon(s), first slot {time.strftime('%H:%M:%S', time.gmtime(first_slot))} UTC: " + quiet)
    first_id = last_run_id(state)
    cpu0 = postgres_cpu_s()
    daemons.start(n, f"b{n}")
    last_slot = first_slot + (args.minutes - 1) * 60
    stop_at = last_slot + 55  # before the next slot
    cpu1: float | None = None
    while time.time() < stop_at:
        if len(daemons.alive()) < n:
            break
        if cpu1 is None and time.time() >= first_slot - 2:
            cpu1 = postgres_cpu_s()  # started and settled: the slots' own work from here
        time.sleep(0.25 if cpu1 is None else 1.0)
    cpu2 = postgres_cpu_s()
    stopped = daemons.stop()
    cpu = postgres_cpu_s() - cpu0
    slots_cpu = cpu2 - cpu1 if cpu1 is not None else None
    for d in stopped:
        if d.stopped is None or d.exit_code:
            say(f"    daemon {d.proc.pid} exited {d.exit_code}; last log lines:\n{log_tail(d.log)}")
    lo = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first_slot))
    hi = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(last_slot)) + "~"  # past any fraction/zone
    with common.pg_connect(state.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, lateness_ms, message, scheduled_at, worker FROM mapsync_runs "
            "WHERE id > %s AND slot = 'run' AND scheduled_at >= %s AND scheduled_at <= %s",
            (first_id, lo, hi),
        ).fetchall()
        other = conn.execute(
            "SELECT count(*) FROM mapsync_runs WHERE id > %s AND (slot IS NULL OR slot <> 'run' "
            "OR scheduled_at < %s OR scheduled_at > %s)",
            (first_id, lo, hi),
        ).fetchone()[0]
    ran = [r for r in rows if r[0] != "skipped"]
    skipped: dict[str, int] = {}
    for r in rows:
        if r[0] == "skipped":
            reason = (r[2] or "").split(":", 1)[0]
            skipped[reason] = skipped.get(reason, 0) + 1
    late = sorted(float(r[1]) for r in ran if r[1] is not None)
    statuses: dict[str, int] = {}
    for r in ran:
        statuses[r[0]] = statuses.get(r[0], 0) + 1
    coord = [number((d.stopped or {}).get("coordination_ms")) for d in stopped]
    runms = [number((d.stopped or {}).get("run_ms")) for d in stopped]
    expected = args.syncs * args.minutes
    result = {
        "daemons": n,
        "expected": expected,
        "runs": len(ran),
        "statuses": statuses,
        "skipped": skipped,
        "missing": expected - len(rows),
        "other": other,
        "p50": quantile(late, 0.50) if late else None,
        "p95": quantile(late, 0.95) if late else None,
        "p99": quantile(late, 0.99) if late else None,
        "max": late[-1] if late else None,
        "cpu_s": cpu,
        "cpu_ms_per_run": cpu * 1000 / len(ran) if ran else None,
        "slots_cpu_s": slots_cpu,
        "slots_cpu_ms_per_run": slots_cpu * 1000 / len(ran) if ran and slots_cpu is not None else None,
        "coordination_ms": sum(c for c in coord if c is not None)
        if all(c is not None for c in coord)
        else None,
        "run_ms": sum(r for r in runms if r is not None) if all(r is not None for r in runms) else None,
        "workers": len({r[4] for r in ran}),
        "meters": meter_sums(stopped),
    }
    say(
        f"    {len(ran)} scheduled runs of {expected} slots ({statuses}), skipped {skipped or 0}, "
        f"no row at all {result['missing']}, other run rows {other}, by {result['workers']} worker(s)"
    )
    say(
        f"    lateness p50 {fmt(result['p50'])} ms, p95 {fmt(result['p95'])} ms, "
        f"p99 {fmt(result['p99'])} ms, max {fmt(result['max'])} ms; "
        f"PostgreSQL CPU {cpu:.2f} s = {fmt(result['cpu_ms_per_run'], '.2f')} ms/run from the daemons' "
        f"start to their stop, {fmt(slots_cpu, '.2f')} s = {fmt(result['slots_cpu_ms_per_run'], '.2f')} "
        "ms/run from 2 s before the first slot to the SIGTERM"
    )
    say(f"    coordination by kind: {breakdown(result['meters'])}")
    return result


def schedule_report(args: argparse.Namespace, results: list[dict[str, Any]]) -> int:
    say(f"\nscheduling delay, {args.syncs} syncs every 60 s, {args.minutes} slot(s) each:")
    say(
        f"  {'daemons':>7} {'runs':>6} {'skipped':>7} {'missing':>7} "
        f"{'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} "
        f"{'pg CPU/run':>11} {'(slots)':>9} {'coord/run':>10}"
    )
    base = next((r for r in results if r["daemons"] == 1), None)
    for r in results:
        cr = r["coordination_ms"] / r["run_ms"] if r["coordination_ms"] is not None and r["run_ms"] else None
        say(
            f"  {r['daemons']:>7} {r['runs']:>6} {sum(r['skipped'].values()):>7} {r['missing']:>7} "
            f"{fmt(r['p50'], '.0f', ' ms'):>8} {fmt(r['p95'], '.0f', ' ms'):>8} "
            f"{fmt(r['p99'], '.0f', ' ms'):>8} "
            f"{fmt(r['max'], '.0f', ' ms'):>8} {fmt(r['cpu_ms_per_run'], '.2f', ' ms'):>11} "
            f"{fmt(r['slots_cpu_ms_per_run'], '.2f', ' ms'):>9} "
            f"{fmt(cr * 100 if cr is not None else None, '.1f', ' %'):>10}"
        )
        if base is not None and r is not base and r["p99"] is not None and base["p99"]:
            cpu, cpu1 = r["cpu_ms_per_run"], base["cpu_ms_per_run"]
            say(
                f"          vs 1 daemon: p99 {r['p99'] / base['p99']:.2f}x, "
                f"CPU/run {fmt(cpu / cpu1 if cpu and cpu1 else None, '.2f', 'x')}"
            )
    for r in results:
        if r["p99"] is None:
            say(f"  target p99 < 1 s ({r['daemons']} daemon(s)): n/a (no scheduled run)")
        else:
            ok = r["p99"] < TARGET_P99_MS and r["missing"] == 0
            why = "" if r["missing"] == 0 else f" ({r['missing']} slots have no row)"
            say(
                f"  target p99 < 1 s ({r['daemons']} daemon(s)): {r['p99']:.0f} ms{why}: "
                + ("met" if ok else "MISSED")
            )
    say(
        "  pg CPU/run: all PostgreSQL server processes, all databases (other work on the machine "
        "included), daemons' start to stop; (slots): 2 s before the first slot to the SIGTERM"
    )
    say(f"  after the runs (the benchmark's own load included): {common.load_average()}")
    return 0


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="part", required=True)
    a = sub.add_parser("coordination", help="Part A: coordination share with 1, 2 and 4 daemons")
    a.add_argument("--rows", type=int, default=1_000_000, help="customers (default 1,000,000)")
    a.add_argument("--daemons", default="1,2,4", help="daemon counts, in this order (default 1,2,4)")
    a.add_argument("--every", default="5s", help="schedule.every of the 12 syncs (default 5s)")
    a.add_argument("--lag", default="1s", help="changes.lag of the watermark syncs (default 1s)")
    a.add_argument("--parallel", type=int, help="the daemons' --parallel (default: the daemon's)")
    a.add_argument("--settle", type=float, default=120.0, help="seconds to wait for the claims to balance")
    a.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the delivery")
    a.add_argument("--quiet-wait", type=float, default=0.0, help="wait up to this many s for a quiet machine")
    b = sub.add_parser("schedule", help="Part B: scheduling delay of many cheap syncs")
    b.add_argument("--syncs", type=int, default=1000, help="configured syncs (default 1000)")
    b.add_argument("--minutes", type=int, default=3, help="60 s slots measured (default 3)")
    b.add_argument("--daemons", default="1", help="daemon counts, in this order (default 1)")
    b.add_argument("--parallel", type=int, help="the daemons' --parallel (default: the daemon's)")
    b.add_argument(
        "--lead", type=float, default=30.0, help="start the daemons this many s before the first slot"
    )
    b.add_argument("--quiet-wait", type=float, default=0.0, help="wait up to this many s for a quiet machine")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    if args.part == "coordination":
        if args.rows <= 0:
            parser.error("--rows must be positive")
        return coordination(args)
    if args.syncs <= 0 or args.minutes <= 0:
        parser.error("--syncs and --minutes must be positive")
    return schedule(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted (scratch databases dropped)", file=sys.stderr)
        sys.exit(130)
