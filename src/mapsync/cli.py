"""The `mapsync` command line. Exit codes: 0 ok, 1 some records or runs failed, 2 usage or config."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mapsync import __version__, cli_report, errors, logs
from mapsync.engine import Engine, RunReport
from mapsync.redact import redact
from mapsync.sheet import checks, loader
from mapsync.sheet.duration import parse_duration
from mapsync.sheet.models import Sheet
from mapsync.state import faults
from mapsync.state.store import StateStore

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


def _fail(message: str, code: int) -> Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return Exit(code)


@contextlib.contextmanager
def _handled(secrets: tuple[str, ...] = ()) -> Iterator[None]:
    def clean(text: str) -> str:
        return redact(text, secrets).replace("[", r"\[")

    try:
        yield
    except errors.ConfigError as exc:
        raise _fail(clean(str(exc)), 2) from None
    except errors.StateError as exc:  # an outage of the store (locked, cut …) is 1, a mistake 2
        raise _fail(clean(str(exc)), 1 if exc.reason in faults.TRANSIENT | {"full", "io"} else 2) from None
    except errors.LeaseHeld as exc:
        raise _fail(clean(str(exc)), 1) from None
    except (errors.TransientError, errors.PermanentError) as exc:
        raise _fail(clean(str(exc)), 1) from None


def _load(sheet: Path) -> loader.LoadedSheet:
    with _handled():
        loaded = loader.load(sheet)
    logs.add_secrets(loaded.secrets)
    return loaded


def _store(loaded: loader.LoadedSheet, create: bool) -> StateStore:
    with _handled(loaded.secrets):
        state = loaded.sheet.state
        timeouts = state.timeouts.for_lease(state.lease_ttl)
        store = StateStore.open(state.url, loaded.folder, create=create, timeouts=timeouts)
    faults.set_lock_timeout(store.engine, state.lock_timeout.total_seconds())
    return store


def _names(loaded: loader.LoadedSheet, sync: str | None) -> list[str]:
    if sync is None:
        return checks.run_order(loaded.sheet)
    if sync not in loaded.sheet.syncs:
        raise _fail(f"unknown sync {sync!r} (known: {', '.join(loaded.sheet.syncs)})", 2)
    return [sync]


def _json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


# --------------------------------------------------------------------------- commands


@app.callback()
def _options(
    log_level: Annotated[
        str, typer.Option(help="Log level on stderr: debug, info, warning, error.")
    ] = "warning",
    log_format: Annotated[str, typer.Option(help="Log format: text or json (one object per line).")] = "text",
) -> None:
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise _fail(f"--log-level: unknown level {log_level!r}", 2)
    if log_format not in ("text", "json"):
        raise _fail(f"--log-format: unknown format {log_format!r}", 2)
    logs.setup(log_level, log_format)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example sheet.")] = Path("mapsync.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    to: Annotated[
        str, typer.Option("--to", help="Destination of the example: `sql`, or `cimcloud` (a CIMcloud site).")
    ] = "sql",
) -> None:
    """Write a commented example mapping sheet to start from."""
    from importlib import resources

    if path.exists() and not force:
        raise _fail(f"{path} exists (use --force to overwrite)", 2)
    if to not in ("sql", "cimcloud"):
        raise _fail("--to is `sql` or `cimcloud`", 2)
    example = "examples/cimcloud.yaml" if to == "cimcloud" else "examples/sheet.yaml"
    text = resources.files("mapsync").joinpath(example).read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    out.print(f"wrote {path}: edit the connections and syncs, then `mapsync validate {path}`")


@app.command()
def validate(sheet: SheetArg, as_json: JsonOpt = False) -> None:
    """Check a sheet without connecting to anything: exit 0 if valid, 2 with every problem."""
    try:
        loaded = loader.load(sheet)
    except errors.ConfigError as exc:
        if as_json:
            details = exc.details or [
                {"file": str(sheet), "line": None, "column": None, "path": None, "message": str(exc)}
            ]
            _json({"valid": False, "problems": details})
            raise Exit(2) from None
        raise _fail(str(exc).replace("[", r"\["), 2) from None
    if as_json:
        _json({"valid": True, "syncs": list(loaded.sheet.syncs)})
    else:
        out.print(f"{sheet}: valid ({len(loaded.sheet.syncs)} sync(s): {', '.join(loaded.sheet.syncs)})")


@app.command()
def seed(
    sheet: SheetArg,
    sync: SyncOpt = None,
    again: Annotated[
        bool,
        typer.Option(
            "--again", help="Re-read every row of an already seeded sync (unchanged rows are skipped)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """First load: record the starting cursor, then load all rows (or `seed.where`); resumable."""
    loaded = _load(sheet)
    names = _names(loaded, sync)
    store = _store(loaded, create=True)
    _execute(loaded, store, names, "seed", as_json, again=again, progress=not as_json)


@app.command()
def run(
    sheet: SheetArg,
    sync: SyncOpt = None,
    overlap: Annotated[
        bool,
        typer.Option(
            "--overlap", help="Re-read the recent window and report rows the incremental runs missed."
        ),
    ] = False,
    window: Annotated[
        str | None, typer.Option(help="Overlap window, e.g. 24h (default: the sheet's).")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", help="Keep running passes until SIGTERM/Ctrl-C (low-latency syncs); see --poll."
        ),
    ] = False,
    poll: Annotated[
        str, typer.Option(help="With --follow: the longest wait between passes, e.g. 200ms, 2s.")
    ] = "1s",
    deletes: Annotated[
        bool,
        typer.Option(
            "--deletes",
            help="Also check for deleted rows (watermark syncs): every source key is compared with "
            "the key ledger and the missing ones are sent as deletes.",
        ),
    ] = False,
    force_deletes: Annotated[
        bool,
        typer.Option(
            "--force-deletes",
            help="Let this run past the mass-delete guard (deletes above `deletes.max_delete_ratio`, "
            "or a source that reads empty or partial).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """One pass of every sync (or --sync NAME): deliver what changed since the last run."""
    loaded = _load(sheet)
    names = _names(loaded, sync)
    if follow:
        if overlap:
            raise _fail("--follow does not go with --overlap", 2)
        if deletes or force_deletes:
            raise _fail("--follow does not go with --deletes or --force-deletes", 2)
        from mapsync.cli_follow import run_follow

        run_follow(loaded, names, poll, as_json)
        return
    if window is not None and not overlap:
        raise _fail("--window goes with --overlap", 2)
    try:
        span = parse_duration(window) if window is not None else None
    except ValueError as exc:
        raise _fail(f"--window: {exc}", 2) from None
    store = _store(loaded, create=False)
    _execute(
        loaded,
        store,
        names,
        "overlap" if overlap else "run",
        as_json,
        window=span,
        deletes=deletes,
        force_deletes=force_deletes,
    )


def _execute(
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
) -> None:
    """Run `kind` (seed | run | overlap | retry) for each sync, print the reports, exit 0/1/2."""
    from mapsync.progress import RichObserver

    observer = RichObserver(err) if progress and err.is_terminal else None
    engine = Engine(loaded, store, observer)
    reports: list[RunReport] = []
    code = 0
    try:
        for name in names:
            try:
                with _handled(loaded.secrets):
                    if kind == "retry":
                        reports.append(engine.retry(name, field, key=key))
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
    finally:
        if observer:
            observer.stop()
        engine.close()
        store.close()
    if any(not r.ok for r in reports):
        code = max(code, 1)
    if as_json:
        _json([_report_dict(r, loaded.sheet) for r in reports])
    else:
        for r in reports:
            _print_report(r, loaded.sheet)
    if code:
        raise Exit(code)


def _report_dict(r: RunReport, sheet: Sheet | None = None) -> dict[str, Any]:
    return cli_report.report_dict(r, sheet)


def _print_report(r: RunReport, sheet: Sheet | None = None) -> None:
    cli_report.print_report(out, r, sheet)


@app.command()
def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where to build the demo.")] = Path("mapsync-demo"),
) -> None:
    """Build a sample ERP and portal (SQLite), seed, change rows, sync, and show what happened."""
    from mapsync import demo as demo_mod

    with _handled():
        code = demo_mod.run(folder, out)
    if code:
        raise Exit(code)


# the read-only views and state commands live in their own module; importing it registers them
from mapsync import (  # noqa: E402,F401  (`unmapped` and `retry` in the first)
    cli_changelog,
    cli_check,
    cli_sandbox,
    cli_serve,
    cli_triggers,
    cli_unmapped,
    cli_views,
)
