"""A password with `@ : / # %` inside a URL written in the sheet (issue 9, item 3).

A `${VAR}` standing in the userinfo part (`scheme://user:${PW}@host`) is percent-encoded, so
the URL keeps its host, port and database and the password reaches the server intact; a
`${VAR}` that is the whole URL stays raw (encoding it is the user's job). Any fragment of a
password that a broken URL still shows is redacted.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync.sheet import loader
from mapsync.testing.canary import Canary
from tests import helpers as h

PASSWORD = "pa@ss:w0rd/9#x%y"

SHEET = """
version: 1
state: {{url: "sqlite:///state.db"}}
connections:
  erp: {{url: "{url}"}}
syncs:
  things:
    from: {{connection: erp, table: things}}
    to: {{connection: erp, table: copy}}
    key: {{from: id, to: id}}
    fields: {{name: name}}
    changes: {{method: full}}
"""


def load(tmp_path: Path, url: str, env: dict[str, str]) -> str:
    (tmp_path / "sheet.yaml").write_text(SHEET.format(url=url))
    conn = loader.load(tmp_path / "sheet.yaml", env=env).sheet.connections["erp"]
    return str(conn.url)  # type: ignore[union-attr]


def test_only_a_var_inside_userinfo_is_encoded(tmp_path: Path) -> None:
    env = {"PW": PASSWORD, "U": "app user", "HOST": "db.example.com", "WHOLE": f"mysql://a:{PASSWORD}@h/d"}
    quoted = urllib.parse.quote(PASSWORD, safe="")
    assert load(tmp_path, "postgresql://app:${PW}@${HOST}:5432/erp", env) == (
        f"postgresql://app:{quoted}@db.example.com:5432/erp"
    )
    assert (
        load(tmp_path, "mysql://${U}:${PW}@h/d?x=${HOST}", env)
        == f"mysql://app%20user:{quoted}@h/d?x=db.example.com"
    )
    assert load(tmp_path, "${WHOLE}", env) == env["WHOLE"]  # the whole URL: as given
    assert load(tmp_path, "sqlite:///${HOST}.db", env) == "sqlite:///db.example.com.db"
    parsed = sa.make_url(load(tmp_path, "mysql://app:${PW}@h:3306/d", env))
    assert (parsed.password, parsed.host, parsed.port, parsed.database) == (PASSWORD, "h", 3306, "d")


@pytest.fixture
def mariadb_user(mariadb_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """A database and a MariaDB user whose password holds every URL delimiter."""
    url = mariadb_database()
    parsed = sa.make_url(url)
    user = f"i9_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(parsed.set(drivername="mysql+pymysql"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": PASSWORD})
        conn.execute(sa.text(f"GRANT ALL ON `{parsed.database}`.* TO '{user}'@'%'"))
        conn.execute(sa.text("CREATE TABLE things (id VARCHAR(10) PRIMARY KEY, name VARCHAR(20))"))
        conn.execute(sa.text("CREATE TABLE copy (id VARCHAR(10) PRIMARY KEY, name VARCHAR(20))"))
        conn.execute(sa.text("INSERT INTO things VALUES ('t1', 'one')"))
    try:
        yield user, f"mysql://{user}:${{DB_PASSWORD}}@{parsed.host}:{parsed.port or 3306}/{parsed.database}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def test_a_password_with_url_delimiters_logs_in(
    mariadb_user: tuple[str, str], tmp_path: Path, canary: Callable[..., Canary]
) -> None:
    _user, url = mariadb_user
    (tmp_path / "sheet.yaml").write_text(SHEET.format(url=url))
    env = {"DB_PASSWORD": PASSWORD}
    c = canary(PASSWORD)
    checked = h.mapsync("check", "sheet.yaml", "--json", cwd=tmp_path, env=env)
    c.process("check --json", checked)
    found = json.loads(checked.stdout)
    assert found["ok"], checked.stdout  # logged in with the password as set
    seeded = h.mapsync("--log-level", "debug", "seed", "sheet.yaml", cwd=tmp_path, env=env)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    c.process("seed", seeded)
    c.store(f"sqlite:///{tmp_path / 'state.db'}")
    c.assert_clean()


@pytest.mark.parametrize("password", [PASSWORD, "hunter2@fragment-host"])
def test_fragments_of_a_raw_password_in_a_whole_url_are_redacted(
    tmp_path: Path, canary: Callable[..., Canary], password: str
) -> None:
    """`${DATABASE_URL}` is used as given: a raw `@` splits it, and the tail would be shown as
    the host (or break the port). It is not shown, and there is no traceback."""
    (tmp_path / "sheet.yaml").write_text(SHEET.format(url="${DATABASE_URL}"))
    env = {"DATABASE_URL": f"mysql://app:{password}@127.0.0.1:1/erp"}
    c = canary(password, fragment_min=4)
    for args in (["check"], ["check", "--json"], ["seed", "--json"]):
        done = h.mapsync("--log-level", "debug", *args, "sheet.yaml", cwd=tmp_path, env=env)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        c.process(" ".join(args), done)
    c.store(f"sqlite:///{tmp_path / 'state.db'}")
    c.assert_clean()
