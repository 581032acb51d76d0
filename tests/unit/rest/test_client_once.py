"""`HttpClient.request(once=True)`, the destructive GET's send (CIMcloud's OnlineOrders marks what
it returns as exported): a lost answer, a timeout after the request left or a 5xx is never sent
again; only what the server says it did not run (cannot connect, 429, 401 with a renewable token)
is. Without `once` the retries stay as they were. The server is an httpx.MockTransport that
scripts one answer per request and counts them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest

from mapsync import errors
from mapsync.rest.auth import TokenAuth
from mapsync.rest.client import HttpClient
from mapsync.sheet.connection_models import RetryPolicy

Step = Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers `OnlineOrders` from a list of steps (the last one repeats), `authenticate` with a
    new token each time; records every request."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.sent: list[httpx.Request] = []
        self.tokens = 0

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/authenticate"):
            self.tokens += 1
            return httpx.Response(200, json={"token": f"tok{self.tokens}", "expiration": 3600})
        self.sent.append(req)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return step(req)

    def orders(self) -> int:
        return len(self.sent)


def status(code: int, headers: dict[str, str] | None = None) -> Step:
    return lambda req: httpx.Response(code, headers=headers, json={"message": f"status {code}"})


def ok(req: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[{"c_ordnum": "W1"}])


def read_timeout(req: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=req)


def connect_error(req: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=req)


def client(
    script: Script, *, attempts: int = 4, auth: TokenAuth | None = None
) -> tuple[HttpClient, list[float]]:
    http = HttpClient(
        "cim",
        "http://cim.invalid/site",
        timeout=dt.timedelta(seconds=2),
        retry=RetryPolicy(attempts=attempts, backoff=dt.timedelta(milliseconds=10)),
        auth=auth,
        transport=httpx.MockTransport(script),
    )
    waits: list[float] = []
    http.sleep = waits.append
    return http, waits


@pytest.mark.parametrize("code", [500, 502, 503])
def test_a_5xx_is_sent_once_and_says_it_was_not_sent_again(code: int) -> None:
    script = Script(status(code), ok)
    http, waits = client(script)
    with pytest.raises(errors.TransientError, match="not sent again") as caught:
        http.request("GET", "OnlineOrders", once=True)
    assert script.orders() == 1 and http.calls == 1 and waits == []
    assert f"GET OnlineOrders: HTTP {code}" in str(caught.value)
    assert caught.value.reason is None


def test_a_timeout_after_the_request_left_is_not_sent_again() -> None:
    script = Script(read_timeout, ok)
    http, waits = client(script)
    with pytest.raises(errors.TransientError, match=r"ambiguous.*not sent again") as caught:
        http.request("GET", "OnlineOrders", once=True)
    assert "ReadTimeout" in str(caught.value)
    assert script.orders() == 1 and waits == []


def test_a_connect_error_is_retried_up_to_the_policy() -> None:
    script = Script(connect_error, connect_error, ok)
    http, waits = client(script)
    assert http.request("GET", "OnlineOrders", once=True).json() == [{"c_ordnum": "W1"}]
    assert script.orders() == 3 and len(waits) == 2  # it never reached the server: no repeat

    never = Script(connect_error)
    http, waits = client(never, attempts=3)
    with pytest.raises(errors.TransientError, match="cannot connect: ConnectError"):
        http.request("GET", "OnlineOrders", once=True)
    assert never.orders() == 3 and len(waits) == 2  # the policy's attempts, no more


def test_429_with_retry_after_is_waited_for_and_sent_again() -> None:
    script = Script(status(429, {"Retry-After": "7"}), ok)
    http, waits = client(script)
    assert http.request("GET", "OnlineOrders", once=True).status_code == 200
    assert script.orders() == 2 and waits == [7.0]  # the server's wait, not the backoff

    spent = Script(status(429, {"Retry-After": "1"}))
    http, waits = client(spent, attempts=3)
    with pytest.raises(errors.TransientError, match=r"HTTP 429.*not sent again") as caught:
        http.request("GET", "OnlineOrders", once=True)
    assert spent.orders() == 3 and waits == [1.0, 1.0]
    assert caught.value.reason == errors.REASON_BUDGET


def test_a_429_then_a_5xx_is_not_sent_a_third_time() -> None:
    script = Script(status(429, {"Retry-After": "0"}), status(503), ok)
    http, _ = client(script)
    with pytest.raises(errors.TransientError, match=r"HTTP 503.*not sent again"):
        http.request("GET", "OnlineOrders", once=True)
    assert script.orders() == 2


def test_401_renews_the_token_and_sends_again_once() -> None:
    script = Script(status(401), ok)
    auth = TokenAuth("authenticate", {"auth_key": "k"})
    http, _ = client(script, auth=auth)
    assert http.request("GET", "OnlineOrders", once=True).status_code == 200
    assert script.orders() == 2 and auth.fetched == 2
    assert [r.headers["Authorization"] for r in script.sent] == ["Bearer tok1", "Bearer tok2"]

    refused = Script(status(401))
    auth = TokenAuth("authenticate", {"auth_key": "k"})
    http, _ = client(refused, auth=auth)
    with pytest.raises(errors.PermanentError, match="access refused") as caught:
        http.request("GET", "OnlineOrders", once=True)
    assert refused.orders() == 2 and caught.value.reason == errors.REASON_AUTH


def test_a_401_then_a_5xx_is_not_sent_a_third_time() -> None:
    script = Script(status(401), status(500), ok)
    http, _ = client(script, auth=TokenAuth("authenticate", {"auth_key": "k"}))
    with pytest.raises(errors.TransientError, match=r"HTTP 500.*not sent again"):
        http.request("GET", "OnlineOrders", once=True)
    assert script.orders() == 2


def test_without_once_5xx_and_timeouts_are_retried_as_before() -> None:
    script = Script(status(503), read_timeout, status(500), ok)
    http, waits = client(script)
    assert http.request("GET", "OnlineOrders").status_code == 200
    assert script.orders() == 4 and len(waits) == 3
    assert waits[2] > waits[0]  # the backoff grows

    endless = Script(status(502))
    http, _ = client(endless, attempts=3)
    with pytest.raises(errors.TransientError, match="failed after 3 tries: HTTP 502") as caught:
        http.request("GET", "OnlineOrders")
    assert endless.orders() == 3 and "not sent again" not in str(caught.value)


def test_a_4xx_comes_back_to_the_caller_once() -> None:
    script = Script(status(404))
    http, _ = client(script)
    assert http.request("GET", "OnlineOrders", once=True).status_code == 404
    assert script.orders() == 1
