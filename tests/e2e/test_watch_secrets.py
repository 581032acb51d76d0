"""The canary over everything watching adds (issue 15): with DEBUG logging and every connection
failing in its own way — a destination database refusing the password, an API refusing the token,
an SMTP server refusing the login, a webhook answering 500 — no secret (database passwords, the
API token, SMTP passwords, webhook URLs and the tokens in them, the HMAC secret) shows in the
daemon's log (stderr and `--log-file`), the e-mails and webhook bodies sent, `/metrics`,
`mapsync monitor --json`, `mapsync alerts`, `mapsync trace`, `status`, `errors`, or any row of any
table of the state store."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync.testing.canary import Canary
from tests import helpers as h
from tests import watch_world as ww
from tests.alert_world import (  # noqa: F401  (fixtures)
    SmtpServer,
    WebhookReceiver,
    smtp_server,
    tls_ca,
    webhook_receiver,
)

SECRETS = {
    "SRC_PASSWORD": "Src-pa55-w0rd-19bc",  # PostgreSQL trusts loopback: sent, and ignored
    "DST_PASSWORD": "Dst-pa55-w0rd-7f3a",  # MariaDB refuses it
    "API_TOKEN": "tok-Api-5ecret-8e21",  # the API answers 401
    "SMTP_PASSWORD": "Smtp-pa55-bad-c0ffee",  # the first SMTP server refuses it
    "SMTP_OK_PASSWORD": "Smtp-pa55-ok-d00d",  # the second one takes it
    "HOOK_SECRET": "Hmac-5ecret-77aa",
}
BAD_TOKEN, OK_TOKEN = "Bad-T0ken-5150", "Ok-T0ken-6160"  # in the webhook URLs' paths

SHEET = """
version: 1
state: {{url: "{state}", lease_ttl: 3s}}
connections:
  src: {{url: "postgresql://postgres:${{SRC_PASSWORD}}@{src_host}/{src_db}"}}
  dst: {{url: "mysql://{user}:${{DST_PASSWORD}}@{dst_host}/{dst_db}"}}
  api:
    kind: rest
    base_url: "{api}"
    auth: {{type: bearer, token: "${{API_TOKEN}}"}}
syncs:
  orders:
    from: {{connection: src, table: orders}}
    to: {{connection: dst, table: orders}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
    schedule: {{every: 1s}}
  items:
    from: {{connection: src, table: orders}}
    to: {{connection: api, resource: items}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
    schedule: {{every: 1s}}
alerts:
  channels:
    refused_mail: {refused_mail}
    mail: {mail}
    broken_hook: {{webhook: {{url: "${{HOOK_BAD_URL}}", timeout: 3s}}}}
    hook: {{webhook: {{url: "${{HOOK_URL}}", format: json, secret: "${{HOOK_SECRET}}", timeout: 3s}}}}
"""


REAL_DST_PASSWORD = "the-real-one-4411"  # the seed's; the daemon is given DST_PASSWORD


@pytest.fixture
def mariadb_account(mariadb_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """A MariaDB database and a user of its own (whose password is not the sheet's)."""
    url = sa.make_url(mariadb_database())
    user = f"i15_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url.set(drivername="mysql+pymysql"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": REAL_DST_PASSWORD})
        conn.execute(sa.text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, name VARCHAR(50))"))
    try:
        yield user, url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.mariadb
def test_no_secret_in_anything_watching_shows(
    pg_database: Callable[[], str],
    mariadb_account: tuple[str, str],
    smtp_server: Callable[..., SmtpServer],  # noqa: F811
    webhook_receiver: Callable[..., WebhookReceiver],  # noqa: F811
    canary: Callable[..., Canary],
    tmp_path: Path,
) -> None:
    src, state = sa.make_url(pg_database()), pg_database()
    user, dst_text = mariadb_account
    dst = sa.make_url(dst_text)
    h.execute(
        src.render_as_string(hide_password=False), "CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT)"
    )
    h.execute(src.render_as_string(hide_password=False), "INSERT INTO orders VALUES (1, 'one'), (2, 'two')")
    api = ww.RefusingApi()
    refusing = smtp_server(tls="starttls", auth=("mapsync", "not-what-the-sheet-says"))
    taking = smtp_server(tls="starttls", auth=("mapsync", SECRETS["SMTP_OK_PASSWORD"]))
    broken, hook = webhook_receiver(), webhook_receiver()
    broken.answer(500, n=1000)
    env = {
        **SECRETS,
        "HOOK_BAD_URL": broken.url(f"/hooks/{BAD_TOKEN}"),
        "HOOK_URL": hook.url(f"/hooks/{OK_TOKEN}"),
    }
    (tmp_path / "sheet.yaml").write_text(
        SHEET.format(
            state=state,
            src_host=f"{src.host}:{src.port or 5432}",
            src_db=src.database,
            user=user,
            dst_host=f"{dst.host}:{dst.port or 3306}",
            dst_db=dst.database,
            api=api.url,
            refused_mail=json.dumps(refusing.channel(username="mapsync", password="${SMTP_PASSWORD}")),
            mail=json.dumps(taking.channel(username="mapsync", password="${SMTP_OK_PASSWORD}")),
        )
    )
    c = canary(
        *SECRETS.values(), REAL_DST_PASSWORD, env["HOOK_BAD_URL"], env["HOOK_URL"], BAD_TOKEN, OK_TOKEN
    )
    probe = canary(SECRETS["API_TOKEN"])  # the canary itself finds a planted secret
    assert probe.text("probe", f"Bearer {SECRETS['API_TOKEN']}")
    assert probe.text("probe", base64.b64encode(SECRETS["API_TOKEN"].encode()).decode())

    def cli(*args: str, **changed: str) -> Any:
        done = h.mapsync("--log-level", "debug", *args, cwd=tmp_path, env={**env, **changed})
        c.process(" ".join(args), done)
        return done

    seeded = cli("seed", "sheet.yaml", DST_PASSWORD=REAL_DST_PASSWORD)  # all well at first
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert api.authorizations and broken.requests == [] and hook.requests == []
    # then: new rows to deliver, the API refuses the token, the daemon has the wrong password
    h.execute(src.render_as_string(hide_password=False), "INSERT INTO orders VALUES (3, 'three')")
    api.refuse = True
    metrics_port = ww.free_port()
    try:
        with ww.daemons() as start:
            d = start(tmp_path, "d", env, ["--metrics", str(metrics_port)], level="debug", log_file=True)

            def detail() -> str:
                return (
                    f"mails {ww.mails(taking.messages)} refused {refusing.refused_logins}\n"
                    f"hooks {[(b['kind'], b['monitor'], b['sync']) for b in ww.hooks(hook.requests)]} "
                    f"broken {len(broken.requests)}\n{d.stderr()[-4000:]}"
                )

            def told() -> bool:
                about = {(b["monitor"], b["sync"]) for b in ww.hooks(hook.requests)}
                return (
                    {("auth_refused", "orders"), ("auth_refused", "items")} <= about
                    and len(ww.mails(taking.messages, "auth_refused")) >= 2
                    and len(broken.requests) >= 1
                    and len(refusing.refused_logins) >= 1
                )

            ww.until(told, 30, "both refusals told on the working channels, the broken ones tried", detail)
            # the monitors chore's first pass (5 s after the start) reads the sources and logs at DEBUG
            ww.until(
                lambda: '"level": "debug"' in d.stderr().replace('":"', '": "'), 20, "DEBUG lines", detail
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
                metrics = answer.read().decode()
            assert "mapsync_" in metrics
            c.text("/metrics", metrics)
            assert d.terminate() == 0
    finally:
        api.close()
    assert all(a == f"Bearer {SECRETS['API_TOKEN']}" for a in api.authorizations)
    assert refusing.messages == []
    c.text("daemon stderr", d.stderr())
    c.text("daemon --log-file", d.log_file())
    assert "alert_send_failed" in d.log_file() and "auth_refused" in d.log_file()
    assert '"level": "debug"' in d.stderr().replace('":"', '": "')  # it did log at DEBUG
    for msg in taking.messages:
        c.text(f"e-mail {msg['Subject']}", ww.mail_text(msg))
    for r in [*hook.requests, *broken.requests]:
        c.text(f"webhook body {r.path}", r.body.decode())
        c.text(f"webhook headers {r.path}", json.dumps(r.headers))
    assert all(ww.signed_by(r, SECRETS["HOOK_SECRET"]) for r in hook.requests)

    monitor = cli("monitor", "sheet.yaml", "--json")
    assert monitor.returncode == 1, monitor.stdout + monitor.stderr
    firing = json.loads(monitor.stdout)["syncs"]
    assert {
        i["subject"] for s in ("orders", "items") for i in firing[s] if i["monitor"] == "auth_refused"
    } == {
        "dst",
        "api",
    }, firing
    alerts = cli("alerts", "sheet.yaml", "--all", "--json")
    assert alerts.returncode == 0, alerts.stderr
    rows = json.loads(alerts.stdout)
    errors = [n["last_error"] for r in rows for n in r["channels"].values() if n["last_error"]]
    assert any("HTTP 500" in e for e in errors) and any("SMTP" in e or "auth" in e.lower() for e in errors), (
        rows
    )
    cli("alerts", "sheet.yaml")
    cli("status", "sheet.yaml")
    cli("status", "sheet.yaml", "--json")
    cli("errors", "sheet.yaml", "--all")
    cli("errors", "sheet.yaml", "--all", "--json")
    for sync in ("orders", "items"):  # a record the seed delivered; one the refusals held back
        traced = cli("trace", "sheet.yaml", "--sync", sync, "1", "--json")
        assert traced.returncode == 0, traced.stdout + traced.stderr
        assert json.loads(traced.stdout)
        cli("trace", "sheet.yaml", "--sync", sync, "3", "--show-payload")
    c.store(state)
    assert len(c.checked) > 20
    c.assert_clean()
