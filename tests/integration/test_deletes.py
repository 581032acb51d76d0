"""Delete policies end in the expected destination state on PostgreSQL and MariaDB: `ignore`,
`disable`, `hard`, `by_reason` (old image, expiry date, status, no image, an update showing
expiry), and the fallback to `disable` when the destination refuses a hard delete (a real
foreign key; no DELETE permission). Also: `validate` wants an explicit `deletes:` where the
capture method can emit deletes.

Deletes are driven through the real engine with a scripted capture (`records.Change("delete",
…)` with or without the old image), so the capture helpers' methods are not needed here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mapsync import errors, records
from mapsync.capture.base import CaptureBase
from mapsync.engine import Engine, Parts, RunReport
from mapsync.sheet import loader, models
from mapsync.state.store import StateStore
from tests import helpers as h

PAST = "2020-01-01"
FUTURE = "2999-01-01"

SHEET = """
version: 1
connections:
  erp: {{url: "{src}"}}
  portal: {{url: "{dst}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: id, to: ref}}
    fields: {{nm: name}}
    changes: {{method: snapshot}}
    deletes: {deletes}
"""


class ScriptedCapture(CaptureBase):
    """A capture that yields the changes a test gives it (one batch per list); CaptureBase gives
    the rest of the role (mapsync.ports.Capture)."""

    def __init__(self, batches: list[list[records.Change]]) -> None:
        self.batches = batches
        self.acknowledged: list[records.WriteResult] = []

    def start_seed(self) -> dict[str, Any]:
        return {}

    def read(self, mode: str, cursors: dict[str, Any]) -> Iterator[records.Batch]:
        for changes in self.batches:
            yield records.Batch(changes, {})

    def finish(self) -> dict[str, Any]:
        return {}

    def acknowledge(self, batch: records.Batch, result: records.WriteResult) -> None:
        self.acknowledged.append(result)

    def low(self) -> Any:
        return None


class ScriptedEngine(Engine):
    """The real engine; `script` (when set) replaces the capture of the next run."""

    script: list[list[records.Change]] | None = None

    def parts(self, name: str) -> Parts:
        parts = super().parts(name)
        if self.script is not None:
            parts.capture = ScriptedCapture(self.script)
        return parts


def deleted(key: int, **old: Any) -> records.Change:
    """A delete of `key`; with `old`, the old image (else only the key, as without an image)."""
    return records.Change("delete", (key,), None, {"id": key, **old} if old else {})


def updated(key: int, **row: Any) -> records.Change:
    return records.Change("upsert", (key,), None, {"id": key, **row})


class World:
    """A SQLite ERP (the seed source) and a PostgreSQL/MariaDB portal with invoices that point
    at accounts through a foreign key."""

    def __init__(self, dst: str, folder: Path) -> None:
        self.src = f"sqlite:///{folder / 'erp.db'}"
        sa.create_engine(self.src).connect().close()
        self.dst, self.folder = dst, folder
        h.execute(
            self.src,
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, valid_until TEXT, state TEXT)",
        )
        h.execute(
            self.src,
            "INSERT INTO customers VALUES (:id, :name, :valid_until, 'A')",
            params=[{"id": i, "name": f"c{i}", "valid_until": FUTURE} for i in range(1, 8)],
        )
        h.execute(
            dst,
            "CREATE TABLE accounts (ref INTEGER PRIMARY KEY, nm VARCHAR(50), active INTEGER NOT NULL DEFAULT 1)",
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, account_ref INTEGER NOT NULL, "
            "FOREIGN KEY (account_ref) REFERENCES accounts (ref))",
        )
        self._engine: tuple[ScriptedEngine, StateStore] | None = None

    def configure(self, deletes: str, dst: str | None = None) -> None:
        self.close()
        # the mass-delete guard is not what these tests are about: most of a tiny table goes
        deletes = deletes.replace("{", "{max_delete_ratio: 1, ", 1)
        sheet = SHEET.format(src=self.src, dst=dst or self.dst, deletes=deletes)
        (self.folder / "sheet.yaml").write_text(sheet)

    def engine(self) -> ScriptedEngine:
        if self._engine is None:
            loaded = loader.load(self.folder / "sheet.yaml", env={})
            store = StateStore.open("sqlite:///state.db", self.folder, create=True)
            self._engine = (ScriptedEngine(loaded, store), store)
        return self._engine[0]

    def close(self) -> None:
        if self._engine is not None:
            self._engine[0].close()
            self._engine[1].close()
            self._engine = None

    def seed(self) -> RunReport:
        engine = self.engine()
        engine.script = None
        report = engine.run("customers", "seed")
        assert report.status == "success" and report.counts.written == 7, report
        return report

    def run(self, *batches: list[records.Change]) -> RunReport:
        engine = self.engine()
        engine.script = list(batches)
        return engine.run("customers")

    def accounts(self) -> dict[int, tuple[str, int]]:
        return {r[0]: (r[1], r[2]) for r in h.query(self.dst, "SELECT ref, nm, active FROM accounts")}

    def invoice(self, invoice_id: int, account: int) -> None:
        h.execute(self.dst, f"INSERT INTO invoices VALUES ({invoice_id}, {account})")


@pytest.fixture(
    params=[
        pytest.param("pg_database", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb_database", id="mariadb", marks=pytest.mark.mariadb),
    ]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    make: Callable[[], str] = request.getfixturevalue(request.param)
    w = World(make(), tmp_path)
    yield w
    w.close()


BY_REASON = (
    "{policy: by_reason, field: active, value: 0, expired: {date: valid_until, status: state, "
    "in: [X, EXPIRED]}, otherwise: hard, fallback: disable}"
)


def test_by_reason_picks_per_delete_and_falls_back_on_a_foreign_key(world: World) -> None:
    world.configure(BY_REASON)
    world.seed()
    world.invoice(100, 2)  # account 2 is still referenced: its hard delete is refused
    report = world.run(
        [
            deleted(1, name="c1", valid_until=PAST, state="A"),  # expired by date → disable
            deleted(2, name="c2", valid_until=FUTURE, state="A"),  # never expired → hard → FK → disable
            deleted(3, name="c3", valid_until=FUTURE, state="A"),  # never expired → hard
            deleted(4),  # no old image to judge by → disable (the safe choice)
            deleted(5, name="c5", valid_until=None, state="EXPIRED"),  # expired by status → disable
            updated(6, name="c6 gone", valid_until=PAST, state="A"),  # an update showing expiry
            updated(7, name="c7 renamed", valid_until=FUTURE, state="A"),  # a plain update
        ]
    )
    assert report.status == "success", report.message
    assert world.accounts() == {
        1: ("c1", 0),
        2: ("c2", 0),
        4: ("c4", 0),
        5: ("c5", 0),
        6: ("c6 gone", 0),
        7: ("c7 renamed", 1),
    }
    assert report.fell_back == 1
    assert report.expired == {"active": 1}
    assert (report.counts.deleted, report.counts.rejected) == (1, 0)
    assert h.query(world.dst, "SELECT id, account_ref FROM invoices") == [(100, 2)]
    # the ledger knows the fallen-back row as delivered (not deleted): nothing is retried
    assert world.engine().store.ledger("customers", [(2,)])[(2,)].deleted is False


@pytest.mark.parametrize(
    ("deletes", "expected"),
    [
        ("{policy: ignore}", {1: ("c1", 1), 2: ("c2", 1), 3: ("c3", 1)}),
        ("{policy: disable, field: active, value: 0}", {1: ("c1", 0), 2: ("c2", 0), 3: ("c3", 1)}),
        ("{policy: hard}", {3: ("c3", 1)}),
    ],
    ids=["ignore", "disable", "hard"],
)
def test_each_plain_policy_ends_in_its_state(world: World, deletes: str, expected: dict[int, Any]) -> None:
    h.execute(world.src, "DELETE FROM customers WHERE id > 3")
    world.configure(deletes)
    engine = world.engine()
    engine.script = None
    assert engine.run("customers", "seed").counts.written == 3
    report = world.run([deleted(1, name="c1"), deleted(2)])
    assert report.status == "success", report.message
    assert world.accounts() == expected
    assert report.counts.deleted == (2 if "hard" in deletes else 0)
    assert report.counts.skipped == 0  # an ignored delete is reported as such, not as unchanged
    ignored, disabled = (2 if "ignore" in deletes else 0), (2 if "disable" in deletes else 0)
    assert report.gone_at_source == {"found": 2, "ignored": ignored, "disabled": disabled}


def test_a_refused_hard_delete_without_fallback_is_a_record_error(world: World) -> None:
    world.configure("{policy: hard}")
    world.seed()
    world.invoice(100, 2)
    report = world.run([deleted(1), deleted(2), deleted(3)])
    assert report.status == "partial"
    assert sorted(world.accounts()) == [2, 4, 5, 6, 7]
    assert report.fell_back == 0 and report.counts.deleted == 2
    assert [list(s.key) for s in report.samples] == [[2]]
    assert "destination refused the record" in report.samples[0].message
    assert "foreign key" in report.samples[0].message.lower()


def test_fallback_on_a_delete_permission_refused(world: World) -> None:
    """A sync user without DELETE: hard deletes turn into `disable`, the rest is written."""
    user = f"mapsync_t_{uuid.uuid4().hex[:8]}"
    url = sa.make_url(world.dst)
    dbname = url.database
    if h.dialect(world.dst) == "postgresql":
        h.execute(
            world.dst,
            f"CREATE ROLE {user} LOGIN",
            f"GRANT SELECT, INSERT, UPDATE ON accounts TO {user}",
        )
        drop = [f"DROP OWNED BY {user}", f"DROP ROLE {user}"]
    else:
        h.execute(
            world.dst,
            f"CREATE USER '{user}'@'%'",
            f"CREATE USER '{user}'@'localhost'",
            f"GRANT SELECT, INSERT, UPDATE ON `{dbname}`.* TO '{user}'@'%'",
            f"GRANT SELECT, INSERT, UPDATE ON `{dbname}`.* TO '{user}'@'localhost'",
        )
        drop = [f"DROP USER '{user}'@'%'", f"DROP USER '{user}'@'localhost'"]
    try:
        world.configure(
            "{policy: hard, field: active, value: 0, fallback: disable}",
            dst=url.set(username=user, password=None).render_as_string(hide_password=False),
        )
        world.seed()
        report = world.run([deleted(1), updated(3, name="c3 new", valid_until=FUTURE, state="A")])
        assert report.status == "success", report.message
        assert report.fell_back == 1
        accounts = world.accounts()
        assert accounts[1] == ("c1", 0) and accounts[3] == ("c3 new", 1) and len(accounts) == 7
    finally:
        world.close()
        h.execute(world.dst, *drop)


@pytest.mark.postgres
def test_a_hard_delete_refused_for_lack_of_permission_without_fallback_stops_the_run(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """Without `fallback`, no DELETE permission is systemic: the run fails, the row stays (one
    backend is enough for this unchanged path)."""
    world = World(pg_database(), tmp_path)
    user = f"mapsync_t_{uuid.uuid4().hex[:8]}"
    h.execute(world.dst, f"CREATE ROLE {user} LOGIN", f"GRANT SELECT, INSERT, UPDATE ON accounts TO {user}")
    try:
        url = sa.make_url(world.dst).set(username=user)
        world.configure("{policy: hard}", dst=url.render_as_string(hide_password=False))
        world.seed()
        report = world.run([deleted(1)])
        assert report.status == "failed" and "permission denied" in (report.message or "")
        assert 1 in world.accounts()
    finally:
        world.close()
        h.execute(world.dst, f"DROP OWNED BY {user}", f"DROP ROLE {user}")


# --------------------------------------------------------------------------- the sheet


SHEET_TEXT = """\
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
syncs:
  customers:
    from: {connection: erp, table: customers}
    to: {connection: erp, table: accounts}
    key: {from: id, to: ref}
    fields: {nm: name}
    changes: {method: full}
"""


def _load(tmp_path: Path, text: str) -> Any:
    (tmp_path / "sheet.yaml").write_text(text)
    return loader.load(tmp_path / "sheet.yaml", env={})


def test_validate_wants_explicit_deletes_where_the_method_emits_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the facts `validate` reads are the changes model's (the capture class declares the same)
    monkeypatch.setattr(models.FullChanges, "can_emit_deletes", True)
    with pytest.raises(errors.ConfigError) as caught:
        _load(tmp_path, SHEET_TEXT)
    text = str(caught.value)
    assert "sheet.yaml:10: syncs.customers.changes:" in text, text
    assert "can emit deletes" in text and "sync customers" in text
    assert "deletes: {policy: disable, field: active, value: false}" in text
    # an explicit policy, even `ignore`, satisfies it
    assert _load(tmp_path, SHEET_TEXT + "    deletes: {policy: ignore}\n").sheet.syncs["customers"]
    # a method that cannot emit deletes needs none
    monkeypatch.setattr(models.FullChanges, "emits_deletes", lambda self: False)
    assert _load(tmp_path, SHEET_TEXT).sheet.syncs["customers"].deletes.policy == "ignore"


@pytest.mark.parametrize(
    ("deletes", "message"),
    [
        ("{policy: by_reason, field: active, value: 0, otherwise: hard}", "needs `expired`"),
        ("{policy: by_reason, field: active, value: 0, expired: {date: d}}", "and `otherwise`"),
        ("{policy: by_reason, expired: {date: d}, otherwise: hard}", "needs `field` and `value`"),
        ("{policy: hard, fallback: disable}", "`fallback: disable` needs `field` and `value`"),
        ("{policy: hard, expired: {date: d}}", "go with `policy: by_reason`"),
        ("{policy: by_reason, field: a, value: 0, expired: {}, otherwise: hard}", "give `date`"),
        ("{policy: by_reason, field: a, value: 0, expired: {status: s}, otherwise: hard}", "go together"),
        ("{policy: by_reason, field: a, value: 0, expired: {date: d, then: drop}, otherwise: hard}", "then"),
        ("{policy: by_reason, field: ref, value: 0, expired: {date: d}, otherwise: hard}", "key column"),
    ],
)
def test_bad_delete_policies_are_clear_config_errors(tmp_path: Path, deletes: str, message: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        _load(tmp_path, SHEET_TEXT + f"    deletes: {deletes}\n")
    text = str(caught.value)
    assert "syncs.customers.deletes" in text and message in text, text


# --------------------------------------------------------------------------- the rule itself


def test_expiry_reads_dates_times_and_text() -> None:
    from mapsync import deletes
    from mapsync.sheet import models

    rule = models.ExpiredRule.model_validate({"date": "d"})
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    cases = [
        (dt.date(2026, 5, 31), True),
        (dt.date(2026, 6, 1), False),  # expires at the end of its day
        (dt.datetime(2026, 6, 1, 11, 59), True),  # naive: UTC  # noqa: DTZ001
        (dt.datetime(2026, 6, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), True),
        ("2026-06-01T12:00:01", False),
        ("2026-05-01", True),
        ("soon", False),
        (None, False),
    ]
    for value, expected in cases:
        assert deletes.expired(rule, {"d": value}, now) is expected, value
    assert deletes.expired(rule, {"other": 1}, now) is None
