"""`timeouts:` of SQL connections and the state store: defaults below the lease, `validate`
refuses a configured timeout that is not below it, and the drivers get them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mapsync import errors
from mapsync.connectors.sql import SqlDatabase
from mapsync.db_timeouts import connect_args
from mapsync.sheet import loader
from mapsync.sheet.timeout_models import Timeouts
from mapsync.state.store import StateStore

SHEET = """\
version: 1
connections:
  erp:
    url: sqlite:///erp.db
  shop:
    url: postgresql://u@127.0.0.1/shop
    timeouts:
      statement: 2s
      read: 5s
state:
  lease_ttl: 5s
  timeouts:
    connect: 1m
syncs:
  items:
    from: {connection: erp, table: items}
    to: {connection: shop, table: items}
    key: {from: id, to: id}
    fields: {name: name}
    changes: {method: full}
"""


def test_validate_refuses_a_timeout_that_is_not_below_the_lease(tmp_path: Path) -> None:
    path = tmp_path / "sheet.yaml"
    path.write_text(SHEET, encoding="utf-8")
    with pytest.raises(errors.ConfigError) as caught:
        loader.load(path)
    problems = caught.value.problems
    assert len(problems) == 2, problems
    read, connect = sorted(problems, key=lambda p: int(p.split(":")[1]))
    assert read.startswith(f"{path}:9: connections.shop.timeouts.read: 5 s is not below the lease")
    assert connect.startswith(f"{path}:13: state.timeouts.connect: 60 s is not below the lease")
    path.write_text(
        SHEET.replace("read: 5s", "read: 4s").replace("connect: 1m", "connect: 4s"), encoding="utf-8"
    )
    assert loader.load(path).sheet.state.timeouts.connect == dt.timedelta(seconds=4)


def test_defaults_stay_below_the_lease() -> None:
    short = Timeouts().for_lease(dt.timedelta(seconds=3))
    assert short.statement == short.read == short.write == dt.timedelta(seconds=1.5)
    assert short.connect == short.tcp_user_timeout == dt.timedelta(seconds=1.5)
    long = Timeouts().for_lease(dt.timedelta(minutes=10))
    assert long.connect == dt.timedelta(seconds=10)
    assert long.statement == long.read == dt.timedelta(minutes=5)  # MariaDB's 600 s was the whole lease
    assert long.tcp_user_timeout == dt.timedelta(seconds=60)
    assert (long.keepalives_idle, long.keepalives_interval, long.keepalives_count) == (
        dt.timedelta(seconds=30),
        dt.timedelta(seconds=10),
        3,
    )
    assert Timeouts(statement=dt.timedelta(seconds=7)).for_lease(
        dt.timedelta(seconds=20)
    ).statement == dt.timedelta(seconds=7)
    pg = connect_args("postgresql", long)
    assert (pg["keepalives"], pg["keepalives_idle"], pg["keepalives_count"], pg["tcp_user_timeout"]) == (
        1,
        30,
        3,
        60000,
    )
    assert "statement_timeout=300000" in pg["options"]
    assert connect_args("mysql", long)["read_timeout"] == 300
    assert connect_args("sqlite", long) == {}


def test_postgresql_sessions_get_the_statement_timeout(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_database()
    timeouts = Timeouts(statement=dt.timedelta(milliseconds=300)).for_lease(dt.timedelta(seconds=3))
    db = SqlDatabase("shop", url, tmp_path, timeouts=timeouts)
    try:
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "300ms"
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.execute(sa.text("SELECT pg_sleep(2)"))
    finally:
        db.close()
    state_url = sa.make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    store = StateStore.open(state_url, tmp_path, create=True, timeouts=timeouts)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "300ms"
    finally:
        store.close()


def test_mariadb_statement_limit_is_only_on_destination_writes(
    mariadb_database: Callable[[], str], tmp_path: Path
) -> None:
    from mapsync import records
    from mapsync.connectors.sql_destination import SqlDestination
    from mapsync.sheet import models

    url = mariadb_database()
    eng = sa.create_engine(sa.make_url(url).set(drivername="mysql+pymysql"))
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
    eng.dispose()
    timeouts = Timeouts(statement=dt.timedelta(seconds=2)).for_lease(dt.timedelta(seconds=10))
    db = SqlDatabase("shop", url, tmp_path, timeouts=timeouts)
    cfg = models.SyncConfig.model_validate(
        {
            "from": {"connection": "erp", "table": "items"},
            "to": {"connection": "shop", "table": "items"},
            "key": {"from": "id", "to": "id"},
            "fields": {"name": "name"},
            "changes": {"method": "full"},
        }
    )
    try:
        dest = SqlDestination(db, "items", cfg)
        values = {"id": 1, "name": "a"}
        dest.write([records.Mapped("upsert", (1,), (1,), None, values, {}, records.content_hash(values))])
        with db.engine.connect() as conn:  # the pool's one connection, back from the write
            assert float(conn.execute(sa.text("SELECT @@session.max_statement_time")).scalar()) == 0
    finally:
        db.close()


def test_validate_refuses_a_zero_timeout(tmp_path: Path) -> None:
    """0 s means 'no limit' to the drivers: it would silently switch off the stall protection."""
    path = tmp_path / "sheet.yaml"
    path.write_text(
        SHEET.replace("statement: 2s", "statement: 0s")
        .replace("read: 5s", "read: 4s")
        .replace("connect: 1m", "connect: 4s"),
        encoding="utf-8",
    )
    with pytest.raises(errors.ConfigError) as caught:
        loader.load(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}:8: connections.shop.timeouts.statement: 0 s would mean no limit"), (
        problem
    )
