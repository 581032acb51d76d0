"""The HTTP server under `mapsync serve`: uvicorn's h11 protocol with a deadline per request and a
connection cap, so slow or idle clients cannot hold the receiver.

- **Read deadline**: a client must deliver a whole request (headers and body) within
  `read_timeout` of connecting, or of the previous response on a kept-alive connection; when the
  deadline passes the connection is closed (`webhook_read_timeout` in the log). A deadline for
  the whole request, not per read: a client trickling one byte a second cannot stretch it.
- **Connection cap**: beyond `max_connections` open connections, a new one is answered `503`
  and closed at once (`webhook_connection_refused`).
- **Header size**: requests whose headers exceed `max_header_bytes` get `400` from h11.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("mapsync.webhooks")

READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 100
MAX_HEADER_BYTES = 16_384

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 38\r\n\r\n{"error": "too many open connections"}'
)


def guarded_protocol(read_timeout: float, max_connections: int) -> type[H11Protocol]:
    """An h11 protocol class with the read deadline and the connection cap."""

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning(
                    "webhook_connection_refused",
                    extra={
                        "action": "webhook_connection_refused",
                        "client": _client(self.client),
                        "open": len(self.connections) - 1,
                    },
                )
                transport.write(_BUSY)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.DONE:  # the whole request is in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is not h11.DONE:
                self._arm()  # kept alive: the next request has its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(read_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            log.warning(
                "webhook_read_timeout",
                extra={
                    "action": "webhook_read_timeout",
                    "client": _client(self.client),
                    "timeout_s": read_timeout,
                },
            )
            self.transport.close()

    return Guarded


def _client(addr: Any) -> str:
    return str(addr[0]) if addr else "?"


def run(
    app: Any,
    *,
    host: str,
    port: int,
    read_timeout: float = READ_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> None:
    """Serve `app` until SIGTERM/SIGINT."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(read_timeout, max_connections),
        h11_max_incomplete_event_size=max_header_bytes,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()
