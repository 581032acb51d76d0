"""The webhook receiver of `mapsync serve`: signed pushes from source applications into the inbox.

`POST /webhooks/<sync>` with the body as sent and three headers (names configurable per sync):

- timestamp: Unix seconds when the sender signed, within `tolerance` of our clock;
- signature: hex HMAC-SHA256 with the shared secret over `<timestamp>.<body>` (`sha256=` prefix
  allowed; several comma-separated signatures are tried, for secret rotation at the sender);
- event id (optional): the sender's unique id; without it the signature is the id.

The headers are judged before a byte of the body is read: a request without a signature or with
a stale timestamp is refused at once, one announcing a `Content-Length` over `max_body` too. The
body is then read in chunks into the HMAC as they come (no copy of the growing body per chunk).

Answers: `202 accepted` only after the event was committed to the inbox; `200 duplicate` for an
event id seen before, or for a verified signature seen before under whatever event id (a
captured request replayed with a new id), which adds no second row; `401` for a missing, bad or
stale signature (logged with the reason, never the body); `404` for a sync without `webhook:`;
`413` for a body over `max_body`; `400` for a body that is not a JSON object; `503` when the
state store cannot take it (the sender should retry).

`add_routes` puts them on the project's one HTTP app (`mapsync.web.app.create_app`: `mapsync
serve`, `mapsync daemon --serve`): the webhook routes only for a sheet with webhook syncs, and
always `GET /metrics` (Prometheus, `mapsync.metrics`), `GET /healthz` (200 while the process is
up) and `GET /readyz` (200 when the state store answers a ping within `READY_TIMEOUT_S`, else 503).
Health bodies carry a status only.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from mapsync import metrics as metrics_module
from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.webhook_models import WebhookConfig
from mapsync.state import inbox
from mapsync.state.store import StateStore

log = logging.getLogger("mapsync.webhooks")
READY_TIMEOUT_S = 2.0


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The hex HMAC-SHA256 signature of one request (what a sender computes)."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class Signed:
    """What the headers of a fresh, signed request say (the body still to be checked)."""

    stamp: str
    signed_at: int
    candidates: tuple[str, ...]  # the given signatures, lower-case hex without prefix

    def matches(self, expected: str) -> bool:
        return any(hmac.compare_digest(c.encode(), expected.encode()) for c in self.candidates)


def check_headers(cfg: WebhookConfig, headers: Mapping[str, str], now: float) -> Signed | str:
    """The signing headers, judged before the body is read: Signed, or the reason (for the log)."""
    stamp = headers.get(cfg.timestamp_header.lower(), "").strip()
    given = headers.get(cfg.signature_header.lower(), "").strip()
    if not stamp or not given:
        return "missing signature or timestamp header"
    try:
        signed_at = int(stamp)
    except ValueError:
        return "timestamp is not Unix seconds"
    if abs(now - signed_at) > cfg.tolerance.total_seconds():
        return "stale timestamp (outside the tolerance)"
    candidates = tuple(
        c.strip().removeprefix("sha256=").removeprefix("v1=").lower() for c in given.split(",")[:16]
    )
    return Signed(stamp, signed_at, candidates)


def verify(cfg: WebhookConfig, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """None if the request is authentic and fresh, else the reason (for the log)."""
    signed = check_headers(cfg, headers, now)
    if isinstance(signed, str):
        return signed
    return None if signed.matches(sign(cfg.secret, signed.stamp, body)) else "signature does not match"


def event_id(cfg: WebhookConfig, headers: Mapping[str, str], signature: str | None = None) -> str:
    """The sender's event id (whole: the inbox keys it by its hash), or without one the verified
    signature's hash (`signature`; else the header's, as given)."""
    if cfg.event_id_header:
        given = headers.get(cfg.event_id_header.lower(), "").strip()
        if given:
            return given
    if signature is None:
        signature = headers.get(cfg.signature_header.lower(), "").strip()
    return "sig:" + hashlib.sha256(signature.encode()).hexdigest()


def _reply(code: int, /, **body: object) -> JSONResponse:
    return JSONResponse(body, status_code=code)


def _rejected(sync: str, reason: str, client: str) -> JSONResponse:
    log.warning(
        "webhook_rejected",
        extra={"action": "webhook_rejected", "sync": sync, "reason": reason, "client": client},
    )
    return _reply(401, error="invalid signature")


def create_app(
    loaded: LoadedSheet,
    store: StateStore,
    *,
    clock: Callable[[], float] = time.time,
    metrics: metrics_module.Metrics | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> FastAPI:
    """An app of `add_routes` alone (the dashboard's app, `mapsync.web.app`, adds them to its own)."""
    app = FastAPI(title="mapsync", docs_url=None, redoc_url=None, openapi_url=None)
    add_routes(app, loaded, store, clock=clock, metrics=metrics, ready_timeout=ready_timeout)
    return app


def add_routes(
    app: FastAPI,
    loaded: LoadedSheet,
    store: StateStore,
    *,
    clock: Callable[[], float] = time.time,
    metrics: metrics_module.Metrics | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> None:
    """`/metrics`, `/healthz`, `/readyz`, and `POST /webhooks/<sync>` for the syncs of `loaded`
    that have a `webhook:` block (none: no webhook route), on `app`. `metrics`: the process's
    (whose runs it counts); without it, the store's gauges and counters that stay at zero."""
    hooks = {name: s.webhook for name, s in loaded.sheet.syncs.items() if s.webhook is not None}
    add_metrics(app, metrics or metrics_module.Metrics(loaded, store))
    pinger = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mapsync-readyz")
    pending: list[concurrent.futures.Future[None]] = []  # a ping still hanging is waited for, not repeated

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return _reply(200, status="ok")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        if not pending or pending[0].done():
            pending[:] = [pinger.submit(store.ping)]
        try:
            pending[0].result(timeout=ready_timeout)
        except concurrent.futures.TimeoutError:
            log.error("readyz_failed", extra={"action": "readyz_failed", "error": "timeout"})
            return _reply(503, status="unavailable")
        except Exception as exc:  # an HTTP answer, not a run's error; the class only (no URL)
            log.error("readyz_failed", extra={"action": "readyz_failed", "error": type(exc).__name__})
            return _reply(503, status="unavailable")
        return _reply(200, status="ready")

    if not hooks:
        return

    @app.post("/webhooks/{sync}", include_in_schema=False)
    async def receive(sync: str, request: Request) -> JSONResponse:
        cfg = hooks.get(sync)
        client = request.client.host if request.client else "?"
        if cfg is None:
            return _reply(404, error="no webhook for this sync")
        signed = check_headers(cfg, request.headers, clock())
        if isinstance(signed, str):  # refused before a byte of the body is read
            return _rejected(sync, signed, client)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cfg.max_body:
            return _reply(413, error=f"body over {cfg.max_body} bytes")
        mac = hmac.new(cfg.secret.encode("utf-8"), f"{signed.stamp}.".encode(), hashlib.sha256)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cfg.max_body:
                    return _reply(413, error=f"body over {cfg.max_body} bytes")
                mac.update(chunk)
                chunks.append(chunk)
        except ClientDisconnect:  # gone (or cut at the read deadline): nobody to answer
            return _reply(400, error="the client went away")
        expected = mac.hexdigest()
        if not signed.matches(expected):
            return _rejected(sync, "signature does not match", client)
        body = b"".join(chunks)
        try:
            text = body.decode("utf-8")
            if not isinstance(json.loads(text), dict):
                raise ValueError
        except ValueError:
            return _reply(400, error="the body is not a JSON object")
        eid = event_id(cfg, request.headers, expected)
        try:
            item = await run_in_threadpool(
                lambda: inbox.append(
                    store, sync, eid, text, "webhook", signature=expected, signed_at=signed.signed_at
                )
            )
        except sa.exc.SQLAlchemyError as exc:  # an HTTP answer (503: the sender retries), not a run's error
            log.error(
                "webhook_not_stored",
                extra={"action": "webhook_not_stored", "sync": sync, "error": type(exc).__name__},
            )
            return _reply(503, error="the inbox cannot take it now: retry later")
        if item is None:
            log.info(
                "webhook_duplicate",
                extra={"action": "webhook_duplicate", "sync": sync, "event_id": eid[:255]},
            )
            return _reply(200, status="duplicate", event_id=eid[:255])
        log.info(
            "webhook_accepted",
            extra={"action": "webhook_accepted", "sync": sync, "event_id": eid[:255], "inbox_id": item},
        )
        return _reply(202, status="accepted", id=item)


def add_metrics(app: FastAPI, metrics: metrics_module.Metrics) -> None:
    @app.get("/metrics", include_in_schema=False)
    def exposition() -> Response:
        return Response(metrics.exposition(), media_type=metrics_module.CONTENT_TYPE)


def metrics_app(metrics: metrics_module.Metrics) -> FastAPI:
    """An app serving `GET /metrics` alone (`mapsync daemon --metrics ADDR`)."""
    app = FastAPI(title="mapsync metrics", docs_url=None, redoc_url=None, openapi_url=None)
    add_metrics(app, metrics)
    return app
