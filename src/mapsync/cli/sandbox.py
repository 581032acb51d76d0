"""`mapsync sandbox cimcloud`: a local stand-in for the CIMcloud API (see docs/rest.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mapsync.cli.common import app, fail, out
from mapsync.sheet.connection_models import parse_limit

sandbox_app = typer.Typer(
    no_args_is_help=True, help="Local stand-ins for remote APIs, for trying and testing."
)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("cimcloud")
def cimcloud(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            help="Call limit per credential, repeatable (e.g. --budget 2/1s --budget 100/15m); "
            "`off` for none. Default: CIMcloud's 2/1s and 100/15m."
        ),
    ] = None,
    async_contract: Annotated[
        str, typer.Option(help="What a queued (> 10 records) write answers: none | jobs (both inferred).")
    ] = "none",
    online_orders_lines: Annotated[
        str,
        typer.Option(
            help="Where OnlineOrders puts order lines (inferred): nested (under `details`) | "
            "separate (read from order_detail)."
        ),
    ] = "nested",
    site: Annotated[str, typer.Option(help="Site name: the first path segment.")] = "sandbox",
    db: Annotated[
        Path | None, typer.Option(help="SQLite file of the sandbox's data (default: a temp file).")
    ] = None,
) -> None:
    """Serve a CIMcloud stand-in on loopback: documented behaviours, inferred ones marked.

    Credentials: AuthKey `sandbox-key`, user `sandbox`, password `sandbox-password` (token or Basic).
    Every request is logged with time, method, path and status at GET /_sandbox/requests.
    """
    from mapsync.testing.sandbox import Config
    from mapsync.testing.sandbox_serve import Running  # lazy: FastAPI and httpx only when it runs

    if async_contract not in ("none", "jobs"):
        raise fail("--async-contract is `none` or `jobs`", 2)
    if online_orders_lines not in ("nested", "separate"):
        raise fail("--online-orders-lines is `nested` or `separate`", 2)
    texts = ["2/1s", "100/15m"] if budget is None else [b for b in budget if b.lower() != "off"]
    try:
        limits = [parse_limit(b) for b in texts]
    except ValueError as exc:
        raise fail(f"--budget: {exc}", 2) from None
    config = Config(
        site=site,
        budget=limits,
        async_contract=async_contract,
        db_path=str(db or ""),
        online_orders_lines="separate" if online_orders_lines == "separate" else "nested",
    )
    running = Running(config, port=port)
    out.print(
        f"CIMcloud sandbox at {running.base_url}/{site}/  (budget: {', '.join(texts) or 'off'}; "
        f"async contract: {async_contract}; order lines: {online_orders_lines}; data: {config.db_path})\n"
        f"credentials: AuthKey {config.auth_key}, user {config.username}, password {config.password}\n"
        "request log: GET /_sandbox/requests; orders: GET /_sandbox/orders; faults: POST "
        "/_sandbox/faults. Ctrl-C stops it.",
        highlight=False,
    )
    running.server.run()
    running.sandbox.close()
