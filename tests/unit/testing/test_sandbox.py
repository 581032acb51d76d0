"""Sandbox contract: the literal examples of CIMcloud's public docs pass as written
(/work/shared/reference/cimcloud-api-notes.md), plus the marked, switchable inferences."""

from __future__ import annotations

import base64
import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync.testing.sandbox_serve import Running
from tests.sandbox_fixtures import CREDENTIALS, site_url, token_client

ACCOUNT = {"ref_id": "00-TEST012", "nm": "Test Account", "status": "1"}
ANSWER = {
    "action": "DataImported",
    "success": True,
    "importedRecords": 1,
    "updatedRecords": 0,
    "recordCountInRequest": 1,
    "message": None,
}


def test_canary_needs_no_auth_and_the_rest_does(cimcloud_sandbox: Running) -> None:
    with httpx.Client(base_url=site_url(cimcloud_sandbox)) as c:
        assert c.get("healthcheck/canary").json() == {"status": "Running"}
        assert c.get("healthcheck").status_code == 401
        assert c.get("validate").status_code == 401
        bad = c.get("validate", headers={"Authorization": "Bearer nonsense"})
        assert bad.status_code == 401


def test_authenticate_gives_a_seven_day_token(cimcloud_sandbox: Running) -> None:
    with httpx.Client(base_url=site_url(cimcloud_sandbox)) as c:
        answer = c.post("authenticate", json=CREDENTIALS).json()
        assert set(answer) == {"expiration", "token"}
        expires = dt.datetime.fromisoformat(answer["expiration"].replace("Z", "+00:00"))
        left = expires - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=6, hours=23) < left <= dt.timedelta(days=7)
        headers = {"Authorization": f"Bearer {answer['token']}"}
        assert c.get("validate", headers=headers).status_code == 200
        health = c.get("healthcheck", headers=headers).json()
        assert set(health) == {
            "status",
            "productionDatabase",
            "apiVersionNumber",
            "databaeConnection",
            "usingStagingDB",
            "databaseConnectionError",
        }
        wrong = c.post("authenticate", json={**CREDENTIALS, "AuthPassword": "nope"})
        assert wrong.status_code == 401
        # no limit on how many tokens may be generated: a second one works beside the first
        second = c.post("authenticate", json=CREDENTIALS).json()["token"]
        assert second != answer["token"]
        assert c.get("validate", headers=headers).status_code == 200


def test_basic_auth(cimcloud_sandbox: Running) -> None:
    good = base64.b64encode(b"sandbox:sandbox-password").decode()
    bad = base64.b64encode(b"sandbox:wrong").decode()
    with httpx.Client(base_url=site_url(cimcloud_sandbox)) as c:
        assert c.get("validate", headers={"Authorization": f"Basic {good}"}).status_code == 200
        assert c.get("validate", headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_post_account_example_literally(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        resp = c.post("account/", json=ACCOUNT)
        assert resp.status_code == 200
        assert resp.json() == ANSWER
        # POST is an upsert: the same record again is an update
        again = c.post("account/", json={**ACCOUNT, "nm": "Renamed"}).json()
        assert (again["importedRecords"], again["updatedRecords"]) == (0, 1)
        (row,) = c.get("accounts/searchexact~ref_id~00-TEST012").json()
        assert row["nm"] == "Renamed"
        assert row["status"] == "1" and isinstance(row["status"], str)


def test_values_are_strings_and_blank_clears(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        c.post("account/", json={"ref_id": "A1", "nm": "x", "credit": 12.5, "status": 1})
        c.post("account/", json={"ref_id": "A1", "nm": ""})
        (row,) = c.get("accounts/searchexact~ref_id~A1").json()
        assert row["credit"] == "12.5" and row["status"] == "1"
        assert row["nm"] == ""


def test_put_updates_only(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        answer = c.put("account/", json={"ref_id": "NEW", "nm": "x"}).json()
        assert answer["importedRecords"] == 0 and answer["success"] is not True
        assert c.get("accounts/searchexact~ref_id~NEW").json() == []
        c.post("account/", json={"ref_id": "NEW", "nm": "x"})
        answer = c.put("account/", json={"ref_id": "NEW", "nm": "y"}).json()
        assert answer["updatedRecords"] == 1 and answer["success"] is True


def test_primary_key_wins_over_user_key(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        c.post("account/", json=[{"ref_id": "R1", "nm": "one"}, {"ref_id": "R2", "nm": "two"}])
        (r1,) = c.get("accounts/searchexact~ref_id~R1").json()
        c.post("account/", json={"key": r1["key"], "ref_id": "R1", "nm": "by key"})
        (row,) = c.get("accounts/searchexact~ref_id~R1").json()
        assert row["nm"] == "by key"


def test_pages_of_50_page_0_is_page_1(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        for start in range(0, 120, 10):
            batch = [{"ref_id": f"B{i:03d}", "nm": f"bob {i}"} for i in range(start, start + 10)]
            assert c.post("account/", json=batch).json()["success"] is True
        p0 = c.get("accounts/searchlike~nm~bob/0").json()
        p1 = c.get("accounts/searchlike~nm~bob/1").json()
        p2 = c.get("accounts/searchlike~nm~bob/2").json()
        p3 = c.get("accounts/searchlike~nm~bob/3").json()
        assert p0 == p1 and len(p1) == 50 and len(p2) == 50 and len(p3) == 20
        assert len({r["ref_id"] for r in p1 + p2 + p3}) == 120
        assert c.get("accounts/searchlike~nm~bob/").json() == p1  # empty page: the first 50


def test_the_documented_searchstring_example(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        c.post(
            "account/",
            json=[
                {"ref_id": "M1", "nm": "Acme Manufacturing"},
                {"ref_id": "M2", "nm": "Beta manufacturing"},
                {"ref_id": "X1", "nm": "Retail Shop"},
            ],
        )
        path = (
            "/accounts/searchlike~nm~manufacturing|and|(searchbetween~create_date~<<dateadd:days:-10>>"
            "~<<date>>|or|searchgreatherthanequal~last_modify_date~1/1/2021)"
        )
        rows = c.get(path.lstrip("/")).json()
        assert sorted(r["ref_id"] for r in rows) == ["M1", "M2"]
        old = c.get(
            "accounts/searchlike~nm~manufacturing|and|searchbetween~create_date~1/1/2020~1/1/2021"
        ).json()
        assert old == []
        either = c.get("accounts/searchexact~ref_id~M1|or|searchexact~ref_id~X1").json()
        assert sorted(r["ref_id"] for r in either) == ["M1", "X1"]


def test_incremental_read_on_last_modify_date(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        c.post("account/", json={"ref_id": "I1", "nm": "a"})
        time.sleep(0.05)
        (first,) = c.get("accounts/searchexact~ref_id~I1").json()
        mark = first["last_modify_date"]
        c.post("account/", json={"ref_id": "I2", "nm": "b"})
        rows = c.get(f"accounts/searchgreatherthanequal~last_modify_date~{mark}").json()
        assert sorted(r["ref_id"] for r in rows) == ["I1", "I2"]  # inclusive


def test_online_orders_get_sets_exported(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        c.post(
            "orders/", json=[{"c_ordnum": "W1001", "exported": "0"}, {"c_ordnum": "W1002", "exported": "0"}]
        )
        first = c.get("OnlineOrders").json()
        assert sorted(o["c_ordnum"] for o in first) == ["W1001", "W1002"]
        assert all("o_key" in o for o in first)
        assert c.get("OnlineOrders").json() == []  # the GET marked them exported
        # the documented way to fetch one again: POST the Orders resource with exported = 0
        c.post("orders/", json={"c_ordnum": "W1001", "exported": "0"})
        assert [o["c_ordnum"] for o in c.get("OnlineOrders").json()] == ["W1001"]


def test_nested_payloads_are_refused(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        resp = c.post("orders/", json={"c_ordnum": "N1", "details": [{"sku": "A", "quantity": "1"}]})
        assert resp.status_code == 400


@pytest.mark.parametrize("contract", ["none", "jobs"])
def test_more_than_ten_records_are_queued(cimcloud_sandbox_factory, contract: str) -> None:  # type: ignore[no-untyped-def]
    # the delay must outlast the POST → GET round trip on a loaded machine (0.2 s did not in CI)
    box = cimcloud_sandbox_factory(async_contract=contract, queue_delay=2.0)
    with token_client(box) as c:
        batch = [{"ref_id": f"Q{i}", "nm": "q"} for i in range(11)]
        answer = c.post("account/", json=batch).json()
        assert answer["action"] == "Queued" and answer["recordCountInRequest"] == 11
        assert ("jobId" in answer) == (contract == "jobs")
        assert c.get("accounts/searchlike~ref_id~Q").json() == []  # not applied yet
        deadline = time.time() + 15
        while len(c.get("accounts/searchlike~ref_id~Q").json()) < 11:
            assert time.time() < deadline
            time.sleep(0.05)
        if contract == "jobs":
            job = c.get(f"jobs/{answer['jobId']}").json()
            assert job["status"] == "done" and job["results"][0]["importedRecords"] == 11
        else:
            assert c.get("jobs/anything").status_code == 404


def test_rate_limit_headers_and_429(cimcloud_sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    box = cimcloud_sandbox_factory(budget=[(5, dt.timedelta(seconds=2))])
    with token_client(box) as c:  # the token call is the first of the five
        seen = []
        for _ in range(4):
            resp = c.get("validate")
            assert resp.status_code == 200
            seen.append(int(resp.headers["X-RateLimit-Remaining"]))
            assert resp.headers["X-RateLimit-Limit"] == "5"
            assert 0 <= int(resp.headers["X-RateLimit-Reset"]) <= 2
        assert seen == [3, 2, 1, 0]
        spent = c.get("validate")
        assert spent.status_code == 429
        assert 1 <= int(spent.headers["Retry-After"]) <= 2
        time.sleep(float(spent.headers["Retry-After"]))
        assert c.get("validate").status_code == 200
        log = box.sandbox.store.requests()
        assert [r["status"] for r in log] == [200] * 5 + [429, 200]
        assert sum(r["counted"] for r in log) == 6  # the 429 does not use the budget


def test_request_log_endpoint(cimcloud_sandbox: Running) -> None:
    with token_client(cimcloud_sandbox) as c:
        c.get("validate")
    log = httpx.get(f"{cimcloud_sandbox.base_url}/_sandbox/requests").json()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("POST", "authenticate", 200),
        ("GET", "validate", 200),
    ]
    assert all(isinstance(r["t"], float) for r in log)


def test_the_cli_serves_the_sandbox(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["sandbox", "cimcloud", "--port", str(port), "--budget", "3/10s", "--db", str(tmp_path / "sb.db")]
    proc = subprocess.Popen([sys.executable, "-m", "mapsync", *args], stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/sandbox/"
        deadline = time.time() + 20
        while True:
            try:
                assert httpx.get(base + "healthcheck/canary").json() == {"status": "Running"}
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.1)
        statuses = [httpx.get(base + "validate").status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]  # the budget counts every call of a credential
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.stdout is not None
    assert "credentials: AuthKey sandbox-key" in proc.stdout.read()


def test_check_reports_health_login_and_budget(cimcloud_sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    from mapsync.cimcloud.connector import check, open_handle
    from mapsync.sheet.connection_models import CimcloudConnection

    box = cimcloud_sandbox_factory(budget=[(50, dt.timedelta(minutes=15))])
    good = {"type": "token", "auth_key": "sandbox-key", "username": "sandbox", "password": "sandbox-password"}
    cfg = {"kind": "cimcloud", "base_url": box.base_url, "site": "sandbox", "auth": good, "budget": []}
    result = check(open_handle("cim", CimcloudConnection.model_validate(cfg)))
    assert result["reachable"] is True and result["auth_ok"] is True
    assert result["health"]["status"] == "Running"
    assert result["budget_remaining"] == 47  # token, healthcheck, validate
    bad = {**cfg, "auth": {"type": "basic", "username": "sandbox", "password": "wrong"}}
    refused = check(open_handle("cim", CimcloudConnection.model_validate(bad)))
    assert refused["reachable"] is True and refused["auth_ok"] is False
    assert "access refused (HTTP 401)" in refused["error"] and "wrong" not in refused["error"]


# --------------------------------------------------------------------------- in-process


def _conversation(box: Any) -> list[tuple[int, Any]]:
    """The same requests to a sandbox: auth, writes, searchstrings (slashes and `|` in the path,
    a date), the generic REST query dialect, refusals; the answers without the token's values."""
    out: list[tuple[int, Any]] = []
    with box.client(site_url(box), timeout=10) as c:
        out.append((c.get("healthcheck/canary").status_code, c.get("healthcheck/canary").json()))
        out.append((c.get("validate").status_code, c.get("validate").json()))
        auth = c.post("authenticate", json=CREDENTIALS)
        out.append((auth.status_code, sorted(auth.json())))
        c.headers["Authorization"] = f"Bearer {auth.json()['token']}"
        queued = [{"ref_id": f"Q{i}", "nm": f"q{i}"} for i in range(12)]  # applied after a minute
        for body in (
            [{"ref_id": f"R{i}", "nm": f"n {i}"} for i in range(3)],
            queued,
            [ACCOUNT],
            [{"x": {"y": 1}}],
        ):
            answer = c.post("account/", json=body)
            out.append((answer.status_code, {k: v for k, v in answer.json().items() if k != "jobId"}))
        missing = c.put("account", json=[{"ref_id": "nobody", "nm": "x"}])
        out.append((missing.status_code, missing.json()))
        for path in (
            "accounts/searchexact~ref_id~00-TEST012|or|searchexact~ref_id~R1/1",
            "accounts/searchgreatherthanequal~last_modify_date~1/1/2021",
            "accounts/searchlike~nm~n%201/0",
            "accounts?page=2&per_page=1",
            "accounts?keys=00-test012,R2",
        ):
            answer = c.get(path)
            rows = answer.json()
            shown = [r["ref_id"] for r in rows] if isinstance(rows, list) else rows
            out.append((answer.status_code, shown))
        out.append((c.delete("account/R1").status_code, None))
    return out


def test_in_process_answers_as_the_served_sandbox(tmp_path: Path) -> None:
    """`InProcess` (the app behind an httpx transport) and `Running` (uvicorn on a socket) give
    the same answers, path splitting included: tests may take either where HTTP is not the point."""
    from mapsync.testing.sandbox import Config
    from mapsync.testing.sandbox_serve import InProcess

    with Running(Config(db_path=str(tmp_path / "served.db"), queue_delay=60)) as served:
        expected = _conversation(served)
    with InProcess(Config(db_path=str(tmp_path / "inproc.db"), queue_delay=60)) as inproc:
        assert inproc.base_url.endswith(".invalid")  # never a real address
        assert _conversation(inproc) == expected
    # the conversation means something: found, paged, refused
    assert expected[-1] == (405, None) and expected[4][0] == 202 and expected[6][0] == 400
    assert expected[8:13] == [
        (200, ["R1", "00-TEST012"]),
        (200, ["R0", "R1", "R2", "00-TEST012"]),
        (200, ["R1"]),
        (200, ["R1"]),
        (200, ["R2", "00-TEST012"]),
    ], expected


def test_in_process_origin_is_mounted_for_rest_clients_while_it_runs(tmp_path: Path) -> None:
    from mapsync.rest import client as rest_client
    from mapsync.rest import transports
    from mapsync.sheet.connection_models import RetryPolicy
    from mapsync.testing.sandbox import Config
    from mapsync.testing.sandbox_serve import InProcess

    def made(base: str) -> rest_client.HttpClient:
        return rest_client.HttpClient(
            "t", base, timeout=dt.timedelta(seconds=5), retry=RetryPolicy(attempts=1)
        )

    with InProcess(Config(db_path=str(tmp_path / "s.db"))) as box:
        assert transports.TRANSPORTS[box.base_url] is box.transport
        client = made(f"{box.base_url}/sandbox/")
        try:
            answer = client.request("GET", "healthcheck/canary")
            assert (answer.status_code, answer.json()) == (200, {"status": "Running"})
        finally:
            client.close()  # a client closing leaves the shared transport open
        assert box.sandbox.store.requests()[-1]["path"] == "healthcheck/canary"
        again = made(f"{box.base_url}/sandbox/")
        assert again.request("GET", "healthcheck/canary").status_code == 200
        again.close()
    assert box.base_url not in transports.TRANSPORTS  # gone with it: nothing else is served so
