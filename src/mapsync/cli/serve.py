"""`mapsync serve`: the project's HTTP app: the dashboard and its JSON API, metrics, health, the
webhook receiver (`mapsync.web.app`)."""

from __future__ import annotations

from typing import Annotated

import typer

from mapsync.cli.common import SheetArg, app, err, fail, load_sheet, open_store, out, warn_exposed
from mapsync.sheet import models
from mapsync.sheet.duration import parse_duration


@app.command()
def serve(
    sheet: SheetArg,
    host: Annotated[
        str, typer.Option(help="Address to listen on. Keep loopback behind a TLS reverse proxy.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8765,
    read_timeout: Annotated[
        str,
        typer.Option(
            help="A client must send its whole request (headers and body) within this time, or is "
            "disconnected."
        ),
    ] = "10s",
    max_connections: Annotated[
        int,
        typer.Option(help="Open connections at most; more are answered 503 and closed.", min=1),
    ] = 100,
    max_header_bytes: Annotated[
        int,
        typer.Option(help="Largest request head (request line and headers), in bytes.", min=1024),
    ] = 16_384,
) -> None:
    """Serve the sheet's HTTP app: the dashboard and its JSON API, Prometheus metrics, health, and
    signed webhooks into the inbox.

    The dashboard (`/`, `/api/...`) needs a login of a `web: users` user (or `web: anonymous_reads`
    on a loopback --host); see docs/dashboard.md.

    `GET /metrics` (the state store's gauges: last success, open record errors, open incidents,
    call budget left, lag and backlog), `GET /healthz` (200 while up), `GET /readyz` (200 when
    the state store answers, else 503), and `POST /webhooks/<sync>` for every sync with a
    `webhook:` block (HMAC-SHA256 over `<timestamp>.<body>`; `mapsync run` then delivers them,
    `changes: {method: inbox}`). Run counters come from the process that runs the syncs:
    `mapsync daemon --serve ADDR`.
    """
    from mapsync import webhook_server  # lazy: FastAPI and uvicorn only when it serves
    from mapsync.web import app as web_app

    try:
        timeout = parse_duration(read_timeout).total_seconds()
    except ValueError as exc:
        raise fail(f"--read-timeout: {exc}", 2) from None
    if timeout <= 0:
        raise fail("--read-timeout must be more than 0", 2)
    loaded = load_sheet(sheet)
    hooks = [name for name, s in loaded.sheet.syncs.items() if s.webhook is not None]
    unread = [
        f"{loaded.where('syncs', name, 'webhook')}: sync {name} has a `webhook:` block but "
        f"`changes: {{method: {loaded.sheet.syncs[name].changes.method}}}`: its events would never "
        "be delivered (use `changes: {method: inbox}`)"
        for name in hooks
        if not isinstance(loaded.sheet.syncs[name].changes, models.InboxChanges)
    ]
    if unread:
        raise fail("\n".join(unread), 2)
    web = loaded.sheet.web
    if web is not None and web.anonymous_reads and not web_app.is_loopback(host):
        raise fail(
            f"{loaded.where('web', 'anonymous_reads')}: anonymous reads are only served on a loopback "
            f"--host (127.0.0.1, ::1), not {host}: keep mapsync on loopback behind a reverse proxy",
            2,
        )
    store = open_store(loaded, create=True)
    warn_exposed(host)
    webhooks_note = f"/webhooks/<sync> for {', '.join(hooks)}; " if hooks else ""
    out.print(
        f"mapsync serve on http://{host}:{port}: the dashboard, /api, {webhooks_note}/metrics, /healthz, "
        "/readyz",
        highlight=False,
    )
    if web is None or not (web.users or web.anonymous_reads):
        err.print(
            "warning: no `web: users` in the sheet: the dashboard and /api answer 401 (docs/dashboard.md)",
            markup=False,
            highlight=False,
        )
    try:
        webhook_server.run(
            web_app.create_app(loaded, store, host=host),
            host=host,
            port=port,
            read_timeout=timeout,
            max_connections=max_connections,
            max_header_bytes=max_header_bytes,
        )
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
    finally:
        store.close()
