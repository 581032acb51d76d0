"""How a sandbox (`testing/sandbox.py`) is served: `Running`, uvicorn on a loopback socket in a
background thread (for what is about HTTP itself: faults, timeouts, other processes, the `mapsync
sandbox` command); `InProcess`, the same FastAPI app through an httpx transport mounted for its
origin (`rest.transports.mount`), no server and no socket."""

from __future__ import annotations

import secrets as secrets_
import threading
import time
from typing import Any

import httpx
from fastapi import FastAPI

from mapsync.rest import transports
from mapsync.testing.sandbox import Config, Sandbox, create_app


class Running:
    """A sandbox served by uvicorn in a background thread (tests, benchmarks, the demo): a real
    socket, for what is about HTTP itself (faults, timeouts, other processes); `InProcess` below
    is the same sandbox without one."""

    transport: httpx.BaseTransport | None = None  # requests go over the network

    def __init__(self, config: Config | None = None, port: int = 0, host: str = "127.0.0.1") -> None:
        import socket

        import uvicorn

        self.sandbox = Sandbox(config or Config())
        if port == 0:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
        self.host, self.port = host, port
        cfg = uvicorn.Config(
            create_app(self.sandbox), host=host, port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, base_url: str | None = None, **kwargs: Any) -> httpx.Client:
        """A plain httpx client on the sandbox (for a test's own requests)."""
        return httpx.Client(base_url=base_url or self.base_url, **kwargs)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the CIMcloud sandbox did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sandbox.close()


class InProcessTransport(httpx.BaseTransport):
    """The sandbox's app behind an httpx transport: no server, no socket, no port. Each request
    runs on one event loop in a background thread (an anyio blocking portal), as uvicorn would
    run it, so the HTTP client's threads (async delivery, the concurrency gate) work unchanged.

    What it does not give: a socket's faults and timeouts, TLS, redirects across origins, other
    processes. Tests about those keep `Running`. `close()` (an httpx client closing) does
    nothing: the transport is shared by every client of the sandbox; `shutdown()` ends it."""

    def __init__(self, app: FastAPI) -> None:
        import anyio.from_thread

        # a server's answer to a failing handler is a 500, not an exception in the client
        self._asgi = httpx.ASGITransport(app, raise_app_exceptions=False)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            inner = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            resp = await self._asgi.handle_async_request(inner)
            content = await resp.aread()
            return resp.status_code, resp.headers.raw, content

        status, headers, content = self._portal.call(send)
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        return None

    def shutdown(self) -> None:
        self._portal_cm.__exit__(None, None, None)


class InProcess:
    """A sandbox reached through an httpx transport instead of a socket: the same app and store
    as `Running`, with `base_url` on an origin no DNS resolves (`http://sandbox-<id>.invalid`).
    While it runs, that origin is mounted in `mapsync.rest.transports.TRANSPORTS`, so every REST or
    CIMcloud connection made to `base_url` in this process (a sheet through the connector
    registry, the Engine, an in-process CLI) goes through `transport`; outside the process (a
    CLI subprocess) the name does not resolve and the request fails at once."""

    def __init__(self, config: Config | None = None) -> None:
        self.sandbox = Sandbox(config or Config())
        self.host, self.port = f"sandbox-{secrets_.token_hex(6)}.invalid", 80
        self.transport = InProcessTransport(create_app(self.sandbox))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def client(self, base_url: str | None = None, **kwargs: Any) -> httpx.Client:
        """A plain httpx client on the sandbox (for a test's own requests)."""
        return httpx.Client(base_url=base_url or self.base_url, transport=self.transport, **kwargs)

    def __enter__(self) -> InProcess:
        transports.mount(self.base_url, self.transport)
        return self

    def __exit__(self, *exc: object) -> None:
        transports.unmount(self.base_url)
        self.transport.shutdown()
        self.sandbox.close()
