"""The webhook receiver of `mapsync serve`: signed pushes from source applications into the inbox.

`POST /webhooks/<sync>` with the body as sent and three headers (names configurable per sync):

- timestamp: Unix seconds when the sender signed, within `tolerance` of our clock;
- signature: hex HMAC-SHA256 with the shared secret over `<timestamp>.<body>` (`sha256=` prefix
  allowed; several comma-separated signatures are tried, for secret rotation at the sender);
- event id (optional): the sender's unique id; without it the signature is the id.

Answers: `202 accepted` only after the event was committed to the inbox; `200 duplicate` for an
event id (or signature) seen before, which adds no second row; `401` for a missing, bad or stale
signature (logged with the reason, never the body); `404` for a sync without `webhook:`;
`413` for a body over `max_body`; `400` for a body that is not a JSON object; `503` when the
state store cannot take it (the sender should retry). `GET /healthz` checks the state store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mapsync.sheet.loader import LoadedSheet
from mapsync.sheet.webhook_models import WebhookConfig
from mapsync.state import inbox
from mapsync.state.store import StateStore

log = logging.getLogger("mapsync.webhooks")


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The hex HMAC-SHA256 signature of one request (what a sender computes)."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(cfg: WebhookConfig, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """None if the request is authentic and fresh, else the reason (for the log)."""
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
    expected = sign(cfg.secret, stamp, body)
    for candidate in given.split(","):
        value = candidate.strip().removeprefix("sha256=").removeprefix("v1=").lower()
        if hmac.compare_digest(value.encode(), expected.encode()):
            return None
    return "signature does not match"


def event_id(cfg: WebhookConfig, headers: Mapping[str, str]) -> str:
    """The sender's event id, or (without one) a hash of the signature header."""
    if cfg.event_id_header:
        given = headers.get(cfg.event_id_header.lower(), "").strip()
        if given:
            return given[:255]
    signature = headers.get(cfg.signature_header.lower(), "").strip()
    return "sig:" + hashlib.sha256(signature.encode()).hexdigest()


def _reply(code: int, /, **body: object) -> JSONResponse:
    return JSONResponse(body, status_code=code)


def create_app(loaded: LoadedSheet, store: StateStore, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """The ASGI app for the syncs of `loaded` that have a `webhook:` block."""
    hooks = {name: s.webhook for name, s in loaded.sheet.syncs.items() if s.webhook is not None}
    app = FastAPI(title="mapsync", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            log.error("healthz_failed", extra={"action": "healthz_failed", "error": type(exc).__name__})
            return _reply(503, status="state store unreachable")
        return _reply(200, status="ok", webhooks=sorted(hooks))

    @app.post("/webhooks/{sync}")
    async def receive(sync: str, request: Request) -> JSONResponse:
        cfg = hooks.get(sync)
        client = request.client.host if request.client else "?"
        if cfg is None:
            return _reply(404, error="no webhook for this sync")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cfg.max_body:
            return _reply(413, error=f"body over {cfg.max_body} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body:
                return _reply(413, error=f"body over {cfg.max_body} bytes")
        reason = verify(cfg, request.headers, body, clock())
        if reason is not None:
            log.warning(
                "webhook_rejected",
                extra={"action": "webhook_rejected", "sync": sync, "reason": reason, "client": client},
            )
            return _reply(401, error="invalid signature")
        try:
            text = body.decode("utf-8")
            if not isinstance(json.loads(text), dict):
                raise ValueError
        except ValueError:
            return _reply(400, error="the body is not a JSON object")
        eid = event_id(cfg, request.headers)
        try:
            item = await run_in_threadpool(inbox.append, store, sync, eid, text, "webhook")
        except sa.exc.SQLAlchemyError as exc:
            log.error(
                "webhook_not_stored",
                extra={"action": "webhook_not_stored", "sync": sync, "error": type(exc).__name__},
            )
            return _reply(503, error="the inbox cannot take it now: retry later")
        if item is None:
            log.info(
                "webhook_duplicate", extra={"action": "webhook_duplicate", "sync": sync, "event_id": eid}
            )
            return _reply(200, status="duplicate", event_id=eid)
        log.info(
            "webhook_accepted",
            extra={"action": "webhook_accepted", "sync": sync, "event_id": eid, "inbox_id": item},
        )
        return _reply(202, status="accepted", id=item)

    return app
