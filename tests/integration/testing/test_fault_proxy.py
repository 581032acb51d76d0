"""The TCP fault proxy itself: forwarding, counters, latency, stall/resume, reset, cut after N bytes."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from mapsync.testing.fault_proxy import Proxy, proxied_url, target_of


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:  # the proxy reset the connection
            pass


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[0], server.server_address[1]
    server.shutdown()
    server.server_close()


def _client(proxy: Proxy, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    return sock


def _recv(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def test_forwards_and_counts_each_direction(
    fault_proxy: Callable[[str, int], Proxy], echo: tuple[str, int]
) -> None:
    proxy = fault_proxy(*echo)
    with _client(proxy) as sock:
        sock.sendall(b"hello")
        assert _recv(sock, 5) == b"hello"
    assert proxy.bytes_up == 5
    assert proxy.bytes_down == 5


def test_latency_delays_each_chunk(fault_proxy: Callable[[str, int], Proxy], echo: tuple[str, int]) -> None:
    proxy = fault_proxy(*echo)
    proxy.latency(0.2)
    with _client(proxy) as sock:
        t0 = time.monotonic()
        sock.sendall(b"x")
        assert _recv(sock, 1) == b"x"
        assert time.monotonic() - t0 >= 0.4  # once up, once down
        proxy.latency(0)
        t0 = time.monotonic()
        sock.sendall(b"y")
        assert _recv(sock, 1) == b"y"
        assert time.monotonic() - t0 < 0.2


def test_stall_holds_bytes_of_open_connections_until_resumed(
    fault_proxy: Callable[[str, int], Proxy], echo: tuple[str, int]
) -> None:
    proxy = fault_proxy(*echo)
    with _client(proxy, timeout=0.3) as sock:
        sock.sendall(b"a")
        assert _recv(sock, 1) == b"a"
        proxy.stall()
        sock.sendall(b"b")
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing comes back, and the connection stays open
        proxy.resume()
        sock.settimeout(2)
        assert _recv(sock, 1) == b"b"


def test_stall_of_one_direction(fault_proxy: Callable[[str, int], Proxy], echo: tuple[str, int]) -> None:
    proxy = fault_proxy(*echo)
    proxy.stall("down")
    with _client(proxy, timeout=0.3) as sock:
        sock.sendall(b"abc")
        with pytest.raises(TimeoutError):
            sock.recv(3)
        assert proxy.bytes_up == 3  # the request went through; the answer is held
        assert proxy.bytes_down == 0
        proxy.resume()
        sock.settimeout(2)
        assert _recv(sock, 3) == b"abc"


def test_reset_sends_rst(fault_proxy: Callable[[str, int], Proxy], echo: tuple[str, int]) -> None:
    proxy = fault_proxy(*echo)
    with _client(proxy) as sock:
        sock.sendall(b"a")
        assert _recv(sock, 1) == b"a"
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            for _ in range(50):  # the RST arrives; a write or read then fails with it
                sock.sendall(b"z")
                if not sock.recv(1):
                    break
                time.sleep(0.02)
    # the client sees the RST as soon as it is sent; the proxy's own loop closes its side just
    # after, on its thread: wait for that (a connection it never closes still fails)
    deadline = time.monotonic() + 5
    while proxy.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.connections == 0


def test_cut_after_n_bytes(fault_proxy: Callable[[str, int], Proxy], echo: tuple[str, int]) -> None:
    proxy = fault_proxy(*echo)
    proxy.cut_after(3, "down")
    with _client(proxy) as sock:
        sock.sendall(b"abcdef")
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(10):
                got += chunk
            raise ConnectionResetError  # a FIN instead of an RST would also end the read
        assert got == b"abc"
    assert proxy.bytes_down == 3
    with _client(proxy) as sock:  # the toxic clears once it fired
        sock.sendall(b"xyz")
        assert _recv(sock, 3) == b"xyz"


def test_stalls_a_real_postgresql_connection(
    fault_proxy: Callable[[str, int], Proxy], pg_database: Callable[[], str]
) -> None:
    url = pg_database()
    proxy = fault_proxy(*target_of(url))
    engine = sa.create_engine(
        sa.make_url(proxied_url(url, proxy)).set(drivername="postgresql+psycopg"),
        connect_args={"connect_timeout": 2},
    )
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            assert proxy.bytes_up > 0 and proxy.bytes_down > 0
        proxy.stall()
        t0 = time.monotonic()
        with pytest.raises(sa.exc.OperationalError):
            engine.dispose()
            with engine.connect():
                pass
        assert time.monotonic() - t0 < 10
    finally:
        proxy.resume()
        engine.dispose()
