"""`web:` of the sheet (mapsync.sheet.web_models): users, roles, credentials; problems name the
file, line and field, and never echo a token or a hash."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mapsync.errors import ConfigError
from mapsync.sheet import loader
from mapsync.web import passwords

HASH = passwords.hash_password("pw-of-alice-1", n=1024)
TOKEN = "tok-SECRET-0123456789abcdefgh"
SHEET = """version: 1
connections:
  erp: {{url: "sqlite:///erp.db"}}
syncs:
  items:
    from: {{connection: erp, table: items}}
    to: {{connection: erp, table: products}}
    key: {{from: sku, to: sku}}
    fields: {{nm: descr}}
    changes: {{method: full}}
web:
{web}
"""


def _load(tmp_path: Path, web: str) -> loader.LoadedSheet:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.format(web=web))
    return loader.load(path, env={"TOK": TOKEN})


def _problems(tmp_path: Path, web: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, web)
    return info.value.problems or [str(info.value)]


def test_users_and_defaults(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        f'  users:\n    alice: {{role: operator, password_hash: "{HASH}"}}\n'
        '    grafana: {role: viewer, token: "${TOK}"}\n  hosts: [Dash.Example.com]',
    )
    web = loaded.sheet.web
    assert web is not None
    assert web.users["alice"].role == "operator" and web.users["alice"].password_hash == HASH
    assert web.users["grafana"].token == TOKEN
    assert web.hosts == ["dash.example.com"]
    assert (web.anonymous_reads, web.secure_cookies, web.max_body, web.login_attempts) == (
        False,
        True,
        65536,
        5,
    )
    assert web.session_ttl == dt.timedelta(hours=8)
    assert TOKEN in loaded.secrets and HASH in loaded.secrets  # redacted wherever text is shown


def test_no_web_section_is_none(tmp_path: Path) -> None:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET.format(web="").replace("web:\n", ""))
    assert loader.load(path).sheet.web is None


@pytest.mark.parametrize(
    ("web", "line", "field", "says"),
    [
        ("  users:\n    alice: {role: operator}", 13, "web.users.alice", "exactly one of"),
        (
            f'  users:\n    alice: {{role: viewer, password_hash: "{HASH}", token: "${{TOK}}"}}',
            13,
            "web.users.alice",
            "exactly one of",
        ),
        ('  users:\n    alice: {role: admin, token: "${TOK}"}', 13, "web.users.alice.role", "viewer"),
        ("  users:\n    alice: {role: viewer, token: short-token-1}", 13, "web.users.alice.token", "24"),
        (
            "  users:\n    alice: {role: viewer, password_hash: plain-text-password}",
            13,
            "web.users.alice.password_hash",
            "hash-password",
        ),
        ('  users:\n    "al ice": {role: viewer, token: "${TOK}"}', 12, "web.users", "letters, digits"),
        ("  hosts: [https://dash.example.com]", 12, "web.hosts", "not a host name"),
        ("  session_ttl: 0s", 12, "web.session_ttl", "more than 0"),
        ("  max_body: 0", 12, "web.max_body", ""),
        ("  anonymous: true", 12, "web", "anonymous"),
    ],
    ids=[  # fixed ids: HASH has a random salt, and xdist's workers must collect the same names
        "no-credential",
        "both-credentials",
        "unknown-role",
        "short-token",
        "plain-password",
        "bad-user-name",
        "host-with-scheme",
        "zero-ttl",
        "zero-body",
        "unknown-field",
    ],
)
def test_problems_name_file_line_and_field(
    tmp_path: Path, web: str, line: int, field: str, says: str
) -> None:
    found = _problems(tmp_path, web)
    path = tmp_path / "sheet.yaml"
    assert any(p.startswith(f"{path}:{line}: {field}") and says in p for p in found), found
    assert not any(TOKEN in p or "plain-text-password" in p or "short-token-1" in p for p in found), found
