"""Scenes for the real-process tests of watching (tests/integration/test_watch_process.py,
tests/e2e/test_watch_secrets.py): `mapsync daemon` processes with their logs in files, a
destination cut and restored through the fault proxy, an HTTP API that refuses every token, and
readers of what the alert receivers got (e-mails, webhook bodies, their HMAC signatures).

The receivers themselves are tests/alert_world.py's (`smtp_server`, `webhook_receiver`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mapsync.testing.fault_proxy import Proxy
from tests import helpers as h
from tests.alert_world import Request

# --------------------------------------------------------------------------- processes


class Daemon:
    """A `mapsync daemon sheet.yaml` process; its stderr (and `--log-file`) in files, so a pipe
    nobody reads never blocks it."""

    def __init__(
        self,
        folder: Path,
        name: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        level: str = "info",
        log_file: bool = False,
    ) -> None:
        self.out = folder / f"{name}.out"
        self.err = folder / f"{name}.err"
        self.file = folder / f"{name}.log" if log_file else None
        extra = ["--log-file", str(self.file)] if self.file is not None else []
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mapsync",
                    "--log-format",
                    "json",
                    "--log-level",
                    level,
                    *extra,
                    "daemon",
                    "sheet.yaml",
                    "--poll",
                    "200ms",
                    *args,
                ],
                cwd=folder,
                env={**os.environ, "NO_COLOR": "1", **(env or {})},
                stdout=out,
                stderr=err,
                text=True,
            )

    def stderr(self) -> str:
        return self.err.read_text()

    def log_file(self) -> str:
        return self.file.read_text() if self.file is not None and self.file.exists() else ""

    def actions(self) -> list[str]:
        """The `action` of each JSON log line (others skipped)."""
        found = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict) and "action" in parsed:
                    found.append(str(parsed["action"]))
        return found

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def daemons() -> Iterator[Callable[..., Daemon]]:
    """A factory of daemons (`start(folder, name, …)`); every one still running at the end is killed."""
    started: list[Daemon] = []

    def start(*args: Any, **kwargs: Any) -> Daemon:
        d = Daemon(*args, **kwargs)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            d.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- the destination cut


class Cut:
    """Cuts a database behind a fault proxy and restores it: while cut, every open connection is
    reset and every new one is accepted and reset at once (the proxy's upstream is a bound port
    that does not listen: refused), as a database that went down behind a load balancer."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.target = proxy.target
        self._dead = socket.socket()  # bound, never listening: a connect to it is refused
        self._dead.bind(("127.0.0.1", 0))

    def cut(self) -> None:
        self.proxy.target = self._dead.getsockname()
        self.proxy.reset()

    def restore(self) -> None:
        self.proxy.target = self.target

    def close(self) -> None:
        self._dead.close()


# --------------------------------------------------------------------------- an API that says 401


class RefusingApi:
    """An HTTP server on 127.0.0.1 that takes every request (200, `{}`) until `refuse` is set, then
    answers 401 to each; it keeps the Authorization headers it was sent (the token reached it: it
    is used, and still shown nowhere else)."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.refuse = False
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                api.authorizations.append(self.headers.get("Authorization") or "")
                body = b'{"error": "invalid token"}' if api.refuse else b"{}"
                self.send_response(401 if api.refuse else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- what the receivers got


def mail_kind(msg: EmailMessage) -> str:
    """opened | reminder | resolved, from the subject (`[mapsync] still open: …`, `resolved: …`)."""
    subject = str(msg["Subject"])
    return "reminder" if "still open: " in subject else "resolved" if "resolved: " in subject else "opened"


def mail_text(msg: EmailMessage) -> str:
    """The whole message as sent (headers and every part)."""
    return msg.as_string()


def mails(messages: list[EmailMessage], monitor: str | None = None) -> list[tuple[str, str]]:
    """(kind, subject) of each message, in arrival order (those of `monitor` only, if given)."""
    out = [(mail_kind(m), str(m["Subject"])) for m in list(messages)]
    return [(k, s) for k, s in out if monitor is None or f" {monitor} on " in s]


def hooks(requests: list[Request], monitor: str | None = None) -> list[dict[str, Any]]:
    """The JSON bodies received, in arrival order (those of `monitor` only, if given)."""
    bodies = [r.json() for r in list(requests)]
    return [b for b in bodies if monitor is None or b.get("monitor") == monitor]


def signed_by(request: Request, secret: str, max_age: float = 300.0) -> bool:
    """Whether the body carries a valid `X-Mapsync-Signature` under `secret` (recomputed here, as a
    receiver would: HMAC-SHA256 of `<t>.<raw body>`, constant-time compare, a recent `t`)."""
    header = {k.lower(): v for k, v in request.headers.items()}.get("x-mapsync-signature", "")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < max_age


def until(
    check: Callable[[], Any], timeout: float, what: str, detail: Callable[[], str] = lambda: ""
) -> None:
    """Wait for `check()` to be truthy (every 50 ms), else fail saying what was awaited."""
    assert h.wait_for(lambda: bool(check()), timeout=timeout), (
        f"timed out after {timeout}s: {what}\n{detail()}"
    )
