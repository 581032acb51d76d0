"""A few thousand real-looking messy customers, ERP → portal and back, on PostgreSQL and MariaDB.

The customers are generated deterministically (random.Random(SEED)): padded, over-long and
missing names, upper-case and malformed e-mails, country spellings of every kind (aliases,
accents, codes, near misses, ambiguous and unplaceable ones), decimals with too many places
and too many digits, naive Berlin times including the repeated and the skipped hour, and
statuses the sheet or the portal does not know. The outcome of every record is computed here,
independently of mapsync (a hand-written country table, zoneinfo, Decimal), and the runs must
match it exactly: which records land and with what values, which are rejected and for which
fields, and the run's counters. Then the portal's rows go back to the ERP with a second sheet
and the round trip keeps what it should.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import random
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycountry
import pytest

from mapsync.engine import Engine, RunReport
from mapsync.sheet import loader
from mapsync.state import report as state_report
from mapsync.state import unmapped
from mapsync.state import values as state_values
from mapsync.state.store import StateStore
from tests import helpers as h

SEED = 20261127
N = 3000
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
D = decimal.Decimal
NAME_LENGTH = 40  # the portal's column: `truncate: auto` reads it

# spelling → ISO3 it must become; "corrected": the same with autocorrect; None: rejected
COUNTRIES: dict[str, str] = {
    "Germany": "DEU", "Deutschland": "DEU", "DE": "DEU", "U.S.A.": "USA",
    "United States of America": "USA", " us ": "USA", "UK": "GBR", "Great Britain": "GBR",
    "España": "ESP", "FRANCE": "FRA", "france": "FRA", "Österreich": "AUT",
    "The Netherlands": "NLD", "Holland": "NLD", "Schweiz": "CHE", "Czechia": "CZE",
    "Italia": "ITA", "Brasil": "BRA", "Mexico": "MEX", "Canada": "CAN", "Japan": "JPN", "IND": "IND",
}  # fmt: skip
CORRECTED = {"Germnay": "DEU", "Swizerland": "CHE", "Untied States": "USA", "Nigerria": "NGA"}
UNPLACEABLE = ["Atlantis", "N/A", "Europe", "Austrlia", "Nigera"]  # the last two: ambiguous
FIRST = ["Ada", "Grace", "Jürgen", "Zoë", "Mehmet", "Ólafur", "Chen", "Fatima", "José", "Anne-Marie"]
LAST = ["Lovelace", "Hopper", "Müller", "O'Brien", "Nakamura", "van der Berg", "Smith", "Østergaard"]

ERP_DDL = {
    "postgresql": [
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(200), email VARCHAR(200), "
        "country VARCHAR(60), credit NUMERIC(14,4), created_at TIMESTAMP(6), status VARCHAR(2))",
        "CREATE TABLE customers_back (id INTEGER PRIMARY KEY, name VARCHAR(200), email VARCHAR(200), "
        "country VARCHAR(60), credit NUMERIC(14,4), created_at TIMESTAMP(6), status VARCHAR(2))",
    ],
    "mysql": [
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(200), email VARCHAR(200), "
        "country VARCHAR(60), credit DECIMAL(14,4), created_at DATETIME(6), status VARCHAR(2))",
        "CREATE TABLE customers_back (id INTEGER PRIMARY KEY, name VARCHAR(200), email VARCHAR(200), "
        "country VARCHAR(60), credit DECIMAL(14,4), created_at DATETIME(6), status VARCHAR(2))",
    ],
}
PORTAL_DDL = {
    "postgresql": "CREATE TABLE accounts (erp_id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, "
    "email VARCHAR(120), country CHAR(3), credit NUMERIC(10,2), created_utc TIMESTAMP(6), "
    "status VARCHAR(10) NOT NULL CHECK (status IN ('active', 'inactive', 'closed')))",
    "mysql": "CREATE TABLE accounts (erp_id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, "
    "email VARCHAR(120), country CHAR(3), credit DECIMAL(10,2), created_utc DATETIME(6), "
    "status ENUM('active', 'inactive', 'closed') NOT NULL)",
}

TO_PORTAL = """
version: 1
connections:
  erp: {{url: "{erp}"}}
  portal: {{url: "{portal}"}}
syncs:
  customers:
    from: {{connection: erp, table: customers}}
    to: {{connection: portal, table: accounts}}
    key: {{from: id, to: erp_id}}
    fields:
      name: {{from: name, trim: true, required: true, truncate: auto}}
      email: {{from: email, trim: true, case: lower, pattern: "[^@\\\\s]+@[^@\\\\s]+\\\\.[a-z]{{2,}}"}}
      country: {{from: country, country: {{to: iso3, autocorrect: true}}}}
      credit: {{from: credit, cast: decimal, scale: 2}}
      created_utc: {{from: created_at, timezone: {{source: Europe/Berlin}}}}
      status: {{from: status, map: {{A: active, I: inactive, X: closed, P: pending}}}}
    changes: {{method: full}}
    deletes: {{policy: ignore}}
    delivery: {{batch: 500}}
"""
TO_ERP = """
version: 1
connections:
  erp: {{url: "{erp}"}}
  portal: {{url: "{portal}"}}
syncs:
  back:
    from: {{connection: portal, table: accounts}}
    to: {{connection: erp, table: customers_back}}
    key: {{from: erp_id, to: id}}
    fields:
      name: name
      email: email
      country: {{from: country, country: name}}
      credit: credit
      created_at: {{from: created_utc, timezone: {{source: UTC, target: Europe/Berlin}}}}
      status: {{from: status, map: {{active: A, inactive: I, closed: X}}}}
    changes: {{method: full}}
    deletes: {{policy: ignore}}
"""


# --------------------------------------------------------------------------- the customers


def customers(seed: int = SEED, n: int = N) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    spellings = list(COUNTRIES) * 6 + list(CORRECTED) + UNPLACEABLE + [None, "  "] * 2
    out = []
    for i in range(1, n + 1):
        name: str | None = f"{rnd.choice(FIRST)} {rnd.choice(LAST)}"
        roll = rnd.random()
        if roll < 0.08:
            name = f"  {name}\t"
        elif roll < 0.14:
            name = f"{name} " + " ".join(rnd.choice(LAST) for _ in range(rnd.randint(4, 9)))
        elif roll < 0.17:
            name = rnd.choice([None, "", "   "])
        user = (name or "anon").split()[0].lower() if name and name.strip() else "anon"
        email = rnd.choice(
            [f"{user}.{i}@example.com"] * 20
            + [f" {user.upper()}.{i}@Example.COM "] * 3
            + [None, f"{user}(at)example.com", "a@b", f"{user}@@x.de"]
        )
        credit = D(rnd.randint(-(10**7), 10**9)) / D(10**4)  # 4 places; up to 100,000.0000
        if rnd.random() < 0.01:
            credit = D("123456789.1234")  # too many digits for numeric(10,2)
        day = dt.datetime(2024, 1, 1) + dt.timedelta(minutes=rnd.randint(0, 366 * 24 * 60 - 1))  # noqa: DTZ001
        special = rnd.random()
        if special < 0.02:
            day = dt.datetime(2024, 10, 27, 2, rnd.randint(0, 59))  # noqa: DTZ001  repeated hour
        elif special < 0.03:
            day = dt.datetime(2024, 3, 31, 2, rnd.randint(0, 59))  # noqa: DTZ001  skipped hour
        status = rnd.choice(["A"] * 20 + ["I"] * 6 + ["X"] * 2 + ["Q", "P", None])
        out.append(
            {
                "id": i,
                "name": name,
                "email": email,
                "country": rnd.choice(spellings),
                "credit": credit,
                "created_at": day,
                "status": status,
            }
        )
    return out


@dataclasses.dataclass
class Expected:
    accounts: dict[int, tuple[Any, ...]]
    rejected: dict[int, list[str]]  # key → failing fields, in field order
    truncated: int
    corrected: int
    ambiguous: int


def expected(rows: list[dict[str, Any]]) -> Expected:
    """What the ERP → portal sync must do, computed without mapsync."""
    out = Expected({}, {}, 0, 0, 0)
    statuses = {"A": "active", "I": "inactive", "X": "closed"}
    for row in rows:
        failed: list[str] = []
        counted: dict[str, bool] = {}
        # name: trim, required, truncate to the column
        name = (row["name"] or "").strip() or None
        if name is None:
            failed.append("name")
        elif len(name) > NAME_LENGTH:
            name, counted["truncated"] = name[:NAME_LENGTH], True
        # email: trim, lower, pattern
        email = row["email"].strip().lower() if row["email"] is not None else None
        if email is not None and (
            email.count("@") != 1 or "." not in email.split("@")[1] or "(" in email or "@." in email
        ):
            failed.append("email")
        # country
        spelling = row["country"]
        country = None
        if spelling is not None and spelling.strip():
            if spelling in COUNTRIES:
                country = COUNTRIES[spelling]
            elif spelling in CORRECTED:
                country, counted["corrected"] = CORRECTED[spelling], True
            else:
                failed.append("country")
        # credit: 2 places, half-up, into numeric(10,2)
        credit = row["credit"].quantize(D("0.01"), rounding=decimal.ROUND_HALF_UP)
        if len(credit.as_tuple().digits) > 10:
            failed.append("credit")
        # created: Berlin wall time → UTC; the skipped hour fails, the repeated one is the earlier
        local = row["created_at"].replace(tzinfo=BERLIN)
        created = local.astimezone(dt.UTC).replace(tzinfo=None)
        if local.astimezone(dt.UTC).astimezone(BERLIN).replace(tzinfo=None) != row["created_at"]:
            failed.append("created_utc")
        elif local.utcoffset() != local.replace(fold=1).utcoffset():
            counted["ambiguous"] = True
        # status: the sheet's map, then the portal's allowed values and NOT NULL
        status = row["status"]
        if status is None or status not in statuses:
            failed.append("status")  # NULL: NOT NULL; Q: not in the map; P: the portal refuses
        # counters count what happened before the first failing field (the record stops there)
        order = ["name", "email", "country", "credit", "created_utc", "status"]
        stop = order.index(failed[0]) if failed else len(order)
        out.truncated += bool(counted.get("truncated")) and stop > 0
        out.corrected += bool(counted.get("corrected")) and stop > 2
        out.ambiguous += bool(counted.get("ambiguous")) and stop > 4
        if failed:
            out.rejected[row["id"]] = failed
        else:
            out.accounts[row["id"]] = (name, email, country, credit, created, statuses[status])
    return out


# --------------------------------------------------------------------------- the runs


def _run(
    folder: Path, text: str, sync: str, erp: str, portal: str, again: bool = False
) -> tuple[list[RunReport], list[dict[str, Any]], dict[tuple[str, str], int]]:
    """Seed `sync` (and with `again`, run it once more: the full capture re-reads every row);
    the runs' reports, the open record errors and the unmapped values' counts."""
    folder.mkdir(exist_ok=True)
    (folder / "sheet.yaml").write_text(text.format(erp=erp, portal=portal))
    store = StateStore.open("sqlite:///state.db", folder, create=True)
    engine = Engine(loader.load(folder / "sheet.yaml", env={}), store)
    try:
        reports = [engine.run(sync, "seed")]
        if again:
            reports.append(engine.run(sync))
        errors = state_report.record_errors(store, sync, False, 100_000)
        with store.engine.connect() as conn:
            listed = {(u["field"], u["value"]): u["count"] for u in unmapped.listing(conn, sync)}
    finally:
        engine.close()
        store.close()
    return reports, errors, listed


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("pg_database", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb_database", id="mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_messy_customers_there_and_back(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
    make: Callable[[], str] = request.getfixturevalue(backend)
    erp, portal = make(), make()
    dialect = h.dialect(erp)
    h.execute(erp, *ERP_DDL[dialect])
    h.execute(portal, PORTAL_DDL[dialect])
    rows = customers()
    h.execute(
        erp,
        "INSERT INTO customers VALUES (:id, :name, :email, :country, :credit, :created_at, :status)",
        params=rows,
    )
    want = expected(rows)
    assert 1500 < len(want.accounts) < N - 300, len(want.accounts)  # the mix is really mixed

    # ERP → portal: the seed, then a run that reads every row again (nothing changed)
    (report, rerun), errors, listed = _run(tmp_path / "out", TO_PORTAL, "customers", erp, portal, again=True)
    got = {
        r[0]: tuple(r[1:])
        for r in h.query(
            portal, "SELECT erp_id, name, email, country, credit, created_utc, status FROM accounts"
        )
    }
    assert got == want.accounts
    rejected = {state_values.decode(e["key"])[0]: e for e in errors}
    assert set(rejected) == set(want.rejected)
    for key, fields in want.rejected.items():
        error = rejected[key]
        assert error["field"] == fields[0], (key, fields, error)  # the first failing field…
        for field in fields:  # …and the message names every one
            assert f"`{field}`" in error["message"], (key, fields, error["message"])
    # unmapped values: each counted once per record it blocks, however often it is re-read
    blocked: dict[tuple[str, str], int] = {}
    for key, fields in want.rejected.items():
        row = rows[key - 1]
        if fields[0] == "country" or (fields[0] == "status" and row["status"] == "Q"):
            field = fields[0]
            ident = (field, row[field])
            blocked[ident] = blocked.get(ident, 0) + 1
    assert listed == blocked
    assert listed[("country", "Atlantis")] > 1

    # the second run re-read every row: unchanged ones skipped, the rejected ones rejected again
    c = rerun.counts
    assert (c.read, c.written, c.skipped, c.rejected) == (N, 0, len(want.accounts), len(want.rejected))
    # the seed: every record delivered or rejected with a message; counters as computed here
    c = report.counts
    assert report.status == "partial"
    assert (c.read, c.written, c.rejected) == (N, len(want.accounts), len(want.rejected))
    assert sum(report.truncated.values()) == want.truncated > 0
    assert sum(report.corrected.values()) == want.corrected > 0
    assert sum(report.dst_ambiguous.values()) == want.ambiguous > 0
    portal_refused = [k for k, f in want.rejected.items() if f == ["status"] and rows[k - 1]["status"] == "P"]
    assert portal_refused and all(
        "not allowed (destination allows active, closed, inactive)" in rejected[k]["message"]
        for k in portal_refused
    )

    # portal → ERP: everything the portal holds is clean now and comes back as it should
    (back,), back_errors, _ = _run(tmp_path / "back", TO_ERP, "back", erp, portal)
    assert (back.counts.written, back.counts.rejected, back_errors) == (len(want.accounts), 0, [])
    returned = {
        r[0]: tuple(r[1:])
        for r in h.query(
            erp, "SELECT id, name, email, country, credit, created_at, status FROM customers_back"
        )
    }
    original = {r["id"]: r for r in rows}
    codes = {"active": "A", "inactive": "I", "closed": "X"}
    assert set(returned) == set(want.accounts)
    for key, (name, email, country, credit, _created, status) in want.accounts.items():
        assert returned[key] == (
            name,  # trimmed and cut to the portal's length
            email,  # trimmed and lower-cased
            pycountry.countries.get(alpha_3=country).name if country else None,
            credit,  # rounded to the portal's 2 places, exact
            original[key]["created_at"],  # the same Berlin wall time, repeated hour included
            codes[status],
        ), key
        assert status == {"A": "active", "I": "inactive", "X": "closed"}[original[key]["status"]]
