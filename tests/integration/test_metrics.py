"""`/metrics` over real HTTP (the app of `mapsync serve`, on its guarded server): scraped before
and after a real SQL → SQL run on a PostgreSQL state store, the counters move by exactly the
run's counts; labels carry sheet names only (a canary in a record key and in a rejection's
message never shows); the store's gauges (last success, open record errors, open incidents,
observed lag and backlog) come from the store; a store that stops answering gives
`mapsync_state_store_up 0` and `/readyz` 503, and both recover."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from mapsync import logs, metrics, webhook_server, webhooks
from mapsync.engine import Engine
from mapsync.sheet import loader
from mapsync.state.data import Finding
from mapsync.state.store import StateStore
from mapsync.testing.fault_proxy import target_of
from tests import helpers as h

pytestmark = pytest.mark.postgres

KEY_CANARY = "K3YCANARY9"
VALUE_CANARY = "VALU3CANARY7"

SHEET = """
version: 1
connections:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
state: {{url: "{state}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items_out}}
    key: {{from: id, to: id}}
    fields:
      status: {{from: status, map: {{A: Alpha, B: Beta}}}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
    delivery: {{batch: 10}}
"""


def _put(url: str, key: str, status: str) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    h.execute(
        url, "INSERT INTO items VALUES (:id, :status, :ts)", params={"id": key, "status": status, "ts": now}
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(base: str) -> tuple[str, Samples]:
    resp = httpx.get(f"{base}/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return resp.text, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class World:
    def __init__(self, tmp_path: Path, pg: Callable[[], str], state: str | None = None) -> None:
        # one database holds the source table, the destination table and the state store (its
        # tables are prefixed): one CREATE DATABASE per test
        self.state = state or pg()
        self.src = self.dst = self.state
        h.execute(
            self.src,
            "CREATE TABLE items (id VARCHAR(40) PRIMARY KEY, status VARCHAR(40), last_modified TIMESTAMP(6))",
        )
        h.execute(self.dst, "CREATE TABLE items_out (id VARCHAR(40) PRIMARY KEY, status VARCHAR(40))")
        self.path = tmp_path / "sheet.yaml"
        self.path.write_text(SHEET.format(src=self.src, dst=self.dst, state=self.state))
        self.loaded = loader.load(self.path)
        self.store = StateStore.open(self.state, tmp_path, create=True)
        self.servers: list[webhook_server.Background] = []

    def serve(self, store: StateStore, loaded: Any = None, **kw: Any) -> tuple[str, metrics.Metrics]:
        loaded = loaded or self.loaded
        counted = metrics.Metrics(loaded, store, cache_s=0.0, timeout_s=kw.pop("timeout_s", 3.0)).listen()
        app = webhooks.create_app(loaded, store, metrics=counted, **kw)
        server = webhook_server.Background(app, host="127.0.0.1", port=0)
        self.servers.append(server)
        return f"http://127.0.0.1:{server.port}", counted

    def run(self, kind: str = "run") -> Any:
        engine = Engine(self.loaded, self.store)
        try:
            return engine.run("items", kind)
        finally:
            engine.close()

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path, pg_database: Callable[[], str]) -> Iterator[World]:
    w = World(tmp_path, pg_database)
    yield w
    w.close()


def test_a_scrape_before_and_after_a_run_moves_by_exactly_its_counts(world: World) -> None:
    _put(world.src, "a1", "A")
    _put(world.src, "b1", "B")
    seed = world.run("seed")
    assert seed.status == "success" and seed.counts.written == 2
    base, counted = world.serve(world.store)
    try:
        before_text, before = _scrape(base)
        assert _value(before, "mapsync_up") == 1
        assert _value(before, "mapsync_state_store_up") == 1
        assert ("mapsync_info", (("version", __import__("mapsync").__version__),)) in before
        assert _value(before, "mapsync_runs_total", sync="items", kind="run", status="partial") == 0
        assert _value(before, "mapsync_open_record_errors", sync="items") == 0
        last_success = _value(before, "mapsync_last_success_timestamp_seconds", sync="items")
        assert abs(last_success - dt.datetime.now(dt.UTC).timestamp()) < 120

        _put(world.src, "a2", "A")
        _put(world.src, f"key-{KEY_CANARY}", VALUE_CANARY)  # rejected: an unmapped value
        report = world.run()
        assert report.status == "partial"
        assert (report.counts.written, report.counts.rejected) == (1, 1)
        # the rejection's message names the value: the canary is in the store, never in /metrics
        errors = world.store.history.record_errors("items", False, 10)
        assert any(VALUE_CANARY in e["message"] for e in errors) and any(
            KEY_CANARY in str(e["key"]) for e in errors
        )

        text, after = _scrape(base)
        assert _value(after, "mapsync_runs_total", sync="items", kind="run", status="partial") == 1
        assert sum(v for (n, _), v in after.items() if n == "mapsync_runs_total") == 1  # the seed ran before
        for outcome in ("read", "written", "rejected"):
            moved = _value(after, "mapsync_rows_total", sync="items", outcome=outcome) - _value(
                before, "mapsync_rows_total", sync="items", outcome=outcome
            )
            assert moved == getattr(report.counts, outcome), outcome
        assert _value(after, "mapsync_rows_total", sync="items", outcome="written") == 1
        assert _value(after, "mapsync_run_duration_seconds_count", sync="items", kind="run") == 1
        assert _value(after, "mapsync_open_record_errors", sync="items") == 1
        # the run was partial: the last success is still the seed's
        assert _value(after, "mapsync_last_success_timestamp_seconds", sync="items") == last_success
        for body in (before_text, text):
            assert KEY_CANARY not in body and VALUE_CANARY not in body
        labels = {(k, v) for (_, pairs) in after for k, v in pairs}
        assert {v for k, v in labels if k == "sync"} <= {"items"}
        assert {v for k, v in labels if k == "kind"} <= {"run", "seed", "overlap", "retry"}
        assert {v for k, v in labels if k == "outcome"} <= set(metrics.OUTCOMES)
    finally:
        counted.close()


def test_store_gauges_export_sheet_syncs_only(world: World) -> None:
    world.store.observations.observe("items", {"lag_s": 12.5, "backlog_rows": 7, "other": 1})
    world.store.observations.observe("ghost", {"lag_s": 99.0})  # not in the sheet
    world.store.observations.observe("*", {"disk_free_mb": 512.5})
    world.store.incidents.raise_incident(Finding("late_start", "items", "critical", "tool", "late"), ["ops"])
    world.store.incidents.raise_incident(Finding("late_start", "ghost", "critical", "tool", "late"), ["ops"])
    world.store.incidents.raise_incident(Finding("store", None, "warning", "state", "slow"), ["ops"])
    base, counted = world.serve(world.store)
    try:
        text, samples = _scrape(base)
    finally:
        counted.close()
    assert _value(samples, "mapsync_lag_seconds", sync="items") == 12.5
    assert _value(samples, "mapsync_queue_backlog", sync="items") == 7
    assert not [k for k in samples if k[0] == "mapsync_oldest_pending_seconds"]  # never observed
    assert _value(samples, "mapsync_state_disk_free_megabytes") == 512.5
    assert _value(samples, "mapsync_open_incidents", sync="items", severity="critical") == 1
    assert _value(samples, "mapsync_open_incidents", sync="", severity="warning") == 1
    assert "ghost" not in text


STATE_PW = "pwC4nary-state-51"


def _ready(base: str) -> tuple[int, Any]:
    answer = httpx.get(f"{base}/readyz", timeout=10)
    return answer.status_code, answer.json()


def test_a_store_that_stops_answering_gives_up_0_and_readyz_503(
    tmp_path: Path,
    pg_database: Callable[[], str],
    fault_proxy: Callable[..., Any],
    canary: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through a fault proxy, with the state store's password a `${VAR}` secret (PostgreSQL on
    loopback trusts: any password is let in) and the logs captured at DEBUG: no form of the
    password in /metrics, /readyz or the logs, while the store hangs and after."""
    real = pg_database()
    proxy = fault_proxy(*target_of(real))
    monkeypatch.setenv("MS_STATE_PW", STATE_PW)
    w = World(tmp_path, pg_database, state=real)
    parsed = sa.make_url(real)
    through = f"postgresql://{parsed.username}:${{MS_STATE_PW}}@127.0.0.1:{proxy.port}/{parsed.database}"
    app_sheet = tmp_path / "app.yaml"
    app_sheet.write_text(SHEET.format(src=w.src, dst=w.dst, state=through))
    loaded = loader.load(app_sheet)
    assert STATE_PW in loaded.secrets
    logs.add_secrets(loaded.secrets)  # as the CLI does
    c = canary(STATE_PW)
    app_store = StateStore.open(loaded.sheet.state.url, tmp_path, create=False)
    bodies: list[str] = []
    try:
        base, counted = w.serve(app_store, loaded=loaded, ready_timeout=0.5, timeout_s=0.5)
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        # ready once the first connection through the proxy is up: on a loaded machine that
        # can take longer than the 0.5 s readiness timeout (CI saw a 503 here)
        assert h.wait_for(lambda: _ready(base) == (200, {"status": "ready"}), timeout=30)
        bodies.append(_scrape(base)[0])
        proxy.stall()  # a blackhole: queries hang
        proxy.reset()
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert (ready.status_code, ready.json()) == (503, {"status": "unavailable"})
        bodies.append(ready.text)
        assert httpx.get(f"{base}/healthz").status_code == 200  # the process is up
        text, samples = _scrape(base)
        bodies.append(text)
        assert _value(samples, "mapsync_state_store_up") == 0
        assert _value(samples, "mapsync_up") == 1
        assert str(proxy.port) not in text
        proxy.resume()
        assert h.wait_for(lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200, timeout=30)
        assert h.wait_for(lambda: _value(_scrape(base)[1], "mapsync_state_store_up") == 1, timeout=30)
        counted.close()
    finally:
        w.close()
        app_store.close()
    for i, body in enumerate(bodies):
        c.text(f"response {i}", body)
    captured = "\n".join(c._logs)
    assert "readyz_failed" in captured and "metrics_store" in captured  # the outage was logged
    c.assert_clean()  # the responses above, and every log line at DEBUG
