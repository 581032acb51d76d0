"""Client faults against a fault-injecting HTTP server (mapsync/testing/fault_server.py), through the
CIMcloud connector's client and destination: 5xx bursts, 429 with Retry-After (seconds and HTTP
date: no request before it), apply-then-timeout (no duplicate effect, no record error),
malformed 200 bodies, token expiry mid-run, 4xx messages redacted and capped."""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mapsync import errors, records
from mapsync.cimcloud.connector import CimcloudDestination, open_handle
from mapsync.rest.client import redact, retry_after
from mapsync.sheet import models
from mapsync.sheet.connection_models import CimcloudConnection
from mapsync.testing.fault_server import Fault, FaultServer, Reply, Request

PASSWORD = "s3cret-password"


class MiniCim:
    """Just enough CIMcloud: authenticate, upsert by ref_id, read all accounts back."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.accounts: dict[str, dict[str, str]] = {}
        self.applied = 0  # records applied, duplicates included

    def __call__(self, req: Request) -> Reply:
        path = req.path.split("/", 2)[2]  # after /site/
        if path == "authenticate":
            token = f"tok{len(self.tokens) + 1}"
            self.tokens.add(token)
            return Reply(200, {"token": token, "expiration": "2099-01-01T00:00:00Z"})
        if req.headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return Reply(401, {"message": "Authorization has been denied for this request."})
        if req.method == "POST":
            body = req.json()
            for rec in body:
                self.applied += 1
                self.accounts[rec["ref_id"]] = {**self.accounts.get(rec["ref_id"], {}), **rec}
            n = len(body)
            return Reply(
                200,
                {
                    "action": "DataImported",
                    "success": True,
                    "importedRecords": n,
                    "updatedRecords": 0,
                    "recordCountInRequest": n,
                    "message": None,
                },
            )
        return Reply(200, list(self.accounts.values()))


@pytest.fixture
def cim() -> Iterator[tuple[FaultServer, MiniCim]]:
    app = MiniCim()
    with FaultServer(app) as server:
        yield server, app


SYNC = models.SyncConfig.model_validate(
    {
        "from": {"connection": "erp", "table": "customers"},
        "to": {"connection": "cim", "resource": "account"},
        "key": {"from": "id", "to": "ref_id"},
        "fields": {"nm": "name"},
        "changes": {"method": "full"},
    }
)


def destination(server: FaultServer, **retry: Any) -> CimcloudDestination:
    cfg = CimcloudConnection.model_validate(
        {
            "kind": "cimcloud",
            "base_url": server.url,
            "site": "site",
            "auth": {"type": "token", "auth_key": "k", "username": "u", "password": PASSWORD},
            "budget": [],
            "timeout": "300ms",
            "retry": {"attempts": 4, "backoff": "20ms", **retry},
        }
    )
    return CimcloudDestination(open_handle("cim", cfg), "accounts", SYNC, (PASSWORD,))


def recs(n: int, name: str = "n") -> list[records.Mapped]:
    return [
        records.Mapped("upsert", (i,), (f"R{i}",), None, {"ref_id": f"R{i}", "nm": f"{name}{i}"}, hash=str(i))
        for i in range(n)
    ]


def posts(server: FaultServer) -> list[Request]:
    return server.requests("POST", "/site/account")


def test_a_burst_of_5xx_is_retried_with_growing_backoff(cim: tuple[FaultServer, MiniCim]) -> None:
    server, app = cim
    dest = destination(server)
    waits: list[float] = []
    dest.client.sleep = lambda s: (waits.append(s), time.sleep(s))[1]  # type: ignore[func-returns-value]
    server.script = [None, Fault.status(503), Fault.status(502), Fault.status(500)]  # token, then 3 faults
    result = dest.write(recs(3))
    assert len(result.delivered) == 3 and result.rejected == []
    assert len(posts(server)) == 4 and app.applied == 3
    assert len(waits) == 3
    assert waits[0] <= 0.02 and waits[2] > waits[0]  # exponential, with jitter in [½, 1]·delay
    assert all(0.01 <= w <= 0.08 for w in waits)


def test_endless_5xx_stops_the_run_not_the_records(cim: tuple[FaultServer, MiniCim]) -> None:
    server, app = cim
    dest = destination(server)
    server.script = [None] + [Fault.status(503)] * 4
    with pytest.raises(errors.TransientError, match="failed after 4 tries: HTTP 503") as caught:
        dest.write(recs(2))
    assert app.applied == 0 and caught.value.reason is None  # not a spent budget: no reason


def test_a_spent_call_budget_says_so(cim: tuple[FaultServer, MiniCim]) -> None:
    """HTTP 429 on every try, or a Retry-After longer than a run waits: reason `budget` (the
    `budget_exhausted` monitor reads it from the failed run)."""
    server, _ = cim
    dest = destination(server)
    dest.client.request("GET", "validate")  # the token first
    server.script = [Fault.status(429, {"Retry-After": "3600"})]
    with pytest.raises(errors.TransientError, match="asks to wait 3600s") as long_wait:
        dest.write(recs(1))
    assert long_wait.value.reason == errors.REASON_BUDGET
    dest.client.sleep = lambda s: None
    server.script = [Fault.status(429)] * 4
    with pytest.raises(errors.TransientError, match="failed after 4 tries: HTTP 429") as spent:
        dest.write(recs(1))
    assert spent.value.reason == errors.REASON_BUDGET


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured(cim: tuple[FaultServer, MiniCim], form: str) -> None:
    server, app = cim
    dest = destination(server)
    dest.client.request("GET", "validate")  # the token first
    if form == "seconds":
        header, earliest = "1", time.time() + 1
    else:
        earliest = float(int(time.time()) + 2)  # an HTTP date has whole seconds
        header = email.utils.formatdate(earliest, usegmt=True)
    server.script = [Fault.status(429, {"Retry-After": header})]
    result = dest.write(recs(1))
    assert len(result.delivered) == 1
    first, second = posts(server)
    assert second.t >= earliest - 0.01  # no request went out before Retry-After
    assert second.t - first.t >= (0.95 if form == "seconds" else 1.0)
    assert app.applied == 1


def test_retry_after_parsing() -> None:
    now = time.time()
    assert retry_after("3") == 3.0
    assert retry_after(None) is None and retry_after("soon") is None
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (retry_after(later, now) or 0) <= 30
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0


def test_apply_then_timeout_is_retried_without_a_duplicate_or_an_error(
    cim: tuple[FaultServer, MiniCim],
) -> None:
    server, app = cim
    dest = destination(server)
    server.script = [None, Fault.apply_then_hang(0.6)]
    result = dest.write(recs(5, "v"))
    assert len(result.delivered) == 5 and result.rejected == []
    assert len(posts(server)) == 2  # the ambiguous call and its retry
    assert len(app.accounts) == 5  # an upsert by user key: the re-send changed nothing
    assert {a["nm"] for a in app.accounts.values()} == {f"v{i}" for i in range(5)}


def test_ambiguous_outcomes_that_never_clear_stop_the_run(cim: tuple[FaultServer, MiniCim]) -> None:
    server, _ = cim
    dest = destination(server)
    server.script = [None] + [Fault.apply_then_hang(0.5)] * 4
    with pytest.raises(errors.TransientError, match="ambiguous"):
        dest.write(recs(2))


def test_a_malformed_200_is_read_back(cim: tuple[FaultServer, MiniCim]) -> None:
    server, _app = cim
    dest = destination(server)
    server.script = [None, Fault.malformed()]
    result = dest.write(recs(3))
    assert len(result.delivered) == 3 and result.rejected == []
    assert dest.readbacks == 1 and len(server.requests("GET", "/site/accounts/")) == 1


def test_a_malformed_200_that_applied_nothing_is_a_record_error(cim: tuple[FaultServer, MiniCim]) -> None:
    server, _app = cim
    dest = destination(server)
    bad = Fault.status(200, body="not an answer")
    server.script = [None, bad]
    result = dest.write(recs(2))
    assert result.delivered == [] and len(result.rejected) == 2
    assert "not found when read back" in result.rejected[0].message


def test_token_expiry_mid_run(cim: tuple[FaultServer, MiniCim]) -> None:
    server, app = cim
    dest = destination(server)
    assert len(dest.write(recs(10)[:5]).delivered) == 5
    server.script = [Fault.before(app.tokens.clear)]  # the server forgets the token
    assert len(dest.write(recs(10)[5:]).delivered) == 5
    assert len(server.requests("POST", "/site/authenticate")) == 2
    statuses = [r.path for r in server.log]
    assert statuses.count("/site/account") == 3  # the refused call was sent again once


def test_a_4xx_is_a_record_error_with_the_message_redacted_and_capped(
    cim: tuple[FaultServer, MiniCim],
) -> None:
    server, _app = cim
    dest = destination(server)
    long = f"field nm is invalid for password {PASSWORD} " + "x" * 1000
    server.script = [None, Fault.status(400, body={"success": False, "message": long})]
    result = dest.write(recs(1))
    assert result.delivered == [] and len(result.rejected) == 1
    message = result.rejected[0].message
    assert "field nm is invalid" in message and PASSWORD not in message and "***" in message
    assert len(message) < 800


def test_access_refused_stops_the_run(cim: tuple[FaultServer, MiniCim]) -> None:
    server, _ = cim
    dest = destination(server)
    server.script = [Fault.status(401, body={"message": "bad credentials"})]
    with pytest.raises(errors.PermanentError, match="POST authenticate: access refused") as caught:
        dest.write(recs(1))
    assert caught.value.reason == errors.REASON_AUTH  # the `auth_refused` monitor reads it


def test_redact() -> None:
    assert redact("a secret here", ("secret",)) == "a *** here"
    assert len(redact("y" * 1000, ())) == 300


def test_token_renewal_is_scheduled_by_expiry() -> None:
    from mapsync.rest.auth import _expiry

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert _expiry("2026-01-08T00:00:00Z", now, dt.timedelta(hours=1)) == dt.datetime(
        2026, 1, 8, tzinfo=dt.UTC
    )
    assert _expiry(60, now, dt.timedelta(hours=1)) == now + dt.timedelta(seconds=60)
    assert _expiry(None, now, dt.timedelta(hours=1)) == now + dt.timedelta(hours=1)


# --------------------------------------------------------------------------- the transport seam


def test_a_mounted_transport_serves_its_origin_and_a_given_one_wins() -> None:
    import httpx

    from mapsync.rest import client as rest_client
    from mapsync.rest import transports
    from mapsync.sheet.connection_models import RetryPolicy

    seen: list[str] = []

    def answer(tag: str) -> httpx.MockTransport:
        return httpx.MockTransport(
            lambda req: (seen.append(f"{tag} {req.url}"), httpx.Response(200, json=tag))[1]
        )

    def made(base: str, transport: httpx.BaseTransport | None = None) -> rest_client.HttpClient:
        policy = RetryPolicy(attempts=1)
        return rest_client.HttpClient(
            "t", base, timeout=dt.timedelta(seconds=1), retry=policy, transport=transport
        )

    assert "http://api.invalid" not in transports.TRANSPORTS  # not mounted: the real network
    transports.mount("http://api.invalid/", answer("mounted"))
    try:
        mounted, given = made("http://api.invalid/v1"), made("http://api.invalid/v1", answer("given"))
        assert mounted.request("GET", "x").json() == "mounted"
        assert given.request("GET", "x").json() == "given"
        assert seen == ["mounted http://api.invalid/v1/x", "given http://api.invalid/v1/x"]
        mounted.close()
        given.close()
    finally:
        transports.unmount("http://api.invalid")
    assert "http://api.invalid" not in transports.TRANSPORTS
