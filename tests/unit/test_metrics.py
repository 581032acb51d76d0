"""mapsync.metrics in-process: the run counters from `run_types.finished` (sheet syncs only, idle
follow passes apart, a raised run counted failed), the hook in `Engine.run` counting a real run
once, and the store collector over a SQLite state store: its cache, and `state_store_up 0`
when the store fails."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mapsync import errors, metrics, run_types
from mapsync.engine import Engine
from mapsync.records import RunKind, RunStatus
from mapsync.run_types import Finished, RunReport
from mapsync.sheet import loader
from mapsync.state.store import Counts, StateStore
from tests import helpers as h

SHEET = """
version: 1
connections:
  src: {{url: "sqlite:///{src}"}}
  dst: {{url: "sqlite:///{dst}"}}
syncs:
  items:
    from: {{connection: src, table: items}}
    to: {{connection: dst, table: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: watermark, column: last_modified, lag: 0s}}
"""


@dataclasses.dataclass
class Sheet:
    loaded: Any
    store: StateStore
    src: str


@pytest.fixture
def sheet(tmp_path: Path) -> Iterator[Sheet]:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    h.execute(
        f"sqlite:///{src}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, last_modified TEXT)"
    )
    h.execute(f"sqlite:///{dst}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.format(src=src, dst=dst))
    loaded = loader.load(path)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    yield Sheet(loaded, store, f"sqlite:///{src}")
    store.close()


def _samples(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _report(sync: str, status: RunStatus, run_id: int | None = 1, **counts: int) -> RunReport:
    return RunReport(sync, RunKind.RUN, run_id, status, Counts(**counts))


def test_runs_rows_and_durations_are_counted_for_sheet_syncs_only(sheet: Sheet) -> None:
    m = metrics.Metrics(sheet.loaded)
    m.runs(
        Finished(
            "items",
            "run",
            "partial",
            1.5,
            3.0,
            _report("items", RunStatus.PARTIAL, read=5, written=3, rejected=2),
        )
    )
    m.runs(Finished("items", "run", "failed", 0.2, None, None))  # raised before a report
    m.runs(Finished("ghost", "run", "success", 1.0, None, _report("ghost", RunStatus.SUCCESS, written=9)))
    m.runs(Finished("items", "run", "success", 0.1, None, _report("items", RunStatus.SUCCESS, run_id=None)))
    s = _samples(m)
    assert s[("mapsync_runs_total", (("kind", "run"), ("status", "partial"), ("sync", "items")))] == 1
    assert s[("mapsync_runs_total", (("kind", "run"), ("status", "failed"), ("sync", "items")))] == 1
    assert s[("mapsync_rows_total", (("outcome", "written"), ("sync", "items")))] == 3
    assert s[("mapsync_rows_total", (("outcome", "rejected"), ("sync", "items")))] == 2
    assert s[("mapsync_run_duration_seconds_count", (("kind", "run"), ("sync", "items")))] == 2
    assert s[("mapsync_run_duration_seconds_sum", (("kind", "run"), ("sync", "items")))] == pytest.approx(1.7)
    assert s[("mapsync_lateness_seconds_count", (("sync", "items"),))] == 1
    assert s[("mapsync_idle_passes_total", (("sync", "items"),))] == 1  # no run row: not a run
    assert not [k for k in s if ("sync", "ghost") in k[1]]
    assert s[("mapsync_up", ())] == 1


def test_a_real_run_is_counted_once_and_only_while_listening(sheet: Sheet) -> None:
    h.execute(sheet.src, "INSERT INTO items VALUES (1, 'one', :ts)", params={"ts": _now()})
    m = metrics.Metrics(sheet.loaded)
    engine = Engine(sheet.loaded, sheet.store)
    try:
        engine.run("items", "seed")  # not listening yet
        m.listen()
        h.execute(sheet.src, "INSERT INTO items VALUES (2, 'two', :ts)", params={"ts": _now()})
        report = engine.run("items")
        with pytest.raises(errors.UsageError):
            engine.run("items", "seed")  # a usage error: no run, not counted
        m.close()
        engine.run("items")  # no longer listening
    finally:
        engine.close()
    s = _samples(m)
    runs = {k: v for k, v in s.items() if k[0] == "mapsync_runs_total"}
    assert runs == {("mapsync_runs_total", (("kind", "run"), ("status", "success"), ("sync", "items"))): 1}
    assert (
        s[("mapsync_rows_total", (("outcome", "written"), ("sync", "items")))] == report.counts.written == 1
    )


def test_a_listener_that_fails_never_fails_the_run(sheet: Sheet) -> None:
    def broken(done: Finished) -> None:
        raise RuntimeError("boom")

    undo = run_types.listen(broken)
    engine = Engine(sheet.loaded, sheet.store)
    try:
        assert engine.run("items", "seed").ok
    finally:
        undo()
        engine.close()


def test_the_store_gauges_are_cached_and_a_failing_store_says_up_0(sheet: Sheet) -> None:
    now = [100.0]
    m = metrics.Metrics(sheet.loaded, sheet.store, cache_s=5.0, clock=lambda: now[0])
    assert _samples(m)[("mapsync_open_record_errors", (("sync", "items"),))] == 0
    sheet.store.observations.observe("items", {"lag_s": 4.0})
    assert ("mapsync_lag_seconds", (("sync", "items"),)) not in _samples(m)  # cached
    now[0] += 6
    assert _samples(m)[("mapsync_lag_seconds", (("sync", "items"),))] == 4.0
    sheet.store.engine.dispose()

    def refuse(*args: object, **kw: object) -> None:
        raise OSError("no store")

    sheet.store.engine.connect = refuse  # type: ignore[method-assign,assignment]
    now[0] += 6
    s = _samples(m)
    assert s[("mapsync_state_store_up", ())] == 0
    assert ("mapsync_lag_seconds", (("sync", "items"),)) not in s
    assert s[("mapsync_up", ())] == 1
    m.close()


def test_budget_remaining_is_per_connection_name_never_the_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-C4NARY-77"
    monkeypatch.setenv("SHOP_TOKEN", token)
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    h.execute(
        f"sqlite:///{src}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, last_modified TEXT)"
    )
    h.execute(f"sqlite:///{dst}", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    path = tmp_path / "sheet.yaml"
    text = SHEET.format(src=src, dst=dst).replace(
        "connections:\n",
        "connections:\n"
        "  shop:\n"
        "    kind: rest\n"
        '    base_url: "http://127.0.0.1:9/api"\n'
        '    auth: {type: bearer, token: "${SHOP_TOKEN}"}\n'
        '    budget: ["5/1s", "1000/1h"]\n',
        1,
    )
    path.write_text(text)
    loaded = loader.load(path)
    store = StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)
    m = metrics.Metrics(loaded, store, cache_s=0.0)
    try:
        assert _samples(m)[("mapsync_budget_remaining", (("connection", "shop"),))] == 5
        budget = m.collector._connection_budgets()["shop"] if m.collector else None
        assert budget is not None
        budget.acquire()  # one call taken through the shared (store) budget
        assert _samples(m)[("mapsync_budget_remaining", (("connection", "shop"),))] == 4
        body = m.exposition().decode()
        assert token not in body and budget.key not in body and budget.key[:12] not in body
    finally:
        m.close()
        store.close()


def test_a_run_that_raises_is_counted_failed_under_its_kind(sheet: Sheet) -> None:
    m = metrics.Metrics(sheet.loaded).listen()
    h.execute(sheet.src, "DROP TABLE items")  # the engine cannot build the sync: it raises
    engine = Engine(sheet.loaded, sheet.store)
    try:
        with pytest.raises(errors.MapsyncError):
            engine.run("items")
    finally:
        engine.close()
        m.close()
    s = _samples(m)
    assert s[("mapsync_runs_total", (("kind", "run"), ("status", "failed"), ("sync", "items")))] == 1
    assert not [k for k in s if k[0] == "mapsync_rows_total"]
