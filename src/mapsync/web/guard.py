"""The app's outer guard (pure ASGI middleware), before any route or login is looked at:

- **Host allow-list** (DNS rebinding): the `Host` header must name `localhost`, `127.0.0.1`,
  `[::1]` or a name of the sheet's `web.hosts` (any port). Missing or malformed: 400; another
  host: 421. The webhook routes are exempt: they carry their own HMAC signature and are called
  by servers, not browsers (whose ambient cookies are what a rebinding attack would borrow).
- **Security headers** on every response: a Content-Security-Policy (`default-src 'self';
  frame-ancestors 'none'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`,
  `X-Frame-Options: DENY`, and `Cache-Control: no-store` (but on `/static/`).
- **Body limit**: a request body over `max_body` bytes is answered 413, whether it announces its
  length or streams (chunked): the bytes are counted as they arrive. Webhook routes keep theirs.

Nothing here reads `X-Forwarded-For` or `Forwarded`: the client address is the socket's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALWAYS_ALLOWED = ("localhost", "127.0.0.1", "[::1]")
WEBHOOKS = "/webhooks/"
_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9.-]{1,253})(:\d{1,5})?$")
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes the limit (an HTTPException: FastAPI's body
    parsing lets it through as is, and the app answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


def host_name(header: str) -> str | None:
    """The host of a `Host` header without its port, lower-case; None when malformed."""
    match = _HOST.match(header.strip().lower())
    return match.group(1) if match else None


class Guard:
    def __init__(self, app: ASGIApp, *, hosts: Iterable[str] = (), max_body: int = 65_536) -> None:
        self.app = app
        self.hosts = frozenset((*ALWAYS_ALLOWED, *(h.lower() for h in hosts)))
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        hook = path.startswith(WEBHOOKS)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                given = list(message.get("headers", []))
                names = {k.lower() for k, _ in given}
                extra = [h for h in HEADERS if h[0] not in names]
                if b"cache-control" not in names and not path.startswith("/static/"):
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": given + extra}
            await send(message)

        if not hook:
            name = host_name(headers.get("host", ""))
            if name is None:
                await _answer(secured, 400, "a Host header is required")
                return
            if name not in self.hosts:
                await _answer(secured, 421, "this host name is not served here (add it to web.hosts)")
                return
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                await _answer(secured, 413, f"request body over {self.max_body} bytes")
                return
        limit = self.max_body
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, receive if hook else counted, secured)
        except BodyTooLarge:
            if started:
                raise
            await _answer(secured, 413, f"request body over {limit} bytes")


async def _answer(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
