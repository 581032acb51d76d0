"""The HTTP server under `mapsync serve`: uvicorn's h11 protocol with a deadline per request and a
connection cap, so slow or idle clients cannot hold the receiver.

- **Read deadline**: a client must deliver a whole request (headers and body) within
  `read_timeout` of connecting, or of the previous response on a kept-alive connection; when the
  deadline passes the connection is closed (`webhook_read_timeout` in the log). A deadline for
  the whole request, not per read: a client trickling one byte a second cannot stretch it.
- **Connection cap**: beyond `max_connections` open connections, a new one is answered `503`
  and closed at once (`webhook_connection_refused`).
- **Header size**: a request head (request line and headers) over `max_header_bytes` is
  answered `431` and the connection closed, whether it came in pieces or in one packet (h11's
  own limit only looks at heads still incomplete).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
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


_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b'connection: close\r\ncontent-length: 38\r\n\r\n{"error": "request headers too large"}'
)


def _head_length(buffered: bytes) -> tuple[int, bool]:
    """(length of the request head in `buffered`, whether it is complete)."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := buffered.find(sep)) >= 0]
    return (min(ends), True) if ends else (len(buffered), False)


def guarded_protocol(read_timeout: float, max_connections: int, max_header_bytes: int) -> type[H11Protocol]:
    """An h11 protocol class with the read deadline, the connection cap and the head limit."""

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _head = b""  # the part of a request head seen so far (while h11 waits for the request)

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
            if self.conn.their_state is h11.IDLE:
                length, complete = _head_length(self._head + data)
                if length > max_header_bytes:
                    log.warning(
                        "webhook_headers_too_large",
                        extra={"action": "webhook_headers_too_large", "client": _client(self.client)},
                    )
                    self.transport.write(_TOO_LARGE)
                    self.transport.close()
                    return
                self._head = b"" if complete else self._head + data
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


def _config(
    app: Any, read_timeout: float, max_connections: int, max_header_bytes: int, **kw: Any
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=guarded_protocol(read_timeout, max_connections, max_header_bytes),
        h11_max_incomplete_event_size=max_header_bytes,
        log_level="warning",
        access_log=False,
        server_header=False,
        # never trust X-Forwarded-For/-Proto (uvicorn trusts them from 127.0.0.1 by default,
        # exactly where a reverse proxy connects from): the login limit and the audit log key on
        # the socket's address, which a client cannot choose
        proxy_headers=False,
        forwarded_allow_ips="",
        **kw,
    )


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
    config = _config(app, read_timeout, max_connections, max_header_bytes, host=host, port=port)
    uvicorn.Server(config).run()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` (port 0: any free one); OSError when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Background:
    """`app` served on a thread beside other work (`mapsync daemon --serve`), with the same
    guards. The socket is bound before the thread starts, so a port in use is an OSError here,
    and `port` is the real one (given 0)."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        name: str = "mapsync-serve",
    ) -> None:
        self.sock = bind(host, port)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.server = uvicorn.Server(_config(app, read_timeout, max_connections, max_header_bytes))
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # the server's end must not take the process with it
            log.error("serve_failed", extra={"action": "serve_failed", "error": type(exc).__name__})

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        with contextlib.suppress(OSError):
            self.sock.close()
