"""Prometheus metrics of one process: what it ran (counted in-process) and what the state store
says (read at scrape time).

**Run metrics** are counted by the process that ran the run (the daemon, `run --follow`, a
one-off `run`), from `run_types.finished`, which every `Engine.run` and `Engine.retry` passes
once: `mapsync_runs_total{sync,kind,status}`, `mapsync_rows_total{sync,outcome}`,
`mapsync_run_duration_seconds{sync,kind}` (histogram), `mapsync_lateness_seconds{sync}`
(histogram: a scheduled run's start after its slot) and `mapsync_idle_passes_total{sync}` (follow
passes that changed nothing and leave no run row). They start at zero with the process, as
Prometheus counters do; `rate()` and `increase()` handle restarts.

**Store gauges** come from a collector that asks the state store when scraped (a few short
queries, cached for `CACHE_S` seconds, bounded by `STORE_TIMEOUT_S`): last success time, open
record errors, open incidents, call budget left, and what the monitors observed (lag, queue
backlog, oldest pending row, an export's backlog and its oldest unexported transaction). A
store that does not answer still gives an answer: `mapsync_state_store_up 0` and no store gauge.

Label values are only names from the sheet (sync, connection) and the code's own words (kind,
status, outcome, severity): a sync or connection the sheet does not name is not exported, and no
key, value, message or credential ever becomes a label.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mapsync import __version__, connectors, run_types
from mapsync.ports import Handle
from mapsync.sheet.loader import LoadedSheet
from mapsync.state.clock import unstamp
from mapsync.state.ports import Store

log = logging.getLogger("mapsync.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CACHE_S = 5.0  # store gauges are read at most this often
STORE_TIMEOUT_S = 3.0  # a scrape waits this long for the store, then says it is down
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENESS_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
OUTCOMES = ("read", "written", "skipped", "rejected", "deleted", "missed", "truncated", "defaulted")
# what the monitors store in observations (per sync) → the gauge it becomes
OBSERVED = {
    "lag_s": ("mapsync_lag_seconds", "Source clock minus the sync's cursor, as last observed (seconds)."),
    "backlog_rows": ("mapsync_queue_backlog", "Rows waiting in the sync's change queue or inbox."),
    "oldest_pending_s": ("mapsync_oldest_pending_seconds", "Age of the oldest row still waiting (seconds)."),
    "wal_retained_mb": ("mapsync_wal_retained_megabytes", "WAL the sync's replication slot holds back (MB)."),
    "source_rows": ("mapsync_source_rows", "Rows in the sync's source table, as last observed."),
    "export_pending": ("mapsync_export_pending", "Transactions waiting to be exported (export syncs)."),
    "export_oldest_pending_s": (
        "mapsync_export_oldest_pending_seconds",
        "Age of the oldest transaction waiting to be exported (seconds; needs `changes.created`).",
    ),
}
# what the monitors store for the whole sheet (sync `*`) → the gauge it becomes (no label)
OBSERVED_SHEET = {
    "disk_free_mb": ("mapsync_state_disk_free_megabytes", "Free disk beside a SQLite state store (MB)."),
}


class RunMetrics:
    """The in-process run counters of one registry, for the syncs `names`."""

    def __init__(self, registry: CollectorRegistry, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.runs = Counter(
            "mapsync_runs", "Runs that ended, by how.", ["sync", "kind", "status"], registry=registry
        )
        self.rows = Counter("mapsync_rows", "Records by outcome.", ["sync", "outcome"], registry=registry)
        self.idle = Counter(
            "mapsync_idle_passes",
            "Follow passes that changed nothing (no run row).",
            ["sync"],
            registry=registry,
        )
        self.duration = Histogram(
            "mapsync_run_duration_seconds",
            "Wall time of a run.",
            ["sync", "kind"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.lateness = Histogram(
            "mapsync_lateness_seconds",
            "How long after its scheduled slot a scheduled run started.",
            ["sync"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )

    def __call__(self, done: run_types.Finished) -> None:
        if done.sync not in self.names:
            return
        if done.lateness is not None:
            self.lateness.labels(done.sync).observe(max(0.0, done.lateness))
        report = done.report
        if report is not None and report.run_id is None and report.status != "failed":
            self.idle.labels(done.sync).inc()  # a follow pass that left no trace
            return
        self.runs.labels(done.sync, done.kind, done.status).inc()
        self.duration.labels(done.sync, done.kind).observe(done.seconds)
        if report is None:
            return
        counts = dataclasses.asdict(report.counts)
        for outcome in OUTCOMES:
            if counts.get(outcome):
                self.rows.labels(done.sync, outcome).inc(counts[outcome])


class StoreCollector(Collector):
    """The gauges read from the state store at scrape time (see the module's docstring)."""

    def __init__(
        self,
        loaded: LoadedSheet,
        store: Store,
        *,
        cache_s: float = CACHE_S,
        timeout_s: float = STORE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loaded = loaded
        self.store = store
        self.names = frozenset(loaded.sheet.syncs)
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mapsync-metrics")
        self._future: concurrent.futures.Future[list[Metric]] | None = None
        self._budgets: dict[str, Any] | None = None  # connection → its call budget (CallBudget)
        self._handles: list[Handle] = []

    def describe(self) -> Iterable[Metric]:
        return []  # gathered at scrape time only (the registry must not query the store on register)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self.clock()
            if self._cached is not None and now - self._cached[0] < self.cache_s:
                return list(self._cached[1])
            if self._future is None or self._future.done():  # a hung query is waited for, not repeated
                self._future = self._pool.submit(self._gather)
            try:
                families = self._future.result(timeout=self.timeout_s)
            except concurrent.futures.TimeoutError:
                log.warning(
                    "metrics_store_slow", extra={"action": "metrics_store_slow", "timeout_s": self.timeout_s}
                )
                families = [_up(0)]
            self._cached = (now, families)
            return list(families)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for handle in self._handles:
            with contextlib.suppress(Exception):
                handle.close()
        self._handles.clear()

    # ----------------------------------------------------------------- gathering

    def _gather(self) -> list[Metric]:
        try:
            families = list(self._store_families())
        except Exception as exc:  # an unreachable or broken store: the scrape still answers
            log.warning(
                "metrics_store_failed", extra={"action": "metrics_store_failed", "error": type(exc).__name__}
            )
            return [_up(0)]
        return [_up(1), *families]

    def _store_families(self) -> Iterator[Metric]:
        yield from self._history_families()
        incidents = GaugeMetricFamily(
            "mapsync_open_incidents",
            "Open incidents (alerts), by sync and severity.",
            labels=["sync", "severity"],
        )
        open_by: dict[tuple[str, str], int] = {}
        for incident in self.store.incidents.open_incidents():
            if incident.sync is not None and incident.sync not in self.names:
                continue
            key = (incident.sync or "", incident.severity)
            open_by[key] = open_by.get(key, 0) + 1
        for (sync, severity), n in sorted(open_by.items()):
            incidents.add_metric([sync, severity], n)
        yield incidents
        observed = {
            metric: GaugeMetricFamily(metric, text, labels=["sync"]) for metric, text in OBSERVED.values()
        }
        sheet_wide: list[Metric] = []
        for (sync, name), (value, _at) in sorted(self.store.observations.observations().items()):
            if not _is_number(value):
                continue
            if sync == "*" and name in OBSERVED_SHEET:
                family = GaugeMetricFamily(*OBSERVED_SHEET[name])
                family.add_metric([], float(value))
                sheet_wide.append(family)
            elif sync in self.names and name in OBSERVED:
                observed[OBSERVED[name][0]].add_metric([sync], float(value))
        yield from observed.values()
        yield from sheet_wide
        yield from self._budget_family()

    def _history_families(self) -> Iterator[Metric]:
        gauges = self.store.history.sync_gauges()
        success = GaugeMetricFamily(
            "mapsync_last_success_timestamp_seconds",
            "When the sync's last successful run finished (Unix seconds).",
            labels=["sync"],
        )
        for sync, seen in sorted(gauges.items()):
            if sync in self.names and seen.get("last_success"):
                success.add_metric([sync], unstamp(seen["last_success"]).timestamp())
        yield success
        errors = GaugeMetricFamily(
            "mapsync_open_record_errors", "Record errors not resolved yet.", labels=["sync"]
        )
        for sync in sorted(self.names):
            errors.add_metric([sync], gauges.get(sync, {}).get("open_errors", 0))
        yield errors

    def _budget_family(self) -> Iterator[Metric]:
        budgets = self._connection_budgets()
        if not budgets:
            return
        family = GaugeMetricFamily(
            "mapsync_budget_remaining",
            "Calls left in the connection's tightest call-budget window (or what the server said, if less).",
            labels=["connection"],
        )
        for name, budget in sorted(budgets.items()):
            left = budget.remaining()
            values = [int(limit["remaining"]) for limit in left.get("limits", [])]
            if left.get("server_remaining") is not None:
                values.append(int(left["server_remaining"]))
            if values:
                family.add_metric([name], min(values))
        yield family

    def _connection_budgets(self) -> dict[str, Any]:
        """The call budget of each API connection with limits, built once (no network: a REST
        handle connects on its first call, and this never calls)."""
        if self._budgets is not None:
            return self._budgets
        self._budgets = {}
        for name, cfg in self.loaded.sheet.connections.items():
            if cfg.kind == "sql" or not getattr(cfg, "budget", None):
                continue
            connector = connectors.REGISTRY.get(cfg.kind)
            if connector is None:
                continue
            try:
                handle = connector.connect(name, cfg, self.loaded.folder, self.store)
            except Exception as exc:  # not exported, and said once
                log.warning(
                    "metrics_budget_unavailable",
                    extra={
                        "action": "metrics_budget_unavailable",
                        "connection": name,
                        "error": type(exc).__name__,
                    },
                )
                continue
            self._handles.append(handle)
            if handle.budget is not None:
                self._budgets[name] = handle.budget
        return self._budgets


def _up(value: int) -> Metric:
    family = GaugeMetricFamily("mapsync_state_store_up", "1 when the state store answered this scrape.")
    family.add_metric([], value)
    return family


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Metrics:
    """One registry: the process's gauges, the run counters and (given a store) the store's gauges."""

    def __init__(self, loaded: LoadedSheet, store: Store | None = None, **collector: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        Gauge("mapsync_up", "1 while this process serves metrics.", registry=self.registry).set(1)
        info = Gauge(
            "mapsync_info", "The mapsync version of this process.", ["version"], registry=self.registry
        )
        info.labels(__version__).set(1)
        self.runs = RunMetrics(self.registry, loaded.sheet.syncs)
        self.collector: StoreCollector | None = None
        if store is not None:
            self.collector = StoreCollector(loaded, store, **collector)
            self.registry.register(self.collector)
        self._undo: Callable[[], None] | None = None

    def listen(self) -> Metrics:
        """Count the runs of this process (every Engine) from now on."""
        if self._undo is None:
            self._undo = run_types.listen(self.runs)
        return self

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
        if self.collector is not None:
            self.collector.close()
