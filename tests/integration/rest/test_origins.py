"""Credentials go to the configured origin only (issue 9, items 2, 6 and 20).

- A next page (cursor URL in the body, `Link` header) on another scheme, host or port stops the
  run, unless the sheet names the host in `paging.allow_hosts`: then it is fetched without the
  connection's credentials and headers.
- Any 3xx, on a write or a read, is a failure naming the `Location`; nothing is followed and
  nothing is recorded as written.
- A certificate that fails verification says why, naming the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync import errors
from mapsync.engine import Engine
from mapsync.rest import origins
from mapsync.rest.connector import open_handle
from mapsync.rest.source import RestSource
from mapsync.sheet import loader, models
from mapsync.sheet.connection_models import RestConnection
from mapsync.state.store import StateStore
from mapsync.testing.fault_server import Fault, FaultServer, Reply, Request, paged
from tests import helpers as h

TOKEN = "t0k3n-of-the-api"
ROWS = [{"id": i, "name": f"item {i}"} for i in range(7)]
SYNC = models.SyncConfig.model_validate(
    {
        "from": {"connection": "api", "resource": "items"},
        "to": {"connection": "db", "table": "items"},
        "key": {"from": "id", "to": "id"},
        "fields": {"name": "name"},
        "changes": {"method": "full"},
    }
)


@pytest.fixture
def servers() -> Iterator[Callable[..., FaultServer]]:
    started: list[FaultServer] = []

    def start(app: Callable[[Request], Reply], **kw: Any) -> FaultServer:
        server = FaultServer(app, **kw).__enter__()
        started.append(server)
        return server

    yield start
    for s in started:
        s.__exit__(None, None, None)


def source(url: str, style: str, **paging: Any) -> RestSource:
    cfg = RestConnection.model_validate(
        {
            "kind": "rest",
            "base_url": url,
            "auth": {"type": "bearer", "token": TOKEN},
            "headers": {"X-Tenant": "tenant-secret-42"},
            "retry": {"attempts": 1},
            "paging": {"style": style, "size": 3, "items": "data", "size_param": None, **paging},
        }
    )
    return RestSource(open_handle("api", cfg), "items", SYNC, None)


def read(src: RestSource) -> list[Any]:
    return [r["id"] for batch in src.stream(["id"], [], None, 100) for r in batch]


@pytest.mark.parametrize("style", ["cursor", "link"])
def test_a_next_page_on_another_origin_is_refused(servers: Callable[..., FaultServer], style: str) -> None:
    other = servers(paged(ROWS, 3, style=style))
    api = servers(paged(ROWS, 3, next_origin=other.url, style=style))
    with pytest.raises(errors.PermanentError) as info:
        read(source(api.url, style))
    text = str(info.value)
    assert f"to {other.url}, another origin than `base_url` ({api.url})" in text
    assert "paging.allow_hosts" in text and info.value.failure_class == "source"
    assert other.log == []  # the token never left for the other origin
    assert api.log[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("style", ["cursor", "link"])
def test_an_allowed_host_is_followed_without_credentials(
    servers: Callable[..., FaultServer], style: str
) -> None:
    other = servers(paged(ROWS, 3, style=style))
    api = servers(paged(ROWS, 3, next_origin=other.url, style=style))
    port = other.url.rsplit(":", 1)[1]
    assert read(source(api.url, style, allow_hosts=[f"127.0.0.1:{port}"])) == list(range(7))
    assert len(other.log) == 2
    for req in other.log:
        assert "authorization" not in req.headers and "x-tenant" not in req.headers
    assert api.log[0].headers["x-tenant"] == "tenant-secret-42"


def test_origin_compares_scheme_host_and_port() -> None:
    base = "https://api.example.com/v1/"
    assert not origins.foreign("https://API.example.com:443/v1/items?p=2", base, [], "w")
    for url in (
        "http://api.example.com/v1/items?p=2",  # a downgrade to plain HTTP
        "https://api.example.com:8443/v1/items",
        "https://evil.example.net/v1/items",
        "https://api.example.com.evil.net/v1/items",
        "https://api.example.com@evil.net/v1/items",
    ):
        with pytest.raises(errors.PermanentError, match="another origin"):
            origins.foreign(url, base, [], "w")
    assert origins.foreign("https://cdn.example.com/p2", base, ["cdn.example.com"], "w")
    with pytest.raises(errors.PermanentError):
        origins.foreign("ftp://cdn.example.com/p2", base, ["cdn.example.com"], "w")


def test_a_redirect_on_a_read_stops_with_its_location(servers: Callable[..., FaultServer]) -> None:
    target = servers(paged(ROWS, 3))
    api = servers(paged(ROWS, 3))
    api.script = [Fault.redirect(f"{target.url}/items", 301)]
    with pytest.raises(errors.PermanentError) as info:
        read(source(api.url, "cursor"))
    assert f"redirects (HTTP 301) to {target.url}/items" in str(info.value)
    assert info.value.failure_class == "source" and target.log == []


SHEET = """
version: 1
state: {{url: "{state}"}}
connections:
  db: {{url: "{src}"}}
  api:
    kind: rest
    base_url: "{url}"
    auth: {{type: bearer, token: "${{API_TOKEN}}"}}
    retry: {{attempts: 1}}
syncs:
  things:
    from: {{connection: db, table: things}}
    to: {{connection: api, resource: things}}
    key: {{from: id, to: code}}
    fields: {{name: name}}
    changes: {{method: full}}
"""


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_redirect_on_a_write_is_a_failure_and_nothing_is_recorded(
    servers: Callable[..., FaultServer], sqlite_database: Callable[[], str], tmp_path: Path, code: int
) -> None:
    target = servers(lambda req: Reply(200, {}))
    api = servers(lambda req: Reply(200, {}))
    api.script = [Fault.redirect(target.url.replace("http:", "https:") + "/things", code) for _ in range(9)]
    src = sqlite_database()
    h.execute(src, "CREATE TABLE things (id VARCHAR(10) PRIMARY KEY, name VARCHAR(20))")
    h.execute(src, "INSERT INTO things VALUES ('t1', 'one'), ('t2', 'two'), ('t3', 'three')")
    state = f"sqlite:///{tmp_path / 'state.db'}"
    (tmp_path / "sheet.yaml").write_text(SHEET.format(state=state, src=src, url=api.url))
    loaded = loader.load(tmp_path / "sheet.yaml", env={"API_TOKEN": TOKEN})
    store = StateStore.open(state, tmp_path, create=True)
    engine = Engine(loaded, store)
    try:
        report = engine.run("things", "seed")
    finally:
        engine.close()
        store.close()
    assert report.status == "failed" and report.counts.written == 0
    assert f"redirects (HTTP {code}) to https://127.0.0.1:" in (report.message or "")
    assert "never follows a redirect" in (report.message or "")
    assert h.query(state, "SELECT COUNT(*) FROM mapsync_ledger")[0][0] == 0  # re-sent next time
    assert target.log == []


def test_a_certificate_failure_says_why(servers: Callable[..., FaultServer]) -> None:
    api = servers(paged(ROWS, 3), tls=True)
    assert api.url.startswith("https://")
    with pytest.raises(errors.TransientError) as info:
        read(source(api.url, "cursor"))
    text = str(info.value)
    assert "cannot connect: TLS certificate verify failed: self-signed certificate (host 127.0.0.1)" in text
