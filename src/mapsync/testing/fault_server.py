"""A small fault-injecting HTTP server for client tests (not the sandbox).

A test gives it an `app(request) -> Reply` and a script of faults; each request takes the next
fault of the script (if any) before the app sees it:

- `Fault.status(503, headers, body)`: answer that, the app never sees the request;
- `Fault.apply_then_hang(seconds)`: the app applies the request, the answer comes too late;
- `Fault.malformed()`: the app applies it, the answer is a 200 that is not JSON;
- `Fault.before(fn)`: run `fn()` (e.g. revoke tokens), then the app answers;
- `Fault.redirect(location, code)`: a 3xx with that `Location`, the app never sees the request;
- `Fault.echo_headers(code)`: an error whose body repeats the request headers (as some APIs do,
  `Authorization` included: the canary's favourite leak).

`paged(rows, size, next_origin=…, style=…)` is an app that pages a list by cursor (absolute next
URL in the body) or `Link` header, with the next URL on another origin when asked.
`FaultServer(app, tls=True)` serves HTTPS with a fresh self-signed certificate (made with the
`openssl` command), so clients that verify certificates fail.

Every request is logged with its arrival time, method, path, headers and body.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Request:
    t: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    raw: bytes | None = None


@dataclasses.dataclass
class Fault:
    kind: str
    reply: Reply | None = None
    seconds: float = 0.0
    fn: Callable[[], None] | None = None

    @staticmethod
    def status(code: int, headers: dict[str, str] | None = None, body: Any = None) -> Fault:
        return Fault(
            "status", Reply(code, body if body is not None else {"message": f"fault {code}"}, headers or {})
        )

    @staticmethod
    def apply_then_hang(seconds: float) -> Fault:
        return Fault("hang", seconds=seconds)

    @staticmethod
    def malformed() -> Fault:
        return Fault("malformed")

    @staticmethod
    def before(fn: Callable[[], None]) -> Fault:
        return Fault("before", fn=fn)

    @staticmethod
    def redirect(location: str, code: int = 302) -> Fault:
        return Fault("status", Reply(code, {"message": "moved"}, {"Location": location}))

    @staticmethod
    def echo_headers(code: int = 400) -> Fault:
        return Fault("echo", Reply(code))


def paged(
    rows: list[dict[str, Any]], size: int, *, next_origin: str | None = None, style: str = "cursor"
) -> Callable[[Request], Reply]:
    """An app serving `rows` in pages of `size` at any path: `?at=N` picks the page; the next
    page's absolute URL is in the body's `next` (style `cursor`) or a `Link` header (`link`), on
    `next_origin` (another server) when given, else on the requested server."""

    def app(req: Request) -> Reply:
        parsed = urllib.parse.urlsplit(req.path)
        at = int(dict(urllib.parse.parse_qsl(parsed.query)).get("at", 0))
        end = at + size
        nxt = None
        if end < len(rows):
            origin = next_origin or f"http://{req.headers.get('host', '')}"
            nxt = f"{origin}{parsed.path}?at={end}"
        if style == "link":
            return Reply(200, {"data": rows[at:end]}, {"Link": f'<{nxt}>; rel="next"'} if nxt else {})
        return Reply(200, {"data": rows[at:end], "next": nxt})

    return app


def self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key for `host` (by the `openssl` command)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=IP:{host}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class FaultServer:
    def __init__(self, app: Callable[[Request], Reply], *, tls: bool = False) -> None:
        self.app = app
        self.tls = tls
        self.script: list[Fault | None] = []
        self.log: list[Request] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(
                    time.time(),
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                with server.lock:
                    server.log.append(req)
                    fault = server.script.pop(0) if server.script else None
                reply = server.handle(req, fault)
                if reply is None:
                    self.close_connection = True
                    return
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            with tempfile.TemporaryDirectory() as folder:
                cert, key = self_signed(Path(folder))
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(cert, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, req: Request, fault: Fault | None) -> Reply | None:
        if fault is None:
            return self.app(req)
        if fault.kind == "status":
            return fault.reply
        if fault.kind == "before":
            assert fault.fn is not None
            fault.fn()
            return self.app(req)
        if fault.kind == "echo":
            assert fault.reply is not None
            return Reply(fault.reply.status, {"error": "rejected", "request_headers": req.headers})
        self.app(req)  # applied, whatever the client hears
        if fault.kind == "malformed":
            return Reply(200, raw=b"<html><body>Server Error</body>")
        time.sleep(fault.seconds)
        return None

    def requests(self, method: str | None = None, prefix: str = "") -> list[Request]:
        return [r for r in self.log if (method is None or r.method == method) and r.path.startswith(prefix)]

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
