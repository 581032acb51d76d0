"""Sheet validation of REST and CIMcloud connections and of `resource` ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync import errors
from mapsync.sheet import loader

BASE = """
version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
  cim:
    kind: cimcloud
    site: {site}
    auth: {{type: token, auth_key: "${{KEY}}", username: u, password: "${{PW}}"}}
    budget: {budget}
syncs:
  accounts:
    from: {{connection: erp, {src}}}
    to: {{connection: cim, {dst}}}
    key: {{from: id, to: ref_id}}
    fields: {{nm: name}}
    changes: {{method: snapshot}}
    deletes: {{policy: {policy}, field: status, value: "0"}}
"""


def load(tmp_path: Path, **over: str) -> loader.LoadedSheet:
    values = {
        "site": "acme",
        "budget": '["2/1s", "100/15m"]',
        "src": "table: customers",
        "dst": "resource: account",
        "policy": "disable",
        **over,
    }
    (tmp_path / "s.yaml").write_text(BASE.format(**values))
    return loader.load(tmp_path / "s.yaml", env={"KEY": "the-auth-key", "PW": "the-password"})


def problems(tmp_path: Path, **over: str) -> str:
    with pytest.raises(errors.ConfigError) as info:
        load(tmp_path, **over)
    return str(info.value)


def test_a_valid_cimcloud_sheet(tmp_path: Path) -> None:
    loaded = load(tmp_path)
    cim = loaded.sheet.connections["cim"]
    assert cim.kind == "cimcloud" and cim.batch == 10 and cim.async_contract == "none"
    assert {"the-auth-key", "the-password"} <= set(loaded.secrets)  # redacted wherever shown


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"dst": "table: accounts"}, "syncs.accounts.to: connection 'cim' is cimcloud: give `resource`"),
        (
            {"src": "resource: customers"},
            "syncs.accounts.from.resource: connection 'erp' is SQL: give `table`",
        ),
        ({"policy": "hard"}, "CIMcloud documents no DELETE"),
        ({"budget": '["2/1s", "lots"]'}, "'lots' is not a call limit"),
        ({"site": "a/b"}, "`site` is the site name alone"),
        (
            {"dst": "resource: account, table: x"},
            "give `table` (SQL) or `resource` (REST, CIMcloud), not both",
        ),
    ],
)
def test_problems_are_named(tmp_path: Path, over: dict[str, str], expected: str) -> None:
    text = problems(tmp_path, **over)
    assert expected in text
    assert "the-password" not in text and "the-auth-key" not in text


def test_batch_above_ten_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("    budget: {budget}", "    budget: {budget}\n    batch: 11")
    values = {
        "site": "acme",
        "budget": "[]",
        "src": "table: c",
        "dst": "resource: account",
        "policy": "disable",
    }
    (tmp_path / "s.yaml").write_text(text.format(**values))
    with pytest.raises(errors.ConfigError, match=r"connections.cim.batch: .*less than or equal to 10"):
        loader.load(tmp_path / "s.yaml", env={"KEY": "k-1", "PW": "p-1"})


def test_init_writes_a_cimcloud_example_that_validates(tmp_path: Path) -> None:
    from tests import helpers as h

    done = h.mapsync("init", "--to", "cimcloud", "cim.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    env = {"ERP_PASSWORD": "x", "CIM_AUTH_KEY": "k", "CIM_PASSWORD": "p"}
    loaded = loader.load(tmp_path / "cim.yaml", env=env)
    deletes = loaded.sheet.syncs["accounts"].deletes
    assert (deletes.policy, deletes.field, deletes.value) == ("disable", "status", "0")
    assert loaded.sheet.syncs["accounts"].to.resource == "account"


def test_inline_credentials_are_secrets_too(tmp_path: Path) -> None:
    text = BASE.replace('"${{PW}}"', "inline-pass-77")
    values = {
        "site": "acme",
        "budget": "[]",
        "src": "table: c",
        "dst": "resource: account",
        "policy": "disable",
    }
    (tmp_path / "s.yaml").write_text(text.format(**values))
    loaded = loader.load(tmp_path / "s.yaml", env={"KEY": "k-1"})
    assert "inline-pass-77" in loaded.secrets


def test_a_typo_in_auth_is_named_with_a_suggestion(tmp_path: Path) -> None:
    text = BASE.replace('password: "${{PW}}"', "pasword: x")
    values = {
        "site": "acme",
        "budget": "[]",
        "src": "table: c",
        "dst": "resource: account",
        "policy": "disable",
    }
    (tmp_path / "s.yaml").write_text(text.format(**values))
    with pytest.raises(errors.ConfigError) as info:
        loader.load(tmp_path / "s.yaml", env={"KEY": "k-1"})
    assert info.value.problems == [
        f"{tmp_path / 's.yaml'}:8: connections.cim.auth.password: required key is missing",
        f"{tmp_path / 's.yaml'}:8: connections.cim.auth.pasword: unknown key 'pasword' (did you mean 'password'?)",
    ]
