"""Real alert receivers on loopback, for the alert tests (tests/*/alerts).

- `tls_ca`: a throwaway CA (trustme) whose PEM is written to a file (`ca_file` in a sheet).
- `smtp_server(tls=..., auth=..., ca=...)`: an aiosmtpd server on 127.0.0.1, port 0: `starttls`
  (STARTTLS offered and required), `ssl` (TLS from the first byte) or `none` (plain); AUTH
  PLAIN/LOGIN with `auth=(user, password)`; its certificate signed by `ca` (default `tls_ca`; another
  CA's certificate is one the client does not trust). Collects the messages it accepts and the
  logins it refused.
- `webhook_receiver(tls=False)`: a threaded HTTP(S) server on 127.0.0.1, port 0, recording each
  request (path, headers, body); `answer(status, n)` makes the next `n` requests get `status`,
  `stall(seconds, n)` makes them wait that long before answering (a timeout).
- `alerts_sheet(folder, alerts, state=...)`: a sheet with one tiny sync and this `alerts:` block
  (JSON is YAML); `load(path, env)` loads it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import http.server
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from mapsync.alerts.routing import channels_for
from mapsync.sheet import loader
from mapsync.state import schema
from mapsync.state.clock import stamp, unstamp, utcnow
from mapsync.state.data import Finding, Incident
from mapsync.state.ports import Store
from mapsync.state.store import StateStore

# --------------------------------------------------------------------------- TLS


@dataclasses.dataclass
class CA:
    ca: trustme.CA
    pem: Path  # the CA certificate: what a sheet's `ca_file` names

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        return ctx


def make_ca(folder: Path, name: str) -> CA:
    ca = trustme.CA()
    pem = folder / f"{name}.pem"
    ca.cert_pem.write_to_path(str(pem))
    return CA(ca, pem)


@pytest.fixture
def tls_ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path, "ca")


# --------------------------------------------------------------------------- SMTP


class _Controller(Controller):
    """aiosmtpd's controller on port 0: the port is read back from the bound socket."""

    def _trigger_server(self) -> None:
        server: Any = self.server
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclasses.dataclass
class SmtpServer:
    host: str
    port: int
    tls: str
    ca_file: Path
    messages: list[EmailMessage] = dataclasses.field(default_factory=list)
    refused_logins: list[str] = dataclasses.field(default_factory=list)

    def channel(self, **extra: Any) -> dict[str, Any]:
        """An `email:` channel for this server (`ca_file` its CA's PEM)."""
        return {
            "email": {
                "host": self.host,
                "port": self.port,
                "tls": self.tls,
                "ca_file": str(self.ca_file),
                "from": "mapsync@example.test",
                "to": ["ops@example.test"],
                "timeout": "5s",
                **extra,
            }
        }


class _Handler:
    def __init__(self, box: SmtpServer) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.box.messages.append(msg)
        return "250 OK"


@pytest.fixture
def smtp_server(tls_ca: CA) -> Iterator[Callable[..., SmtpServer]]:
    started: list[Controller] = []

    def make(tls: str = "starttls", auth: tuple[str, str] | None = None, ca: CA | None = None) -> SmtpServer:
        signer = ca or tls_ca
        box = SmtpServer("127.0.0.1", 0, tls, tls_ca.pem)

        def check(
            server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                auth is not None
                and isinstance(data, LoginPassword)
                and (data.login.decode(), data.password.decode()) == auth
            )
            if not ok:
                box.refused_logins.append(mechanism)
            return AuthResult(success=ok, handled=False)

        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": 0, "ready_timeout": 5.0}
        if auth is not None:
            kwargs.update(
                authenticator=check, auth_require_tls=tls != "none", auth_exclude_mechanism=["LOGIN"]
            )
        if tls == "starttls":
            kwargs.update(tls_context=signer.server_context(), require_starttls=True)
        elif tls == "ssl":
            kwargs.update(ssl_context=signer.server_context())
        controller = _Controller(_Handler(box), **kwargs)
        controller.start()
        started.append(controller)
        box.port = controller.port
        return box

    yield make
    for controller in started:
        controller.stop()


# --------------------------------------------------------------------------- webhook


@dataclasses.dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, ca: CA | None) -> None:
        self.requests: list[Request] = []
        self._answers: list[int] = []
        self._stalls: list[float] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(Request(self.path, dict(self.headers.items()), data))
                    status = receiver._answers.pop(0) if receiver._answers else 200
                    stall = receiver._stalls.pop(0) if receiver._stalls else 0.0
                if stall:
                    time.sleep(stall)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if ca is not None:
            self.server.socket = ca.server_context().wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if ca is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def answer(self, status: int, n: int = 1) -> None:
        with self._lock:
            self._answers.extend([status] * n)

    def stall(self, seconds: float, n: int = 1) -> None:
        with self._lock:
            self._stalls.extend([seconds] * n)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver(tls_ca: CA) -> Iterator[Callable[..., WebhookReceiver]]:
    made: list[WebhookReceiver] = []

    def make(tls: bool = False) -> WebhookReceiver:
        receiver = WebhookReceiver(tls_ca if tls else None)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


# --------------------------------------------------------------------------- sheets

SHEET = """version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  shop: {{url: "sqlite:///shop.db"}}
state: {{url: {state}}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: shop, table: items}}
    key: {{from: id, to: id}}
    changes: {{method: full}}
    fields: {{name: name}}
alerts: {alerts}
"""


def alerts_sheet(folder: Path, alerts: dict[str, Any] | None, state: str = "sqlite:///state.db") -> Path:
    """A sheet file in `folder` with one sync and this `alerts:` block (None: none)."""
    path = folder / "sheet.yaml"
    path.write_text(SHEET.format(state=json.dumps(state), alerts=json.dumps(alerts)))
    return path


def load(path: Path, env: dict[str, str] | None = None) -> loader.LoadedSheet:
    return loader.load(path, env or {})


# --------------------------------------------------------------------------- incidents

FAILED = Finding(
    monitor="failed_run",
    sync="items",
    severity="critical",
    failure_class="destination",
    message="the last 3 runs of items failed: destination refused the connection",
    numbers={"failures": 3},
    runbook="look at `mapsync runs SHEET --sync items`; is the shop database up?",
)


def open_store(loaded: loader.LoadedSheet) -> StateStore:
    return StateStore.open(loaded.sheet.state.url, loaded.folder, create=True)


def raise_finding(loaded: loader.LoadedSheet, store: Store, finding: Finding = FAILED) -> Incident:
    """Open (or refresh) the finding's incident, routed as the sheet says."""
    incident, _ = store.incidents.raise_incident(finding, channels_for(finding, loaded.sheet.alerts))
    return incident


def make_due(store: StateStore) -> None:
    """Every pending notice due now (a retry's wait passed)."""
    n = schema.notifications
    with store.engine.begin() as conn:
        conn.execute(sa.update(n).where(n.c.status == "pending").values(next_at=stamp(utcnow())))


def age_notices(store: StateStore, by: dt.timedelta) -> None:
    """Every notice queued `by` earlier (for `give_up_after`)."""
    n = schema.notifications
    with store.engine.begin() as conn:
        for row in conn.execute(sa.select(n.c.id, n.c.created_at)).mappings().all():
            created = stamp(unstamp(row["created_at"]) - by)
            conn.execute(sa.update(n).where(n.c.id == row["id"]).values(created_at=created))


def age_incidents(store: StateStore, by: dt.timedelta) -> None:
    """Every incident opened (and last reminded) `by` earlier: a reminder falls due."""
    t = schema.incidents
    with store.engine.begin() as conn:
        for row in conn.execute(sa.select(t.c.id, t.c.opened_at, t.c.reminded_at)).mappings().all():
            values = {"opened_at": stamp(unstamp(row["opened_at"]) - by)}
            if row["reminded_at"] is not None:
                values["reminded_at"] = stamp(unstamp(row["reminded_at"]) - by)
            conn.execute(sa.update(t).where(t.c.id == row["id"]).values(**values))
