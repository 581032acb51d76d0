"""Asynchronous delivery (`delivery.mode: async`) into the CIMcloud sandbox (> 10 records per call
are queued; `async_contract: none` confirms by reading back by user key, `jobs` polls the job
endpoint) and into a generic REST job API on the fault server: calls counted from the servers'
logs, jobs that never finish / fail per record / expire, and kill -9 after the batch id and after
the job id were persisted, with reruns that resubmit nothing blindly."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state import async_batches, schema
from mapsync.state.store import StateStore
from mapsync.testing.fault_server import Fault, FaultServer, Reply, Request
from mapsync.testing.sandbox_serve import InProcess, Running
from tests import helpers as h

ENV = {"CIM_PASSWORD": "sandbox-password", "CIM_KEY": "sandbox-key"}

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  cim:
    kind: cimcloud
    base_url: "{base}"
    site: sandbox
    auth: {{type: token, auth_key: "${{CIM_KEY}}", username: sandbox, password: "${{CIM_PASSWORD}}"}}
    async_contract: {contract}
    budget: []
    retry: {{attempts: 3, backoff: 50ms}}
syncs:
  accounts:
    from: {{connection: erp, table: customers}}
    to: {{connection: cim, resource: account}}
    key: {{from: customer_no, to: ref_id}}
    fields:
      nm: name
      status: {{from: status, map: {{A: 1, I: 0}}}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    deletes: {{policy: disable, field: status, value: "0"}}
    delivery: {{{delivery}}}
"""
FAST = "poll_every: 100ms, async_timeout: {timeout}"


def now_text() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9 // 1000:06d}"


class World:
    """A SQLite `customers` table, a sandbox and the sheet between them."""

    def __init__(
        self, src: str, box: Running | InProcess, folder: Path, contract: str, delivery: str
    ) -> None:
        self.src, self.box, self.folder = src, box, folder
        h.execute(
            src,
            "CREATE TABLE customers (customer_no VARCHAR(20) PRIMARY KEY, name VARCHAR(100), "
            "status VARCHAR(1), last_modified TIMESTAMP)",
        )
        text = SHEET.format(src=src, base=box.base_url, contract=contract, delivery=delivery)
        (folder / "sheet.yaml").write_text(text)
        self.loaded = loader.load(folder / "sheet.yaml", env=ENV)
        self.store = StateStore.open(self.loaded.sheet.state.url, folder, create=True)
        self.engine: Engine | None = None

    def add(self, n: int, start: int = 0) -> None:
        rows = [
            {"k": f"C{i:05d}", "n": f"Customer {i}", "s": "A", "t": now_text()}
            for i in range(start, start + n)
        ]
        h.execute(self.src, "INSERT INTO customers VALUES (:k, :n, :s, :t)", params=rows)

    def rename(self, keys: list[str], name: str) -> None:
        for key in keys:
            h.execute(
                self.src,
                "UPDATE customers SET name = :n, last_modified = :t WHERE customer_no = :k",
                params={"n": name, "t": now_text(), "k": key},
            )

    def run(self, kind: str) -> Any:
        if self.engine is None:
            self.engine = Engine(self.loaded, self.store)
        return self.engine.run("accounts", kind)

    def cli(self, kind: str, process: bool | None = None, **env: str) -> Any:
        return h.mapsync(kind, "sheet.yaml", "--json", cwd=self.folder, env={**ENV, **env}, process=process)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.store.close()

    def accounts(self) -> dict[str, dict[str, str]]:
        return {r["ref_id"]: r for r in self.box.sandbox.store.all("accounts")}

    def log(self, method: str, prefix: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.box.sandbox.store.requests()
            if r["method"] == method and r["path"].startswith(prefix)
        ]

    def batches(self) -> list[dict[str, Any]]:
        t = schema.async_batches
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.created_at)).mappings().all()
        return [dict(r) for r in rows]

    def assert_all_present(self, n: int, name: Callable[[int], str] = lambda i: f"Customer {i}") -> None:
        accounts = self.accounts()
        assert len(accounts) == n and len(self.box.sandbox.store.all("accounts")) == n
        for i in range(n):
            row = accounts[f"C{i:05d}"]
            assert row["nm"] == name(i) and row["status"] == "1", row


@pytest.fixture
def world(
    sqlite_database: Callable[[], str], cimcloud_sandbox_factory: Callable[..., Running], tmp_path: Path
) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(
        contract: str = "none", delivery: str = "", timeout: str = "20s", process: bool = False, **box: Any
    ) -> World:
        """`process`: the sandbox on a real socket, for a CLI in another process; else reached
        in-process through its httpx transport (the engine runs here)."""
        box.setdefault("queue_delay", 0.3)
        sandbox = cimcloud_sandbox_factory(async_contract=contract, in_process=not process, **box)
        spec = ", ".join(x for x in ("mode: async", FAST.format(timeout=timeout), delivery) if x)
        w = World(sqlite_database(), sandbox, tmp_path, contract, spec)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("contract", ["none", "jobs"])
def test_async_seed_delivers_every_record_with_few_calls(world: Callable[..., World], contract: str) -> None:
    """3,000 rows, batches of 500: ⌈N/500⌉ submits, then read-backs (`none`, one GET per 50 keys)
    or job polls (`jobs`); every record present once with its values; every batch finished."""
    w = world(contract, "batch: 500, async_batch: 500")
    n = 3000
    w.add(n)
    report = w.run("seed")
    assert report.status == "success", report.message
    assert report.counts.written == n and report.counts.rejected == 0
    w.assert_all_present(n)
    submits = w.log("POST", "account")
    assert len(submits) == math.ceil(n / 500)
    reads = w.log("GET", "accounts/")
    polls = w.log("GET", "jobs/")
    if contract == "none":
        # 10 GETs per round of 500 keys; a round before the queue ran may come back empty
        assert not polls and 60 <= len(reads) <= 6 * 10 * 3, len(reads)
    else:
        assert not reads and 6 <= len(polls) <= 6 * 4, len(polls)
    assert [b["status"] for b in w.batches()] == ["done"] * 6
    assert all(b["job_id"] for b in w.batches()) == (contract == "jobs")


def test_batches_of_one_write_are_submitted_before_any_is_awaited(world: Callable[..., World]) -> None:
    """A read page of 1,000 with `async_batch: 250`: four jobs queued back to back, then polled;
    the queue works on them together."""
    w = world("jobs", "batch: 1000, async_batch: 250")
    w.add(2000)
    report = w.run("seed")
    assert report.status == "success" and report.counts.written == 2000
    w.assert_all_present(2000)
    log = [r for r in w.box.sandbox.store.requests() if r["path"] != "authenticate"]
    kinds = ["submit" if r["method"] == "POST" else "poll" for r in log]
    first_poll = kinds.index("poll")
    assert kinds[:first_poll] == ["submit"] * 4 and kinds.count("submit") == 8
    second_write = kinds.index("submit", first_poll)
    assert kinds[second_write : second_write + 4] == ["submit"] * 4
    assert len(w.batches()) == 8 and {b["status"] for b in w.batches()} == {"done"}


def test_seed_async_then_incremental_sync(world: Callable[..., World]) -> None:
    """`seed_mode: async, mode: sync`: the seed is queued in batches of 200, the run writes ≤ 10
    records per call and never gets a queued answer."""
    w = world("jobs", "batch: 200, async_batch: 200")
    text = (w.folder / "sheet.yaml").read_text().replace("mode: async", "mode: sync, seed_mode: async")
    (w.folder / "sheet.yaml").write_text(text)
    w.loaded = loader.load(w.folder / "sheet.yaml", env=ENV)
    w.add(400)
    assert w.run("seed").status == "success"
    assert len(w.log("POST", "account")) == 2 and len(w.batches()) == 2
    keys = [f"C{i:05d}" for i in range(0, 400, 16)]  # 25 rows
    w.rename(keys, "Renamed")
    report = w.run("run")
    assert report.status == "success" and report.counts.written == 25
    posts = w.log("POST", "account")
    assert len(posts) == 2 + 3 and len(w.batches()) == 2  # 10 + 10 + 5, synchronous
    assert all(r["status"] == 200 for r in posts[2:])
    w.assert_all_present(400, lambda i: "Renamed" if i % 16 == 0 else f"Customer {i}")


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("contract", ["none", "jobs"])
def test_per_record_failures_inside_a_job(world: Callable[..., World], contract: str) -> None:
    """Records the queue refuses are record errors with CIMcloud's message (`jobs`) or "not found
    when read back" (`none`); the others are delivered; nothing is resubmitted."""
    w = world(contract, "batch: 100, async_batch: 100")
    w.box.sandbox.faults.reject = {"C00007": "credit hold", "C00042": "bad territory"}
    w.add(100)
    report = w.run("seed")
    assert report.status == "partial"
    assert report.counts.written == 98 and report.counts.rejected == 2
    assert sorted(r.key for r in report.samples) == [("C00007",), ("C00042",)]
    messages = " ".join(r.message for r in report.samples)
    assert "not found when read back" in messages
    if contract == "jobs":
        assert "credit hold" in messages and "bad territory" in messages
    assert len(w.accounts()) == 98 and len(w.log("POST", "account")) == 1
    assert [b["status"] for b in w.batches()] == ["done"]


def test_job_that_never_finishes_fails_the_run_and_the_next_run_resumes_it(
    world: Callable[..., World],
) -> None:
    """The job outlives `async_timeout`: the run fails with a clear message, the batch stays
    `submitted` with its job id; once the job ends the next run settles it by the job, not by a
    second submit."""
    w = world("jobs", "batch: 30, async_batch: 30", timeout="1500ms", queue_delay=3600)
    w.add(30)
    report = w.run("seed")
    assert report.status == "failed"
    assert "not finished after" in (report.message or "") and "next run resumes" in (report.message or "")
    (batch,) = w.batches()
    assert batch["status"] == "submitted" and batch["job_id"]
    assert len(w.accounts()) == 0
    polls_before = len(w.log("GET", "jobs/"))
    assert 2 <= polls_before <= 6  # bounded: 100ms doubling within 1.5s
    _run_queue_now(w.box)
    report = w.run("seed")
    assert report.status == "success" and report.counts.written == 30, report.message
    assert len(w.log("POST", "account")) == 1  # never resubmitted
    w.assert_all_present(30)
    assert [b["status"] for b in w.batches()] == ["done"]
    assert json.loads(w.batches()[0]["results"])["recovered"]


@pytest.mark.parametrize("applied", [True, False])
def test_expired_job_is_read_back_by_key(world: Callable[..., World], applied: bool) -> None:
    """The job id is unknown by the next run (expired): the batch is read back by user key;
    applied records are not resubmitted, missing ones are."""
    w = world("jobs", "batch: 30, async_batch: 30", timeout="500ms", queue_delay=3600)
    w.add(30)
    assert w.run("seed").status == "failed"
    if applied:
        _run_queue_now(w.box)
    else:
        _drop_queue(w.box)
    w.box.sandbox.store.db.execute("DELETE FROM jobs")
    w.box.sandbox.config.queue_delay = 0.2  # a resubmitted batch is applied again
    reads_before = len(w.log("GET", "accounts/"))
    report = w.run("seed")
    assert report.status == "success" and report.counts.written == 30, report.message
    assert len(w.log("GET", "accounts/")) > reads_before  # read back by key
    assert len(w.log("POST", "account")) == (1 if applied else 2)
    w.assert_all_present(30)
    assert all(b["status"] == "done" for b in w.batches())


def _run_queue_now(box: Running) -> None:
    for timer in box.sandbox._timers:
        timer.cancel()
        timer.function()  # type: ignore[attr-defined]
    box.sandbox._timers.clear()


def _drop_queue(box: Running) -> None:
    for timer in box.sandbox._timers:
        timer.cancel()
    box.sandbox._timers.clear()


# --------------------------------------------------------------------------- kill -9


# Each point of crash.ASYNC_POINTS dies once by a real SIGKILL (`python -m mapsync` as a process)
# and once in-process (mapsync.crash's raise mode: the same state left behind, a second less).
@pytest.mark.parametrize(
    ("contract", "point", "how"),
    [
        ("none", "after_async_record", "sigkill"),
        ("none", "after_async_submit", "inprocess"),
        ("jobs", "after_async_record", "inprocess"),
        ("jobs", "after_async_submit", "sigkill"),
    ],
)
def test_kill_9_between_persisting_and_results(
    world: Callable[..., World], contract: str, point: str, how: str
) -> None:
    """SIGKILL in the 2nd batch, after its batch id (before the submit) or its job id (before the
    results) was persisted; the rerun settles that batch first: no duplicate, nothing lost, no
    blind resubmit (submits = ⌈N/100⌉, plus the one batch that never left when killed before the
    submit), and every bookkeeping row ends `done`."""
    w = world(contract, "batch: 100, async_batch: 100", process=True)
    n = 350
    w.add(n)
    marker = w.folder / "crash.marker"
    env = {"MAPSYNC_CRASH_AT": f"{point}:2", "MAPSYNC_CRASH_MARKER": str(marker)}
    killed = w.cli("seed", process=how == "sigkill", **env)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert marker.read_text().strip() == f"{point}:2"
    rows = w.batches()
    assert [b["status"] for b in rows] == [
        "done",
        "pending" if point == "after_async_record" else "submitted",
    ]
    assert bool(rows[1]["job_id"]) == (contract == "jobs" and point == "after_async_submit")
    assert len(w.log("POST", "account")) == (1 if point == "after_async_record" else 2)
    done = w.cli("seed")
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report["status"] == "success" and report["counts"]["rejected"] == 0
    w.assert_all_present(n)
    assert len(w.log("POST", "account")) == math.ceil(n / 100)  # the killed batch went once
    assert [b["status"] for b in w.batches()] == ["done"] * len(w.batches())
    assert len(w.batches()) == math.ceil(n / 100) + (1 if point == "after_async_record" else 0)


# --------------------------------------------------------------------------- the sheet


@pytest.mark.parametrize(
    ("to", "delivery", "expected"),
    [
        ("sql", "mode: async", "needs a queued destination"),
        ("rest", "mode: async", "needs `delivery.jobs`"),
        ("rest", "seed_mode: async", "needs `delivery.jobs`"),
        ("sql", "jobs: {job_id: id}", "is for REST destinations"),
    ],
)
def test_async_needs_a_queued_destination(tmp_path: Path, to: str, delivery: str, expected: str) -> None:
    dest = (
        '{url: "sqlite:///dst.db"}'
        if to == "sql"
        else '{kind: rest, base_url: "http://127.0.0.1:9", key_param: id}'
    )
    resource = "table: t" if to == "sql" else "resource: items"
    (tmp_path / "sheet.yaml").write_text(
        f"""
version: 1
connections:
  a: {{url: "sqlite:///src.db"}}
  b: {dest}
syncs:
  s:
    from: {{connection: a, table: t}}
    to: {{connection: b, {resource}}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
    delivery: {{{delivery}}}
"""
    )
    with pytest.raises(errors.ConfigError) as info:
        loader.load(tmp_path / "sheet.yaml")
    assert "syncs.s.delivery" in str(info.value) and expected in str(info.value)


# --------------------------------------------------------------------------- generic REST jobs


class JobApi:
    """A REST API with a job queue, served by the fault server: POST /items → 202 {job: {id}};
    GET /jobs/{id} → {state, results}; GET /items?id=a,b → the stored items."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.refuse: dict[str, str] = {}
        self.finish_after = 1  # polls before a job is done (0: never)
        self.lock = threading.Lock()

    def __call__(self, req: Request) -> Reply:
        path, _, query = req.path.partition("?")
        with self.lock:
            if req.method == "POST" and path == "/items":
                job = f"j{len(self.jobs) + 1}"
                self.jobs[job] = {
                    "records": req.json(),
                    "polls": 0,
                    "batch": req.headers.get("idempotency-key"),
                }
                return Reply(202, {"job": {"id": job}})
            if req.method == "GET" and path.startswith("/jobs/"):
                job = self.jobs.get(path.rsplit("/", 1)[1])
                if job is None:
                    return Reply(404, {"message": "no such job"})
                job["polls"] += 1
                if not self.finish_after or job["polls"] < self.finish_after:
                    return Reply(200, {"state": "running"})
                results = []
                for rec in job["records"]:
                    if rec["id"] in self.refuse:
                        results.append({"ok": False, "error": self.refuse[rec["id"]]})
                    else:
                        self.items[rec["id"]] = rec
                        results.append({"ok": True})
                return Reply(200, {"state": "done", "results": results})
            if req.method == "GET" and path == "/items":
                wanted = query.partition("=")[2].replace("%2C", ",").split(",")
                return Reply(200, [self.items[k] for k in wanted if k in self.items])
        return Reply(404, {"message": "not found"})


REST_SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  api:
    kind: rest
    base_url: "{base}"
    key_param: id
    retry: {{attempts: 2, backoff: 50ms}}
syncs:
  items:
    from: {{connection: erp, table: customers}}
    to: {{connection: api, resource: items}}
    key: {{from: customer_no, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery:
      mode: async
      batch: 50
      async_batch: 50
      poll_every: 50ms
      async_timeout: 1s
      jobs: {{job_id: job.id, status_field: state, results: results}}
"""


@pytest.fixture
def rest_world(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> Iterator[tuple[JobApi, FaultServer, Any]]:
    api = JobApi()
    with FaultServer(api) as server:
        src = sqlite_database()
        h.execute(
            src,
            "CREATE TABLE customers (customer_no VARCHAR(20) PRIMARY KEY, name VARCHAR(100), "
            "status VARCHAR(1), last_modified TIMESTAMP)",
        )
        rows = [{"k": f"C{i:05d}", "n": f"Customer {i}", "t": now_text()} for i in range(120)]
        h.execute(src, "INSERT INTO customers VALUES (:k, :n, 'A', :t)", params=rows)
        (tmp_path / "sheet.yaml").write_text(REST_SHEET.format(src=src, base=server.url))
        loaded = loader.load(tmp_path / "sheet.yaml")
        store = StateStore.open(loaded.sheet.state.url, tmp_path, create=True)
        engine = Engine(loaded, store)
        try:
            yield api, server, engine
        finally:
            engine.close()
            store.close()


def test_rest_jobs_per_record_results_and_batch_header(rest_world: tuple[JobApi, FaultServer, Any]) -> None:
    api, server, engine = rest_world
    api.refuse = {"C00003": "name too long"}
    report = engine.run("items", "seed")
    assert report.status == "partial" and report.counts.written == 119 and report.counts.rejected == 1
    assert "name too long" in report.samples[0].message
    assert len(api.items) == 119
    posts = server.requests("POST", "/items")
    assert len(posts) == 3 and all(len(p.headers["idempotency-key"]) == 32 for p in posts)
    batch_ids = {p.headers["idempotency-key"] for p in posts}
    t = schema.async_batches
    with engine.store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.batch_id, t.c.status, t.c.job_id)).all()
    assert {r.batch_id for r in rows} == batch_ids and {r.status for r in rows} == {"done"}


def test_rest_job_never_finishes_then_expires_and_is_read_back(
    rest_world: tuple[JobApi, FaultServer, Any],
) -> None:
    """Jobs that never finish fail the run (batch kept `submitted`); when the server forgets the
    job, the next run reads the batch back by `key_param` and resubmits only what is missing."""
    api, server, engine = rest_world
    api.finish_after = 0
    report = engine.run("items", "seed")
    assert report.status == "failed" and "not finished after" in (report.message or "")
    unfinished = async_batches.unfinished(engine.store, "items")
    assert [b["status"] for b in unfinished] == ["submitted"] and unfinished[0]["job_id"] == "j1"
    # the server applied half of the batch, then forgot the job
    first = api.jobs.pop("j1")["records"]
    for rec in first[:25]:
        api.items[rec["id"]] = rec
    api.finish_after = 1
    report = engine.run("items", "seed")
    assert report.status == "success" and report.counts.written == 120, report.message
    assert len(api.items) == 120
    posts = server.requests("POST", "/items")
    assert [len(p.json()) for p in posts] == [50, 25, 50, 20]  # only the 25 missing resubmitted
    assert server.requests("GET", "/items?id=")
    assert async_batches.unfinished(engine.store, "items") == []


def test_rest_job_failed_as_a_whole_rejects_its_records(rest_world: tuple[JobApi, FaultServer, Any]) -> None:
    api, server, engine = rest_world
    original = api.__call__

    def failing(req: Request) -> Reply:
        if req.method == "GET" and req.path == "/jobs/j2":
            return Reply(200, {"state": "failed", "message": "import aborted: disk full"})
        return original(req)

    server.app = failing
    report = engine.run("items", "seed")
    assert report.status == "partial" and report.counts.written == 70 and report.counts.rejected == 50
    assert all("import aborted: disk full" in r.message for r in report.samples)
    assert len(api.items) == 70 and async_batches.unfinished(engine.store, "items") == []


def test_rest_submit_without_job_id_is_read_back_next_run(
    rest_world: tuple[JobApi, FaultServer, Any],
) -> None:
    """A 200 that is not JSON (applied or not, unknown): no job id, the run stops, the batch stays
    `pending`; the next run reads it back by key and submits what is missing."""
    api, server, engine = rest_world
    server.script = [Fault.malformed()]
    report = engine.run("items", "seed")
    assert report.status == "failed" and "no job id" in (report.message or "")
    assert [b["status"] for b in async_batches.unfinished(engine.store, "items")] == ["pending"]
    report = engine.run("items", "seed")
    assert report.status == "success" and report.counts.written == 120, report.message
    assert len(api.items) == 120 and async_batches.unfinished(engine.store, "items") == []
    assert len(server.requests("GET", "/items?id=")) == 1


def test_async_stays_within_the_call_budget(world: Callable[..., World]) -> None:
    """Budget 10/2s on client and sandbox: submits, read-backs and the token all go through it;
    no 429, no 2 s window with more than 10 calls."""
    w = world("none", "batch: 1000, async_batch: 500", timeout="60s", budget=[(10, dt.timedelta(seconds=2))])
    text = (w.folder / "sheet.yaml").read_text().replace("budget: []", 'budget: ["10/2s"]')
    (w.folder / "sheet.yaml").write_text(text)
    w.loaded = loader.load(w.folder / "sheet.yaml", env=ENV)
    w.add(1000)
    report = w.run("seed")
    assert report.status == "success" and report.counts.written == 1000, report.message
    w.assert_all_present(1000)
    log = [r for r in w.box.sandbox.store.requests() if r["counted"] or r["status"] == 429]
    assert all(r["status"] != 429 for r in log)
    times = [r["t"] for r in log]
    assert max(sum(1 for t in times if s <= t < s + 2) for s in times) <= 10
    assert len(log) >= 2 + 20  # 2 submits + at least N/50 read-backs (+ the token)
