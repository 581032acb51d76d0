"""Secrets in every derived form stay out of every artifact (issue 9, item 4).

An API that echoes the request headers in its error body shows the base64 of the Basic
`user:password`; a percent-encoded or JSON-escaped password, or the pieces of one cut by a URL,
are secrets too. `mapsync.redact` masks them all; the canary (mapsync/testing/canary.py) greps CLI text,
`--json`, DEBUG logs and every state-store table for them.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapsync import redact
from mapsync.testing.canary import Canary
from mapsync.testing.fault_server import Fault, FaultServer, Reply, Request
from tests import helpers as h

PASSWORD = "pa@ss:w0rd/9#x%y"  # every character that splits a URL
USER = "svc-user"


def test_every_derived_form_is_masked() -> None:
    basic = redact.basic_credentials(USER, PASSWORD)
    secrets = (PASSWORD, basic)
    for form in (
        PASSWORD,
        base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        urllib.parse.quote(PASSWORD, safe=""),
        urllib.parse.quote_plus(PASSWORD),
        json.dumps(PASSWORD)[1:-1],
        "ss:w0rd/9#x%y@db.example.com",  # the tail a URL parser shows as the host
        "w0rd/9",  # … or as a path
    ):
        shown = redact.redact(f"error near <{form}> here", secrets)
        assert shown.startswith("error near <***") and shown.endswith("> here"), (form, shown)
    # a whole URL is a secret, its host and scheme are not: only the password is cut in pieces
    url = f"postgresql://app:{PASSWORD}@db.example.com:5432/erp"
    assert redact.redact("cannot reach db.example.com (postgresql)", (url,)) == (
        "cannot reach db.example.com (postgresql)"
    )
    assert redact.redact("host ss:w0rd/9#x%y@db.example.com", (url,)) == "host ***@db.example.com"
    api = "https://api.example.com/v1/"  # a `${VAR}` base URL without credentials
    assert (
        redact.redact("GET https://api.example.com/v2/x failed", (api,))
        == "GET https://api.example.com/v2/x failed"
    )
    assert redact.redact("x" * 50 + PASSWORD, (PASSWORD,), cap=20) == "x" * 19 + "…"


class Echo:
    """A REST destination that refuses every record and echoes the request headers back."""

    def __call__(self, req: Request) -> Reply:
        return Reply(400, {"error": "rejected", "request_headers": req.headers})


@pytest.fixture
def echo_server() -> Iterator[FaultServer]:
    with FaultServer(Echo()) as server:
        yield server


SHEET = """
version: 1
state: {{url: "{state}"}}
connections:
  db: {{url: "{src}"}}
  api:
    kind: rest
    base_url: "{url}"
    auth: {{type: basic, username: {user}, password: "${{API_PASSWORD}}"}}
    retry: {{attempts: 1}}
syncs:
  things:
    from: {{connection: db, table: things}}
    to: {{connection: api, resource: things}}
    key: {{from: id, to: code}}
    fields: {{name: name}}
    changes: {{method: full}}
"""


def test_basic_credentials_echoed_by_the_server_leak_nowhere(
    echo_server: FaultServer,
    sqlite_database: Callable[[], str],
    tmp_path: Path,
    canary: Callable[..., Canary],
) -> None:
    src = sqlite_database()
    h.execute(src, "CREATE TABLE things (id VARCHAR(10) PRIMARY KEY, name VARCHAR(20))")
    h.execute(src, "INSERT INTO things VALUES ('t1', 'one'), ('t2', 'two')")
    state = f"sqlite:///{tmp_path / 'state.db'}"
    sheet = SHEET.format(state=state, src=src, url=echo_server.url, user=USER)
    (tmp_path / "sheet.yaml").write_text(sheet)
    env = {"API_PASSWORD": PASSWORD}
    c = canary(PASSWORD, basic=[(USER, PASSWORD)])

    done = h.mapsync("--log-level", "debug", "seed", "sheet.yaml", "--json", cwd=tmp_path, env=env)
    (report,) = json.loads(done.stdout)
    assert report["counts"]["rejected"] == 2, done.stdout + done.stderr
    sent = echo_server.log[0].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    c.process("seed --json", done)
    text = h.mapsync(
        "--log-level", "debug", "--log-format", "json", "seed", "sheet.yaml", cwd=tmp_path, env=env
    )
    c.process("seed (text, JSON logs)", text)
    listed = h.mapsync("errors", "sheet.yaml", "--json", cwd=tmp_path, env=env)
    c.process("errors --json", listed)
    c.process("status", h.mapsync("status", "sheet.yaml", "--json", cwd=tmp_path, env=env))
    c.store(state)
    c.assert_clean()
    assert "request_headers" in listed.stdout and "***" in listed.stdout  # the message is kept, masked


def test_a_run_message_and_debug_logs_in_process_are_clean(
    sqlite_database: Callable[[], str], tmp_path: Path, canary: Callable[..., Canary]
) -> None:
    """A failure message (run summary, `mapsync_runs`) that quotes the request back, in process."""
    from mapsync.engine import Engine
    from mapsync.sheet import loader
    from mapsync.state.store import StateStore

    src = sqlite_database()
    h.execute(src, "CREATE TABLE things (id VARCHAR(10) PRIMARY KEY, name VARCHAR(20))")
    h.execute(src, "INSERT INTO things VALUES ('t1', 'one')")
    state = f"sqlite:///{tmp_path / 'state.db'}"

    def app(req: Request) -> Reply:
        return Reply(200, {})

    with FaultServer(app) as server:
        server.script = [Fault.echo_headers(403)]  # access refused: the run stops with the body
        (tmp_path / "sheet.yaml").write_text(SHEET.format(state=state, src=src, url=server.url, user=USER))
        c = canary(PASSWORD, basic=[(USER, PASSWORD)])
        loaded = loader.load(tmp_path / "sheet.yaml", env={"API_PASSWORD": PASSWORD})
        store = StateStore.open(state, tmp_path, create=True)
        engine = Engine(loaded, store)
        try:
            report = engine.run("things", "seed")
        finally:
            engine.close()
            store.close()
    assert report.status == "failed" and "request_headers" in (report.message or "")
    c.text("run summary", f"{report.message} {report.samples}")
    c.store(state)
    c.assert_clean()


def test_a_source_error_quoting_the_request_is_masked_by_the_client(canary: Callable[..., Canary]) -> None:
    """No sheet, no engine: the HTTP client alone knows what its auth headers carry."""
    from mapsync import errors
    from mapsync.rest.client import HttpClient, StaticAuth
    from mapsync.rest.connector import open_handle
    from mapsync.sheet.connection_models import RestConnection

    with FaultServer(lambda req: Reply(200, [])) as server:
        server.script = [Fault.echo_headers(400)]
        cfg = RestConnection.model_validate(
            {
                "kind": "rest",
                "base_url": server.url,
                "auth": {"type": "basic", "username": USER, "password": PASSWORD},
            }
        )
        handle = open_handle("api", cfg)
        bare = HttpClient(
            "bare", server.url, timeout=cfg.timeout, retry=cfg.retry, auth=StaticAuth.basic(USER, PASSWORD)
        )
        c = canary(PASSWORD, basic=[(USER, PASSWORD)])
        try:
            resp = handle.client.request("GET", "items")
            c.text("source error", handle.client.shown(resp.text))
            server.script = [Fault.echo_headers(403)]
            with pytest.raises(errors.PermanentError) as info:
                bare.request("GET", "items")
            c.text("access refused", str(info.value))
        finally:
            handle.close()
            bare.close()
    assert "***" in str(info.value)
    c.assert_clean()


_PASSWORDS = st.text(alphabet=st.sampled_from('abcXYZ019@:/#?%+ "\\é~=&'), min_size=3, max_size=24).filter(
    lambda s: len(s.strip()) >= 3
)


@given(
    secret=st.one_of(_PASSWORDS, _PASSWORDS.map(lambda p: f"mysql://app:{p}@db.example.com/erp")),
    user=st.sampled_from(["svc", "app user", "a@b"]),
)
def test_no_derived_form_survives_redaction(secret: str, user: str) -> None:
    """Whatever the secret, no form the canary knows survives `redact` (fragments of at least
    `MIN_LENGTH` characters; the canary looks for those of 5 and more)."""
    canary_ = Canary(secret, basic=[(user, secret)])
    secrets = (secret, redact.basic_credentials(user, secret))
    for form in canary_.forms:
        shown = redact.redact(f"error <{form}> end", secrets)
        assert not canary_.text("message", shown), (form, shown)
