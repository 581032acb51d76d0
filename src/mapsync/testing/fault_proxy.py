"""A TCP fault proxy on loopback for tests: stall, slow, reset and cut real connections.

`Proxy(host, port)` listens on 127.0.0.1 (a free port, `.port`) and forwards every accepted
connection to `host:port`. It runs an asyncio loop in a background thread, so the code under test
(in-process, or a subprocess given `127.0.0.1:<proxy.port>` in its URL) talks to it like to the
real server. Toxics, switchable at any time, also while connections are open:

- `latency(seconds)`: each chunk waits that long before it is forwarded (`latency(0)` ends it);
- `stall(direction="both")`: blackhole: stop forwarding `up` (client → server), `down`
  (server → client) or both, without closing anything; bytes already read are held back, and a
  new connection is accepted but hears nothing. `resume()` forwards everything held;
- `reset()`: every open connection is ended with an RST on both sides (SO_LINGER 0);
- `cut_after(n, direction="both")`: forward `n` more bytes in that direction (summed over all
  connections), then reset the connection that crossed the limit; the toxic then clears;
- `bytes_up` / `bytes_down`: bytes forwarded so far, per direction; `connections`: open ones.

The pytest fixture `fault_proxy` (tests/conftest.py) is a factory `fault_proxy(host, port) ->
Proxy`; every proxy it made is closed at teardown. `proxied_url(url, proxy)` rewrites a
database URL to go through a proxy. Reused by the lease, daemon, reconciliation and performance
tests: keep it dependency-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any

import sqlalchemy as sa

CHUNK = 65536
DIRECTIONS = ("up", "down")


class Proxy:
    """One listening proxy in front of `host:port` (see the module docstring)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.bytes_up = 0
        self.bytes_down = 0
        self._latency = 0.0
        self._cut: dict[str, int | None] = {"up": None, "down": None}
        self._loop = asyncio.new_event_loop()
        self._flowing: dict[str, asyncio.Event] = {}
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="fault-proxy")
        self._thread.start()
        ready.wait(10)
        self.port: int = self._server.sockets[0].getsockname()[1] if self._server else 0

    # ----------------------------------------------------------------- toxics

    def stall(self, direction: str = "both") -> None:
        for d in _directions(direction):
            self._loop.call_soon_threadsafe(self._flowing[d].clear)

    def resume(self) -> None:
        for d in DIRECTIONS:
            self._loop.call_soon_threadsafe(self._flowing[d].set)

    def latency(self, seconds: float) -> None:
        self._latency = seconds

    def cut_after(self, n: int, direction: str = "both") -> None:
        for d in _directions(direction):
            self._cut[d] = n

    def reset(self) -> None:
        self._call(self._reset_all())

    @property
    def connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    # ----------------------------------------------------------------- the loop

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        for d in DIRECTIONS:
            self._flowing[d] = asyncio.Event()
            self._flowing[d].set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        ready.set()
        self._loop.run_forever()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(c_writer)
            return
        conn = _Conn(c_writer, s_writer)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.ensure_future(self._pump(conn, "up", c_reader, s_writer)),
            asyncio.ensure_future(self._pump(conn, "down", s_reader, c_writer)),
        ]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._conns.discard(conn)

    async def _pump(
        self, conn: _Conn, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                await self._flowing[direction].wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self._latency:
                    await asyncio.sleep(self._latency)
                await self._flowing[direction].wait()  # a stall set while this chunk was read
                limit = self._cut[direction]
                if limit is not None and len(data) >= limit:
                    data = data[:limit]
                    self._cut[direction] = None
                    self._count(direction, len(data))
                    writer.write(data)
                    await writer.drain()
                    conn.reset()
                    return
                if limit is not None:
                    self._cut[direction] = limit - len(data)
                self._count(direction, len(data))
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            conn.reset()
            return
        if writer.can_write_eof():  # half-close: the other direction may still be talking
            with contextlib.suppress(OSError):
                writer.write_eof()

    def _count(self, direction: str, n: int) -> None:
        if direction == "up":
            self.bytes_up += n
        else:
            self.bytes_down += n

    async def _reset_all(self) -> None:
        for conn in list(self._conns):
            conn.reset()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for d in DIRECTIONS:
            self._flowing[d].set()
        await self._reset_all()


class _Conn:
    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client, self.server = client, server
        self.tasks: list[asyncio.Future[None]] = []

    def reset(self) -> None:
        _abort(self.client)
        _abort(self.server)
        for task in self.tasks:
            task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be up, down or both, not {direction!r}")
    return (direction,)


def proxied_url(url: str, proxy: Proxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    return sa.make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def target_of(url: str) -> tuple[str, int]:
    """The host and port a database URL points at (PostgreSQL 5432, MariaDB 3306 by default)."""
    parsed = sa.make_url(url)
    default = 5432 if parsed.get_backend_name() == "postgresql" else 3306
    return parsed.host or "127.0.0.1", parsed.port or default
