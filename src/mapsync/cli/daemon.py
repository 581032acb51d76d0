"""`mapsync daemon`: every sync of the sheet on its schedule until SIGTERM (`mapsync.daemon`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from mapsync import daemon as daemon_module
from mapsync import daemon_process
from mapsync.cli.common import JsonOpt, SheetArg, app, err, fail, load_sheet, serve_daemon
from mapsync.sheet import checks
from mapsync.sheet.duration import parse_duration
from mapsync.sheet.loader import LoadedSheet


@app.command()
def daemon(
    sheet: SheetArg,
    sync: Annotated[
        list[str] | None,
        typer.Option("--sync", help="Run only this sync (repeat the option for several)."),
    ] = None,
    poll: Annotated[
        str,
        typer.Option(help="How often pause/resume/request and due slots are looked at, e.g. 1s."),
    ] = "1s",
    parallel: Annotated[
        int,
        typer.Option(
            min=1, help="At most this many runs at once in this daemon (the others wait their turn)."
        ),
    ] = daemon_module.PARALLEL,
    serve: Annotated[
        str | None,
        typer.Option(
            "--serve",
            metavar="ADDR",
            help="Also serve the HTTP app of `mapsync serve` (/metrics with this daemon's run "
            "counters, /healthz, /readyz, webhooks) on PORT (127.0.0.1) or HOST:PORT.",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            metavar="ADDR",
            help="Also serve /metrics alone on PORT (127.0.0.1) or HOST:PORT.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every sync on its `schedule:` (every, cron, follow) and `retry:` until SIGTERM/Ctrl-C.

    Each scheduled slot runs once (recorded with its scheduled time, lateness, worker and sheet
    fingerprint); a slot that falls due while the previous run still runs, or while the sync is
    paused or backing off, is recorded as skipped. Failures are retried with backoff, the other
    syncs go on. SIGHUP reloads the sheet; SIGTERM stops after the current batches (30 s grace).
    Runs that changed something or failed are printed (one JSON object per line with --json).

    Several daemons may share one PostgreSQL state store (on one host or several): they split the
    syncs between them, and a daemon that stops answering (killed, frozen, cut off) has its syncs
    taken over within twice `state.lease_ttl`; `mapsync workers` shows who runs what. A SQLite
    state store allows one daemon.

    `--serve ADDR` serves `mapsync serve`'s app beside the scheduler (Prometheus `/metrics` with
    this daemon's run counters, `/healthz`, `/readyz`); `--metrics ADDR` a listener with
    `/metrics` alone. A bare port listens on 127.0.0.1."""
    serve_at = parse_addr("--serve", serve) if serve is not None else None
    metrics_at = parse_addr("--metrics", metrics) if metrics is not None else None
    loaded = load_sheet(sheet)
    names = _names(loaded, sync)
    interval = _duration("--poll", poll)
    scheduled = [n for n in names if daemon_process.scheduled(loaded, n)]
    if not scheduled:
        raise fail(
            "no sync to run: none of "
            + ", ".join(names)
            + " has `schedule: {every: …}`, `{cron: …}`, `{follow: true}` or `retry:` "
            "(see docs/sheet.md, Schedule); `mapsync run --follow` follows syncs without one",
            2,
        )
    idle = [n for n in names if n not in scheduled]
    if idle:
        err.print(
            f"not scheduled (no `schedule:` or `retry:`), left to `mapsync run`: {', '.join(idle)}",
            markup=False,
            highlight=False,
        )
    code = serve_daemon(
        loaded,
        scheduled,
        as_json,
        poll=interval,
        named=sync is not None,
        parallel=parallel,
        serve=serve_at,
        metrics=metrics_at,
    )
    if code:
        raise fail("the daemon stopped with runs cut or a state store to fix: see the log above", code)


def _names(loaded: LoadedSheet, sync: list[str] | None) -> list[str]:
    order = checks.run_order(loaded.sheet)
    if not sync:
        return order
    unknown = [s for s in sync if s not in loaded.sheet.syncs]
    if unknown:
        raise fail(f"unknown sync {unknown[0]!r} (known: {', '.join(loaded.sheet.syncs)})", 2)
    return [n for n in order if n in sync]


def _duration(option: str, text: str) -> dt.timedelta:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}", 2) from None
    if value.total_seconds() <= 0:
        raise fail(f"{option} must be more than 0", 2)
    return value


def parse_addr(option: str, text: str) -> tuple[str, int]:
    """`PORT` (on 127.0.0.1), `HOST:PORT` or `[IPV6]:PORT` → (host, port); a config error otherwise."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host or not host:
        raise fail(f"{option}: {text!r} is not PORT or HOST:PORT (an IPv6 host goes in \\[brackets])", 2)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise fail(f"{option}: {text!r} has no port between 1 and 65535", 2)
    return host, int(port)
