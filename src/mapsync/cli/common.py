"""What every command of the `mapsync` command line shares: the app, the consoles, the option
types and the helpers (load a sheet, open its store, turn errors into messages and exit codes,
run syncs and print their reports). Command modules import this, never each other."""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mapsync import daemon, daemon_process, errors, logs, watch
from mapsync.alerts import sender
from mapsync.cli import report
from mapsync.engine import Engine, RunReport
from mapsync.progress import RichObserver
from mapsync.redact import redact
from mapsync.sheet import checks, loader
from mapsync.sheet.models import Sheet
from mapsync.state import faults
from mapsync.state.store import StateStore

log = logging.getLogger("mapsync.watch")
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="mapsync keeps two business systems in step from one YAML mapping sheet.",
)
state_app = typer.Typer(no_args_is_help=True, help="Look at or reset the state of a sheet's syncs.")
app.add_typer(state_app, name="state")
# piped output (cron logs, scripts) gets wide lines instead of tables squeezed into 80 columns
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

SheetArg = Annotated[Path, typer.Argument(help="The mapping sheet (YAML).", show_default=False)]
SyncOpt = Annotated[str | None, typer.Option("--sync", "-s", help="Only this sync.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def main() -> None:
    try:
        app()
    except Exit as exc:
        sys.exit(exc.code)


def operator() -> str:
    """Who acts from the command line (pauses, requests, the audit log): login name @ host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def fail(message: str, code: int) -> Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return Exit(code)


@contextlib.contextmanager
def handled(secrets: tuple[str, ...] = ()) -> Iterator[None]:
    def clean(text: str) -> str:
        return redact(text, secrets).replace("[", r"\[")

    try:
        yield
    except errors.ConfigError as exc:
        raise fail(clean(str(exc)), 2) from None
    except errors.StateError as exc:  # an outage of the store (locked, cut …) is 1, a mistake 2
        busy = faults.TRANSIENT | {"full", "io", "one_daemon"}  # another daemon on a SQLite store: 1
        raise fail(clean(str(exc)), 1 if exc.reason in busy else 2) from None
    except errors.LeaseHeld as exc:
        raise fail(clean(str(exc)), 1) from None
    except (errors.TransientError, errors.PermanentError) as exc:
        raise fail(clean(str(exc)), 1) from None


def load_sheet(sheet: Path) -> loader.LoadedSheet:
    with handled():
        loaded = loader.load(sheet)
    logs.add_secrets(loaded.secrets)
    return loaded


def open_store(loaded: loader.LoadedSheet, create: bool) -> StateStore:
    with handled(loaded.secrets):
        state = loaded.sheet.state
        timeouts = state.timeouts.for_lease(state.lease_ttl)
        return StateStore.open(
            state.url, loaded.folder, create=create, timeouts=timeouts, lock_timeout=state.lock_timeout
        )


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def warn_exposed(host: str) -> None:
    """The warning for a listener beyond loopback (`serve --host`, `daemon --serve/--metrics`)."""
    if host not in LOOPBACK:
        err.print(
            f"[yellow]warning:[/yellow] listening on {host} without TLS: put a TLS reverse proxy in front",
            highlight=False,
        )


def sync_names(loaded: loader.LoadedSheet, sync: str | None) -> list[str]:
    if sync is None:
        return checks.run_order(loaded.sheet)
    if sync not in loaded.sheet.syncs:
        raise fail(f"unknown sync {sync!r} (known: {', '.join(loaded.sheet.syncs)})", 2)
    return [sync]


def json_out(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


@app.callback()
def _options(
    log_level: Annotated[
        str, typer.Option(help="Log level on stderr: debug, info, warning, error.")
    ] = "warning",
    log_format: Annotated[
        str, typer.Option(help="Log format: text (or console) or json (one object per line).")
    ] = "text",
    log_file: Annotated[
        Path | None,
        typer.Option(help="Also write the log into this file (same format), rotated by size."),
    ] = None,
    log_file_max_bytes: Annotated[
        int, typer.Option(help="Rotate the --log-file when it would pass this size.", min=1024)
    ] = logs.FILE_MAX_BYTES,
    log_file_backups: Annotated[
        int, typer.Option(help="Rotated files kept (FILE.1 … FILE.N).", min=0)
    ] = logs.FILE_BACKUPS,
) -> None:
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise fail(f"--log-level: unknown level {log_level!r}", 2)
    if log_format not in logs.FORMATS:
        raise fail(f"--log-format: unknown format {log_format!r} (text, console or json)", 2)
    try:
        logs.setup(
            log_level, log_format, file=log_file, max_bytes=log_file_max_bytes, backups=log_file_backups
        )
    except OSError as exc:
        raise fail(f"--log-file {log_file}: {exc.strerror or exc}", 2) from None


def execute(
    loaded: loader.LoadedSheet,
    store: StateStore,
    names: list[str],
    kind: str,
    as_json: bool,
    again: bool = False,
    window: dt.timedelta | None = None,
    progress: bool = False,
    field: str | None = None,
    deletes: bool = False,
    force_deletes: bool = False,
    key: tuple[str, ...] | None = None,
    ignore_pause: bool = True,
    reexport: list[tuple[str, ...]] | None = None,
) -> None:
    """Run `kind` (seed | run | overlap | retry | reexport | sweep) for each sync, print the
    reports, exit 0/1/2.
    Without `ignore_pause`, a sync paused by an operator (`mapsync pause`) is not run: a line
    says who paused it, and the exit code is at least 1."""
    observer = RichObserver(err) if progress and err.is_terminal else None
    engine = Engine(loaded, store, observer)
    reports: list[RunReport] = []
    code = 0
    try:
        paused = {} if ignore_pause else _paused(loaded, store)
        for name in names:
            if name in paused:
                p = paused[name]
                note = f": {p.note}" if p.note else ""
                err.print(
                    f"sync {name} is paused (by {p.by} at {p.at:%Y-%m-%d %H:%M:%S}{note}): not run; "
                    f"`mapsync resume --sync {name}`, or `--ignore-pause` for this run",
                    markup=False,
                    highlight=False,
                )
                code = max(code, 1)
                continue
            try:
                with handled(loaded.secrets):
                    if kind == "retry":
                        reports.append(engine.retry(name, field, key=key))
                    elif kind == "reexport":  # `reexport` None: every failed transaction
                        reports.append(engine.reexport(name, reexport))
                    elif kind == "sweep":
                        reports.append(engine.sweep(name))
                    else:
                        reports.append(
                            engine.run(
                                name,
                                kind,
                                again=again,
                                window=window,
                                deletes=deletes,
                                force_deletes=force_deletes,
                            )
                        )
            except Exit as exc:
                code = max(code, exc.code)
        ran = [n for n in names if n not in paused]
        watch_ran(loaded, store, ran, reports)
    finally:
        if observer:
            observer.stop()
        engine.close()
        store.close()
    if any(not r.ok for r in reports):
        code = max(code, 1)
    if as_json:
        json_out([report_dict(r, loaded.sheet) for r in reports])
    else:
        for r in reports:
            print_report(r, loaded.sheet)
    if code:
        raise Exit(code)


def watch_ran(
    loaded: loader.LoadedSheet,
    store: StateStore,
    names: list[str],
    reports: Sequence[RunReport] = (),
) -> None:
    """After one-off runs (`run`, `retry`, `seed`): the monitors their ends decide (a failure, a
    guard trip, rejections: `watch.AFTER_RUN`), then the alerts due are sent. Cheap (a clean run
    of a sync with nothing open costs one read), and never changes the command's outcome (a
    failure is logged)."""
    clean = {r.sync for r in reports if watch.uneventful(loaded, r.sync, r.status, r.counts)}
    if clean:
        try:
            still = {i.sync for i in store.incidents.open_incidents()}
        except Exception:  # the store is away: the run's own report says it; nothing to judge
            return
        names = [n for n in names if n not in clean or n in still]
    changed = False
    for name in names:
        found = watch.after_run(loaded, store, name, quiet=True)  # the report says it already
        changed = changed or (found is not None and found.changed)
    if not changed:
        return
    try:
        sender.flush(loaded, store)
    except Exception as exc:  # the outbox keeps the notices: the daemon or the next command sends them
        log.warning(
            "alerts_flush_failed",
            extra={
                "action": "alerts_flush_failed",
                "error": redact(f"{type(exc).__name__}: {exc}", loaded.secrets),
            },
        )


def _paused(loaded: loader.LoadedSheet, store: StateStore) -> dict[str, Any]:
    with handled(loaded.secrets):
        return store.paused()


def report_dict(r: RunReport, sheet: Sheet | None = None) -> dict[str, Any]:
    return report.report_dict(r, sheet)


def print_report(r: RunReport, sheet: Sheet | None = None) -> None:
    report.print_report(out, r, sheet)


def serve_daemon(
    loaded: loader.LoadedSheet,
    names: list[str],
    as_json: bool,
    *,
    poll: dt.timedelta,
    named: bool,
    follow_all: dt.timedelta | None = None,
    parallel: int = daemon.PARALLEL,
    serve: tuple[str, int] | None = None,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run a daemon over `names` until a signal stops it (`mapsync daemon`, `run --follow`);
    returns its exit code. `serve`: the HTTP app (`mapsync serve`'s: dashboard, API, webhooks,
    metrics, health) on that address beside the scheduler; `metrics`: a listener with `/metrics`
    alone. Both count this process's runs."""
    loaded = daemon_process.with_daemon_lease(loaded)
    store = open_store(loaded, create=False)
    try:
        with _listeners(loaded, serve, metrics):
            return _serve_daemon(loaded, store, names, as_json, poll, named, follow_all, parallel)
    finally:
        store.close()


@contextlib.contextmanager
def _listeners(
    loaded: loader.LoadedSheet, serve: tuple[str, int] | None, metrics: tuple[str, int] | None
) -> Iterator[None]:
    if serve is None and metrics is None:
        yield
        return
    from mapsync import metrics as metrics_module  # lazy: FastAPI and uvicorn only when it serves
    from mapsync import webhook_server, webhooks
    from mapsync.web import app as web_app

    store = open_store(loaded, create=False)  # the app's own connections: a scrape never waits for a run
    counted = metrics_module.Metrics(loaded, store).listen()
    started: list[webhook_server.Background] = []
    try:
        hooks = any(s.webhook is not None for s in loaded.sheet.syncs.values())
        wanted: list[tuple[tuple[str, int], Any, str]] = []
        if serve is not None:
            try:
                app = web_app.create_app(loaded, store, host=serve[0], metrics=counted)
            except ValueError as exc:
                raise fail(f"--serve: {exc}", 2) from None
            paths = "the dashboard, /api, /metrics, /healthz, /readyz"
            wanted.append((serve, app, paths + (", /webhooks/<sync>" if hooks else "")))
        if metrics is not None:
            wanted.append((metrics, webhooks.metrics_app(counted), "/metrics"))
        for (host, port), app, paths in wanted:
            warn_exposed(host)
            try:
                started.append(webhook_server.Background(app, host=host, port=port))
            except OSError as exc:
                raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
            err.print(f"serving http://{host}:{started[-1].port}: {paths}", markup=False, highlight=False)
        yield
    finally:
        for server in started:
            server.stop()
        counted.close()
        store.close()


def _serve_daemon(
    loaded: loader.LoadedSheet,
    store: StateStore,
    names: list[str],
    as_json: bool,
    poll: dt.timedelta,
    named: bool,
    follow_all: dt.timedelta | None,
    parallel: int,
) -> int:
    def report(r: RunReport) -> None:
        if as_json:
            out.print(json.dumps(report_dict(r, loaded.sheet), default=str), soft_wrap=True, highlight=False)
        else:
            print_report(r, loaded.sheet)

    d = daemon.Daemon(
        loaded,
        store,
        names,
        open_store=lambda: open_store(loaded, create=False),
        poll=poll,
        follow_all=follow_all,
        on_report=report,
        named=named,
        parallel=parallel,
    )
    with handled(loaded.secrets), daemon_process.signals(d):
        what = "following" if follow_all is not None else "running"
        err.print(f"{what} {', '.join(names)}; stop with Ctrl-C or SIGTERM, reload with SIGHUP")
        code = d.run()
        if d.failure is not None:
            err.print(redact(str(d.failure), loaded.secrets), markup=False, highlight=False)
        err.print(f"stopped after {d.passes} pass(es)")
        return code
