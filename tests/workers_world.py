"""A world for tests of several `mapsync daemon` processes on one state store
(tests/integration/test_workers_process.py): PostgreSQL source and destination with one table
pair per sync, a sheet whose syncs run every second under a short lease, a background writer
that inserts and updates source rows, daemon processes that are always cleaned up, and the
checks the tests share (every slot once, the destination equal to the source)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests import helpers as h

HEAD = """\
version: 1
{state}connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
syncs:
"""

SYNC = """\
  {name}:
    from: {{connection: src, table: {name}}}
    to: {{connection: dst, table: {name}}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: {lag}}}
    delivery: {{batch: {batch}}}
    schedule: {{every: {every}}}
"""

# the writer stamps rows with the source's clock: a row stamped at t and committed a few ms
# later must not fall behind a watermark read at t, hence a lag above the writer's commit time
LAG = "1s"
SEEDED = 10  # rows per table before the seed


def parse(stamp: str) -> dt.datetime:
    """A state store stamp ('YYYY-MM-DDTHH:MM:SS.ffffffZ') as an aware UTC datetime."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(dt.UTC)


@dataclasses.dataclass
class World:
    tmp_path: Path
    src: str
    dst: str
    state: str | None  # None: the default SQLite store under .mapsync/
    syncs: list[str]
    every: dt.timedelta
    lease_ttl: dt.timedelta

    @property
    def state_url(self) -> str:
        return self.state or f"sqlite:///{self.tmp_path / '.mapsync' / 'state.db'}"

    def db_now(self) -> dt.datetime:
        """The state store's clock (PostgreSQL's clock_timestamp(); the process's for SQLite)."""
        if self.state is None:
            return dt.datetime.now(dt.UTC)
        value = h.query(self.state, "SELECT clock_timestamp()")[0][0]
        assert isinstance(value, dt.datetime)
        return value.astimezone(dt.UTC)

    def runs(self, where: str = "kind <> 'seed'") -> list[dict[str, Any]]:
        """Every run row (the seed's left out), oldest first."""
        cols = (
            "id, sync, kind, trigger, slot, scheduled_at, started_at, finished_at, status, message, "
            "worker, written, lateness_ms, coalesced"
        )
        names = [c.strip() for c in cols.split(",")]
        rows = h.query(self.state_url, f"SELECT {cols} FROM mapsync_runs WHERE {where} ORDER BY id")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def cli(self, *args: str, process: bool | None = None, env: dict[str, str] | None = None) -> Any:
        return h.mapsync(*args, cwd=self.tmp_path, process=process, env=env)

    def workers(self) -> dict[str, Any]:
        """`mapsync workers sheet.yaml --json`, parsed (asserts exit 0)."""
        result = self.cli("workers", "sheet.yaml", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        parsed = json.loads(result.stdout)
        assert isinstance(parsed, dict)
        return parsed

    def alive(self) -> dict[str, list[str]]:
        """Alive workers' ids and the syncs each owns."""
        return {w["id"]: sorted(w["owns"]) for w in self.workers()["workers"] if w["alive"]}

    def split(self, count: int) -> dict[str, list[str]] | None:
        """The alive workers' claims when exactly `count` are alive, their claims disjoint and
        covering every sync, and each owns some; else None."""
        alive = self.alive()
        owned = [s for owns in alive.values() for s in owns]
        if len(alive) != count or sorted(owned) != sorted(self.syncs) or not all(alive.values()):
            return None
        return alive

    def sessions(self) -> list[str]:
        """The state store's sessions (PostgreSQL): who waits for whose lock, who sits in a
        transaction (for assertion messages)."""
        if self.state is None:
            return []
        rows = h.query(
            self.state,
            "SELECT pid, application_name, state, wait_event_type, pg_blocking_pids(pid), "
            "now() - xact_start, left(query, 150) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid",
        )
        return ["session " + " | ".join(str(v) for v in r) for r in rows]

    def table(self, url: str, name: str) -> list[tuple[Any, ...]]:
        return h.query(url, f'SELECT id, name FROM "{name}" ORDER BY id')

    def differences(self) -> dict[str, str]:
        """Per sync whose destination table differs from its source: what differs."""
        found: dict[str, str] = {}
        for name in self.syncs:
            src, dst = self.table(self.src, name), self.table(self.dst, name)
            if src != dst:
                missing = sorted(set(src) - set(dst))[:5]
                extra = sorted(set(dst) - set(src))[:5]
                found[name] = (
                    f"{len(src)} source rows, {len(dst)} destination: missing {missing}, wrong {extra}"
                )
        return found

    def catch_up(self) -> None:
        """After the daemons stopped and the writer too: wait out the watermark lag, one last
        `mapsync run` delivers what the daemons had not yet."""
        h.wait_for(lambda: False, timeout=_seconds(LAG) + 0.3)
        result = self.cli("run", "sheet.yaml")
        assert result.returncode == 0, result.stdout + result.stderr

    def timeline(self, sync: str) -> list[str]:
        """Sync `sync`'s scheduled runs, one line each (for assertion messages)."""
        return [
            f"{r['id']} {r['slot']} {r['scheduled_at']} started {r['started_at']} {r['status']} "
            f"by {r['worker']} coalesced {r['coalesced']} {r['message'] or ''}"
            for r in self.runs(f"sync = '{sync}' AND slot IS NOT NULL")
        ]

    def assert_every_slot_once(self) -> None:
        problems = self.slot_problems()
        first = problems[0].split(":")[0] if problems else None
        assert problems == [], "\n".join([*problems, *(self.timeline(first) if first else [])])

    def slot_problems(self) -> list[str]:
        """What breaks "every scheduled slot once": a (sync, slot, scheduled_at) with more than
        one row; a `run` slot between a sync's first and last that no row stands for (a row
        stands for its own slot and the `coalesced` missed slots before it: what a daemon that
        comes back after a gap runs once), or that two stand for; a slot off the schedule's grid."""
        runs = [r for r in self.runs() if r["slot"] is not None]
        problems: list[str] = []
        counts = collections.Counter((r["sync"], r["slot"], r["scheduled_at"]) for r in runs)
        problems += [f"{k}: {n} rows" for k, n in counts.items() if n > 1]
        step = self.every
        for name in self.syncs:
            mine = [r for r in runs if r["sync"] == name and r["slot"] == "run"]
            if not mine:
                problems.append(f"{name}: no scheduled run at all")
                continue
            covered: collections.Counter[dt.datetime] = collections.Counter()
            for r in mine:
                at = parse(r["scheduled_at"])
                if (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) % step:
                    problems.append(f"{name}: slot {r['scheduled_at']} is off the {step} grid")
                for i in range(int(r["coalesced"] or 0) + 1):
                    covered[at - i * step] += 1
            first = min(parse(r["scheduled_at"]) for r in mine)
            last = max(parse(r["scheduled_at"]) for r in mine)
            slot = first
            while slot <= last:
                if covered[slot] != 1:
                    problems.append(f"{name}: slot {slot:%H:%M:%S.%f} has {covered[slot]} rows for it")
                slot += step
        return problems


def _seconds(text: str) -> float:
    assert text.endswith("s")
    return float(text[:-1])


def build(
    tmp_path: Path,
    src: str,
    dst: str,
    state: str | None,
    syncs: int = 12,
    every: str = "1s",
    lease_ttl: str = "3s",
    batch: int = 5,
) -> World:
    """Create the tables (SEEDED rows in each source table), write the sheet, seed."""
    names = [f"t{i:02d}" for i in range(1, syncs + 1)]
    for name in names:
        h.execute(
            src,
            f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, name VARCHAR(50), last_modified TIMESTAMP(6))',
        )
        h.execute(dst, f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, name VARCHAR(50))')
        h.execute(
            src,
            f"INSERT INTO \"{name}\" SELECT g, 's' || g, clock_timestamp() AT TIME ZONE 'UTC' "
            f"FROM generate_series(1, {SEEDED}) g",
        )
    block = "" if state is None else f'state: {{url: "{state}", lease_ttl: {lease_ttl}}}\n'
    text = HEAD.format(state=block, src=src, dst=dst) + "".join(
        SYNC.format(name=n, lag=LAG, batch=batch, every=every) for n in names
    )
    (tmp_path / "sheet.yaml").write_text(text)
    world = World(
        tmp_path,
        src,
        dst,
        state,
        names,
        dt.timedelta(seconds=_seconds(every)),
        dt.timedelta(seconds=_seconds(lease_ttl)),
    )
    seeded = world.cli("seed", "sheet.yaml")
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert world.differences() == {}
    return world


class Writer(threading.Thread):
    """Inserts and updates source rows (stamped with the source's clock) until stopped, a
    statement every `pause` seconds over every table."""

    def __init__(self, world: World, pause: float = 0.03, seed: int = 14) -> None:
        super().__init__(daemon=True, name="source-writer")
        self.world = world
        self.pause = pause
        self.random = random.Random(seed)
        self.done = threading.Event()
        self.inserted = 0
        self.updated = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        engine = h.engine(self.world.src)
        next_id = dict.fromkeys(self.world.syncs, SEEDED + 1)
        try:
            while not self.done.wait(self.pause):
                name = self.random.choice(self.world.syncs)
                with engine.begin() as conn:
                    if self.random.random() < 0.6:
                        conn.execute(
                            sa.text(
                                f"INSERT INTO \"{name}\" VALUES (:id, :n, clock_timestamp() AT TIME ZONE 'UTC')"
                            ),
                            {"id": next_id[name], "n": f"i{next_id[name]}"},
                        )
                        next_id[name] += 1
                        self.inserted += 1
                    else:
                        key = self.random.randrange(1, next_id[name])
                        conn.execute(
                            sa.text(
                                f'UPDATE "{name}" SET name = :n, '
                                "last_modified = clock_timestamp() AT TIME ZONE 'UTC' WHERE id = :id"
                            ),
                            {"id": key, "n": f"u{self.updated}"},
                        )
                        self.updated += 1
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            engine.dispose()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)
        assert self.error is None, repr(self.error)
        assert self.inserted > 0 and self.updated > 0


class Daemon:
    """A `mapsync daemon sheet.yaml` process, its output in files (a pipe of JSON logs read by
    nobody would fill up and block it)."""

    def __init__(
        self, world: World, name: str, env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.out = world.tmp_path / f"{name}.out"
        self.err = world.tmp_path / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mapsync",
                    "--log-format",
                    "json",
                    "--log-level",
                    "info",
                    "daemon",
                    "sheet.yaml",
                    "--poll",
                    "200ms",
                    *args,
                ],
                cwd=world.tmp_path,
                env={**os.environ, "NO_COLOR": "1", **(env or {})},
                stdout=out,
                stderr=err,
                text=True,
            )

    @property
    def worker(self) -> str:
        """Its worker id, as the daemon records it ("host:pid")."""
        return f"{socket.gethostname()}:{self.proc.pid}"

    def stderr(self) -> str:
        return self.err.read_text()

    def logs(self) -> list[dict[str, Any]]:
        """Its JSON log lines (others skipped)."""
        found = []
        for line in self.stderr().splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                found.append(parsed)
        return found

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL if it still runs (SIGCONT first: it may have stopped itself), and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=30)


@dataclasses.dataclass
class Fleet:
    """The daemons a test started: each one killed at the end, whatever happened."""

    world: World
    daemons: list[Daemon] = dataclasses.field(default_factory=list)

    def start(self, name: str, env: dict[str, str] | None = None, args: Sequence[str] = ()) -> Daemon:
        daemon = Daemon(self.world, name, env, args)
        self.daemons.append(daemon)
        return daemon

    def kill_all(self) -> None:
        for d in self.daemons:
            d.kill()


@contextlib.contextmanager
def fleet(world: World) -> Iterator[Fleet]:
    """The daemons of a test: every one still running at the end SIGKILLed (SIGCONT first)."""
    f = Fleet(world)
    try:
        yield f
    finally:
        f.kill_all()
