"""Sheet validation (RELIABILITY H1, H2, H7): good sheets load, every bad one is refused with
file:line, the offending path and a useful message, all problems at once, secrets never shown."""

from __future__ import annotations

import datetime as dt
import json
import random
import textwrap
import time
from pathlib import Path

import pytest

from mapsync.errors import ConfigError
from mapsync.sheet import checks, loader, models
from tests import helpers as h

GOOD = """\
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  portal:
    url: "postgresql://sync:${PORTAL_PW}@db.example.com/portal"
    timezone: Europe/Berlin
state:
  lease_ttl: 90s
syncs:
  customers:
    from: {connection: erp, table: customers}
    to: {connection: portal, table: accounts}
    key: {from: id, to: erp_id}
    fields:
      nm: name
      country: {from: land, country: iso3}
      tier: {from: grade, map: {A: gold, 1: silver}, on_unknown: default, map_default: bronze}
      price: {from: price, cast: decimal, scale: 2}
      source: {value: erp}
      title: {from: title, truncate: 150}
    changes:
      method: watermark
      column: updated_at
      lag: 1h30m
      overlap: {window: 24h, every: 1d}
    filter: "is_test = 0"
    seed: {where: "status = 'A'"}
    deletes: {policy: disable, field: active, value: false}
    delivery: {batch: 1000}
    schedule: {every: 5m, start_within: 500ms, finish_within: 30}
  orders:
    after: customers
    from: {connection: erp, table: orders}
    to: {connection: portal, table: orders}
    key: {from: [company, order_no], to: [company_code, erp_order_no]}
    fields:
      total: {from: total, cast: decimal}
    changes: {method: snapshot}
    deletes: {policy: hard}
    children:
      lines:
        from: {connection: erp, table: order_lines}
        to: {connection: portal, table: order_lines}
        parent: {from: [company, order_no], to: [company_code, erp_order_no]}
        key: {from: [company, order_no, line_no], to: [company_code, erp_order_no, line_no]}
        fields:
          qty: quantity
"""

ENV = {"PORTAL_PW": "pw-not-shown"}
CANARY = "canary-7f3e-secret-value"


def write(tmp_path: Path, text: str, name: str = "sheet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problems `load` reports for `text` (it must refuse the sheet)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        loader.load(path, env=ENV if env is None else env)
    found = info.value.problems or [str(info.value)]
    assert all(p.startswith(str(path)) for p in found), found
    return [p.removeprefix(f"{path}:") for p in found]


def good(**replace: str) -> str:
    """GOOD with some of its lines replaced (old line → new text, which may be several lines)."""
    text = GOOD
    for old, new in replace.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def edit(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


def line_of(text: str, needle: str) -> int:
    matches = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(matches) == 1, (needle, matches)
    return matches[0]


# --------------------------------------------------------------------------- good sheets


def test_good_sheet_loads_with_every_form(tmp_path: Path) -> None:
    loaded = loader.load(write(tmp_path, GOOD), env=ENV)
    sheet = loaded.sheet
    assert list(sheet.syncs) == ["customers", "orders"]
    customers, orders = sheet.syncs["customers"], sheet.syncs["orders"]
    # shorthand `nm: name` is {from: name}
    assert customers.fields["nm"] == models.FieldRule(from_="name")
    assert customers.fields["source"].value == "erp" and customers.fields["source"].from_ is None
    # map keys are kept as written, as text (YAML would make `1:` an int)
    assert customers.fields["tier"].map == {"A": "gold", "1": "silver"}
    # a single key column becomes a list; compound keys keep their order
    assert customers.key.from_ == ["id"] and customers.key.to == ["erp_id"]
    assert orders.key.from_ == ["company", "order_no"]
    assert orders.key.to == ["company_code", "erp_order_no"]
    # durations in every written form
    assert isinstance(customers.changes, models.WatermarkChanges)
    assert customers.changes.lag == dt.timedelta(hours=1, minutes=30)
    assert customers.changes.overlap.window == dt.timedelta(days=1)
    assert customers.changes.overlap.every == dt.timedelta(days=1)
    assert customers.schedule.start_within == dt.timedelta(milliseconds=500)
    assert customers.schedule.finish_within == dt.timedelta(seconds=30)
    assert sheet.state.lease_ttl == dt.timedelta(seconds=90)
    assert sheet.state.retention == dt.timedelta(days=90)  # default
    assert isinstance(orders.changes, models.SnapshotChanges)
    # children, `after` as one name
    assert orders.after == ["customers"]
    lines = orders.children["lines"]
    assert lines.parent.to == ["company_code", "erp_order_no"]
    assert lines.fields["qty"].from_ == "quantity"
    assert checks.run_order(sheet) == ["customers", "orders"]
    # ${VAR} interpolated; the value is kept as a secret to redact elsewhere
    assert sheet.connections["portal"].url == "postgresql://sync:pw-not-shown@db.example.com/portal"
    assert "pw-not-shown" in loaded.secrets
    assert sheet.connections["portal"].kind == "sql"
    # every path has a line, for later messages
    assert loaded.where("syncs", "customers", "fields", "nm") == f"{loaded.path}:{line_of(GOOD, 'nm: name')}"


def test_defaults_of_a_minimal_sheet(tmp_path: Path) -> None:
    text = """\
        version: 1
        connections:
          a: {url: "sqlite:///a.db"}
        syncs:
          s:
            from: {connection: a, table: t}
            to: {connection: a, table: u}
            key: {from: id, to: id}
            fields: {nm: name}
            changes: {method: watermark, column: ts}
    """
    sync = loader.load(write(tmp_path, text), env={}).sheet.syncs["s"]
    assert sync.delivery.batch == 500
    assert sync.deletes.policy == "ignore"
    assert sync.after == [] and sync.children == {} and sync.filter is None
    assert isinstance(sync.changes, models.WatermarkChanges)
    assert sync.changes.lag == dt.timedelta(seconds=5)
    assert sync.fields["nm"].on_unknown == "reject"


def test_env_fallback_and_missing_variable(tmp_path: Path) -> None:
    text = edit('erp: {url: "sqlite:///erp.db"}', 'erp: {url: "${ERP_URL:-sqlite:///fallback.db}"}')
    loaded = loader.load(write(tmp_path, text), env=ENV)
    assert loaded.sheet.connections["erp"].url == "sqlite:///fallback.db"
    loaded = loader.load(write(tmp_path, text), env={**ENV, "ERP_URL": "sqlite:///set.db"})
    assert loaded.sheet.connections["erp"].url == "sqlite:///set.db"
    # a missing variable is named, with its line
    found = problems(tmp_path, GOOD, env={})
    assert found == [
        f"{line_of(GOOD, 'PORTAL_PW')}: connections.portal.url: environment variable PORTAL_PW is not set"
    ]
    # set but empty counts as missing
    assert len(problems(tmp_path, GOOD, env={"PORTAL_PW": ""})) == 1


# --------------------------------------------------------------------------- malformed YAML


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        pytest.param("version: 1\nconnections:\n\terp: {url: x}\n", "3:1", "'\\t'", id="tab-indent"),
        pytest.param(
            'version: 1\nconnections:\n  erp: {url: "sqlite:///x}\nsyncs: {}\n',
            "5:1",
            "quoted scalar that starts at line 3, column 14",
            id="unclosed-quote",
        ),
        pytest.param(
            "version: 1\nconnections:\n  erp: {url: x}\n  erp: {url: y}\n",
            "4:3",
            "duplicate key 'erp' (first on line 3)",
            id="duplicate-key",
        ),
        pytest.param(
            "version: 1\nsyncs:\n  s:\n    fields:\n      nm: name\n      nm: other\n",
            "6:7",
            "duplicate key 'nm' (first on line 5)",
            id="duplicate-nested-key",
        ),
        pytest.param("version: 1\nsyncs: [a, b\n", "3:1", "flow sequence", id="unclosed-bracket"),
        pytest.param("version: 1\nkey: a: b\n", "2:7", "mapping values are not allowed", id="colon"),
    ],
)
def test_malformed_yaml_names_file_line_column(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        loader.load(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}:{where}: invalid YAML: "), message
    assert what in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "the sheet must be a mapping", id="empty"),
        pytest.param("# only a comment\n", "the sheet must be a mapping", id="comment-only"),
        pytest.param("- version\n- 1\n", "the sheet must be a mapping", id="a-list"),
        pytest.param("just text\n", "the sheet must be a mapping", id="a-scalar"),
    ],
)
def test_not_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [f"1: {expected} with `version`, `connections` and `syncs`"]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        loader.load(tmp_path / "missing.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"version: 1\n\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        loader.load(tmp_path / "binary.yaml")


# --------------------------------------------------------------------------- wrong schema


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        pytest.param("state:", "stat:", "stat", "unknown key 'stat' (did you mean 'state'?)", id="top-level"),
        pytest.param(
            "    filter:",
            "    filtr:",
            "syncs.customers.filtr",
            "unknown key 'filtr' (did you mean 'filter'?)",
            id="sync",
        ),
        pytest.param(
            "title: {from: title, truncate: 150}",
            "title: {from: title, truncat: 150}",
            "syncs.customers.fields.title.truncat",
            "unknown key 'truncat' (did you mean 'truncate'?)",
            id="field-rule",
        ),
        pytest.param(
            "      column: updated_at",
            "      colum: updated_at",
            "syncs.customers.changes.colum",
            "unknown key 'colum' (did you mean 'column'?)",
            id="changes-union",
        ),
        pytest.param(
            "    timezone: Europe/Berlin",
            "    timezon: Europe/Berlin",
            "connections.portal.timezon",
            "unknown key 'timezon' (did you mean 'timezone'?)",
            id="connection-union",
        ),
        pytest.param(
            "overlap: {window: 24h, every: 1d}",
            "overlap: {windw: 24h, every: 1d}",
            "syncs.customers.changes.overlap.windw",
            "unknown key 'windw' (did you mean 'window'?)",
            id="overlap",
        ),
        pytest.param(
            "parent: {from: [company, order_no],",
            "parent: {form: [company, order_no],",
            "syncs.orders.children.lines.parent.form",
            "unknown key 'form' (did you mean 'from'?)",
            id="child-parent",
        ),
        pytest.param(
            "    deletes: {policy: hard}",
            "    deletes: {policy: hard, cascade: true}",
            "syncs.orders.deletes.cascade",
            "unknown key 'cascade'",
            id="no-suggestion",
        ),
    ],
)
def test_unknown_keys_with_did_you_mean(tmp_path: Path, old: str, new: str, path: str, message: str) -> None:
    text = edit(old, new)
    found = problems(tmp_path, text)
    assert f"{line_of(text, new)}: {path}: {message}" in found, found
    if "did you mean" not in message:
        assert all("did you mean" not in p for p in found)


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        pytest.param(
            "country: {from: land, country: iso3}",
            "country: {from: land, country: iso4}",
            "syncs.customers.fields.country.country",
            "unknown option 'iso4' (expected 'iso2', 'iso3' or 'name')",
            id="country-option",
        ),
        pytest.param(
            "price: {from: price, cast: decimal, scale: 2}",
            "price: {from: price, cast: money}",
            "syncs.customers.fields.price.cast",
            "unknown option 'money'",
            id="cast-option",
        ),
        pytest.param(
            "on_unknown: default",
            "on_unknown: ignore",
            "syncs.customers.fields.tier.on_unknown",
            "unknown option 'ignore' (expected 'reject', 'default' or 'keep')",
            id="on-unknown",
        ),
        pytest.param(
            "changes: {method: snapshot}",
            "changes: {method: cdc}",
            "syncs.orders.changes",
            "unknown method 'cdc' (expected 'watermark', 'full', 'queue', 'snapshot', 'log', 'inbox', 'export_flag')",
            id="method",
        ),
        pytest.param(
            "changes: {method: snapshot}",
            "changes: {column: x}",
            "syncs.orders.changes",
            "'method' is required",
            id="method-missing",
        ),
        pytest.param(
            'erp: {url: "sqlite:///erp.db"}',
            'erp: {url: "sqlite:///erp.db", kind: ftp}',
            "connections.erp",
            "unknown kind 'ftp' (expected 'sql', 'rest', 'cimcloud')",
            id="connection-kind",
        ),
        pytest.param(
            "deletes: {policy: hard}",
            "deletes: {policy: soft}",
            "syncs.orders.deletes.policy",
            "unknown option 'soft'",
            id="delete-policy",
        ),
        pytest.param("version: 1", "version: 2", "version", "unknown option 2 (expected 1)", id="version"),
    ],
)
def test_unknown_methods_and_options(tmp_path: Path, old: str, new: str, path: str, message: str) -> None:
    text = edit(old, new)
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(f"{line_of(text, new)}: {path}: {message}"), found


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        pytest.param(
            "delivery: {batch: 1000}",
            "delivery: {batch: -5}",
            "syncs.customers.delivery.batch",
            "greater than 0 (got -5)",
            id="negative-batch",
        ),
        pytest.param(
            "delivery: {batch: 1000}",
            "delivery: {batch: 0}",
            "syncs.customers.delivery.batch",
            "greater than 0 (got 0)",
            id="zero-batch",
        ),
        pytest.param(
            "delivery: {batch: 1000}",
            "delivery: {batch: 1000000}",
            "syncs.customers.delivery.batch",
            "less than or equal to 100000 (got 1000000)",
            id="huge-batch",
        ),
        pytest.param(
            "delivery: {batch: 1000}",
            "delivery: {batch: many}",
            "syncs.customers.delivery.batch",
            "valid integer",
            id="batch-text",
        ),
        pytest.param(
            "title: {from: title, truncate: 150}",
            "title: {from: title, truncate: -1}",
            "syncs.customers.fields.title.truncate",
            "greater than 0 (got -1)",
            id="negative-truncate",
        ),
        pytest.param(
            "      lag: 1h30m",
            "      lag: soon",
            "syncs.customers.changes.lag",
            "'soon' is not a duration (write e.g. 5s, 10m, 24h, 1h30m)",
            id="duration",
        ),
        pytest.param(
            "      lag: 1h30m",
            "      lag: -5",
            "syncs.customers.changes.lag",
            "a duration cannot be negative",
            id="negative-duration",
        ),
        pytest.param(
            "    timezone: Europe/Berlin",
            "    timezone: 5",
            "connections.portal.timezone",
            "valid string (got 5)",
            id="number-for-text",
        ),
        pytest.param(
            "      nm: name",
            "      nm: [name, other]",
            "syncs.customers.fields.nm",
            "expected a mapping (key: value), got a list",
            id="list-for-rule",
        ),
        pytest.param(
            "  orders:\n",
            "  orders: yes\n  later:\n",
            "syncs.orders",
            "expected a mapping (key: value), got bool True",
            id="scalar-for-sync",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, old: str, new: str, path: str, message: str) -> None:
    text = edit(old, new)
    found = problems(tmp_path, text)
    needle = new.strip().splitlines()[0]
    line = line_of(text, needle)
    assert any(p.startswith(f"{line}: {path}: ") and message in p for p in found), found


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        pytest.param("version: 1\n", "", "version", id="version"),
        pytest.param("    key: {from: id, to: erp_id}\n", "", "syncs.customers.key", id="key"),
        pytest.param("      column: updated_at\n", "", "syncs.customers.changes.column", id="column"),
        pytest.param(
            "to: {connection: portal, table: orders}",
            "to: {connection: portal}",
            "syncs.orders.to.table",
            id="table",
        ),
        pytest.param(
            "        parent: {from: [company, order_no], to: [company_code, erp_order_no]}\n",
            "",
            "syncs.orders.children.lines.parent",
            id="child-parent",
        ),
    ],
)
def test_missing_required(tmp_path: Path, old: str, new: str, path: str) -> None:
    found = problems(tmp_path, edit(old, new))
    assert any(p.split(": ", 1)[1] == f"{path}: required key is missing" for p in found), found


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        pytest.param(
            "source: {value: erp}",
            "source: {from: src, value: erp}",
            "syncs.customers.fields.source",
            "give one of `from`, `value` or `template`",
            id="from-and-value",
        ),
        pytest.param(
            "source: {value: erp}",
            "source: {truncate: 3}",
            "syncs.customers.fields.source",
            "give `from` (a source column), `value`, `template` or `default`",
            id="no-source",
        ),
        pytest.param(
            "on_unknown: default, map_default: bronze}",
            "on_unknown: default}",
            "syncs.customers.fields.tier",
            "`on_unknown: default` needs `map_default`",
            id="map-default",
        ),
        pytest.param(
            "price: {from: price, cast: decimal, scale: 2}",
            "price: {from: price, scale: 2}",
            "syncs.customers.fields.price",
            "`scale` goes with `cast: decimal`",
            id="scale",
        ),
        pytest.param(
            "deletes: {policy: disable, field: active, value: false}",
            "deletes: {policy: disable}",
            "syncs.customers.deletes",
            "`policy: disable` needs `field` and `value`",
            id="disable",
        ),
        pytest.param(
            "from: {connection: erp, table: customers}",
            "from: {connection: erp, table: customers, query: SELECT 1}",
            "syncs.customers.from",
            "give exactly one of `table` or `query`",
            id="table-and-query",
        ),
        pytest.param(
            "key: {from: id, to: erp_id}",
            "key: {from: [id, company], to: erp_id}",
            "syncs.customers.key",
            "`from` and `to` must name the same number of columns",
            id="key-length",
        ),
        pytest.param(
            "      nm: name",
            "      erp_id: name",
            "syncs.customers.fields.erp_id",
            "is a key column: it is filled from `key`",
            id="field-is-key",
        ),
        pytest.param(
            "field: active, value: false}",
            "field: erp_id, value: false}",
            "syncs.customers.deletes.field",
            "cannot be a key column",
            id="disable-key",
        ),
        pytest.param(
            "from: {connection: erp, table: order_lines}",
            "from: {connection: portal, table: order_lines}",
            "syncs.orders.children.lines.from.connection",
            "must be the parent's source connection",
            id="child-connection",
        ),
        pytest.param(
            "parent: {from: [company, order_no], to: [company_code, erp_order_no]}",
            "parent: {from: order_no, to: erp_order_no}",
            "syncs.orders.children.lines.parent",
            "must name as many columns as the parent's key",
            id="child-parent-width",
        ),
    ],
)
def test_rules_across_keys(tmp_path: Path, old: str, new: str, path: str, message: str) -> None:
    text = edit(old, new)
    found = problems(tmp_path, text)
    assert found == [f"{line_of(text, new.strip())}: {path}: {message}"], found


def test_unknown_connection_and_sync_and_cycle(tmp_path: Path) -> None:
    text = good(
        **{
            "from: {connection: erp, table: customers}": "from: {connection: erpp, table: customers}",
            "to: {connection: portal, table: accounts}": "to: {connection: crm, table: accounts}",
            "    after: customers": "    after: [customers, invoices]",
            "    delivery: {batch: 1000}": "    delivery: {batch: 1000}\n    after: orders",
        }
    )
    found = problems(tmp_path, text)
    assert found == [
        f"{line_of(text, 'connection: erpp')}: syncs.customers.from.connection: "
        "unknown connection 'erpp' (did you mean 'erp'?)",
        f"{line_of(text, 'connection: crm')}: syncs.customers.to.connection: "
        "unknown connection 'crm' (known: erp, portal)",
        f"{line_of(text, 'after: orders')}: syncs.customers.after: cycle: customers → orders → customers",
        f"{line_of(text, 'invoices')}: syncs.orders.after: unknown sync 'invoices' (known: customers, orders)",
    ]


def test_child_connections_must_be_the_parents(tmp_path: Path) -> None:
    text = edit("to: {connection: portal, table: orders}", "to: {connection: erp, table: orders}")
    assert problems(tmp_path, text) == [
        f"{line_of(text, 'to: {connection: portal, table: order_lines}')}: "
        "syncs.orders.children.lines.to.connection: must be the parent's destination connection"
    ]


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    text = edit("    after: customers", "    after: orders")
    assert problems(tmp_path, text) == [
        f"{line_of(text, 'after: orders')}: syncs.orders.after: cycle: orders → orders"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Schema errors, a missing variable and cross-references all in one report, by line."""
    text = good(
        **{
            "state:": "stat:",
            'url: "postgresql://sync:${PORTAL_PW}@db.example.com/portal"': 'url: "${PORTAL_URL}"',
            "country: {from: land, country: iso3}": "country: {from: land, country: iso4}",
            "delivery: {batch: 1000}": "delivery: {batch: -1}",
            "      lag: 1h30m": "      lag: 5x",
            "to: {connection: portal, table: accounts}": "to: {connection: crm, table: accounts}",
            "    after: customers": "    after: [customers, invoices]",
            "changes: {method: snapshot}": "changes: {method: fulll}",
        }
    )
    found = problems(tmp_path, text)
    expected = [
        ("PORTAL_URL", "connections.portal.url: environment variable PORTAL_URL is not set"),
        ("stat:", "stat: unknown key 'stat' (did you mean 'state'?)"),
        ("connection: crm", "syncs.customers.to.connection: unknown connection 'crm'"),
        ("iso4", "syncs.customers.fields.country.country: unknown option 'iso4'"),
        ("lag: 5x", "syncs.customers.changes.lag: '5x' is not a duration"),
        ("batch: -1", "syncs.customers.delivery.batch: Input should be greater than 0 (got -1)"),
        ("invoices", "syncs.orders.after: unknown sync 'invoices'"),
        ("fulll", "syncs.orders.changes: unknown method 'fulll'"),
    ]
    assert len(found) == len(expected), "\n".join(found)
    for (needle, message), problem in zip(expected, found, strict=True):
        assert problem.startswith(f"{line_of(text, needle)}: {message}"), (problem, message)
    lines = [int(p.split(":")[0]) for p in found]
    assert lines == sorted(lines)


def test_secret_values_never_appear_in_messages(tmp_path: Path) -> None:
    """A value that came from the environment is redacted wherever validation would echo it."""
    text = good(
        **{
            'erp: {url: "sqlite:///erp.db"}': 'erp: {url: "sqlite:///erp.db", kind: "${TOKEN}"}',
            "country: {from: land, country: iso3}": 'country: {from: land, country: "${TOKEN}"}',
            "      lag: 1h30m": '      lag: "${TOKEN}"',
            "delivery: {batch: 1000}": 'delivery: {batch: "x${TOKEN}"}',
            "from: {connection: erp, table: orders}": 'from: {connection: "${TOKEN}", table: orders}',
            "    after: customers": '    after: ["${TOKEN}"]',
        }
    )
    found = problems(tmp_path, text, env={**ENV, "TOKEN": CANARY})
    joined = "\n".join(found)
    assert CANARY not in joined
    assert CANARY[:12] not in joined
    # each of the six places is still reported, with the value masked
    for needle, message in [
        ("kind:", "connections.erp: unknown kind '***'"),
        ("country:", "syncs.customers.fields.country.country: unknown option '***'"),
        ("lag:", "syncs.customers.changes.lag: '***' is not a duration"),
        ("batch:", "syncs.customers.delivery.batch: Input should be a valid integer"),
        ('"${TOKEN}", table: orders', "syncs.orders.from.connection: unknown connection '***'"),
        ('["${TOKEN}"]', "syncs.orders.after: unknown sync '***'"),
    ]:
        assert any(p.startswith(f"{line_of(text, needle)}: {message}") for p in found), (message, found)


def test_empty_collections(tmp_path: Path) -> None:
    text = "version: 1\nconnections: {}\nsyncs: {}\n"
    assert problems(tmp_path, text) == ["3: syncs: needs at least 1 entry"]
    text = edit("key: {from: id, to: erp_id}", "key: {from: [], to: []}")
    line = line_of(text, "key: {from: [], to: []}")
    assert problems(tmp_path, text) == [
        f"{line}: syncs.customers.key.from: needs at least 1 entry",
        f"{line}: syncs.customers.key.to: needs at least 1 entry",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("? [a, b]\n: 1\n", "1:3: invalid YAML: a key must be a plain name", id="list-key"),
        pytest.param("[" * 3000 + "]" * 3000 + "\n", "invalid YAML: nested too deeply", id="deep"),
        pytest.param(
            "version: 1\nstate: {lease_ttl: 99999999999d}\n",
            "state.lease_ttl: '99999999999d' is not a usable duration",
            id="huge-duration",
        ),
        pytest.param(
            "version: 1\nstate: {lease_ttl: .nan}\n",
            "state.lease_ttl: nan is not a usable duration",
            id="nan",
        ),
        pytest.param(
            "version: 1\nstate: {lease_ttl: .inf}\n",
            "state.lease_ttl: inf is not a usable duration",
            id="inf",
        ),
        pytest.param("!!python/object:os.system {}\n", "could not determine a constructor", id="python-tag"),
    ],
)
def test_hostile_yaml_is_a_config_error(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        loader.load(path, env={})
    assert expected in str(info.value)


def test_mutated_sheets_only_ever_raise_config_errors(tmp_path: Path) -> None:
    """Lines deleted, cut, duplicated or stripped of a colon: a ConfigError every time, never a crash."""
    rng = random.Random(20240611)
    lines = GOOD.splitlines()
    path = tmp_path / "mutant.yaml"
    refused = 0
    for _ in range(300):
        mutant = list(lines)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(mutant))
            op = rng.randrange(5)
            if op == 0:
                del mutant[i]
            elif op == 1:
                mutant[i] = mutant[i].replace(":", "", 1)
            elif op == 2:
                mutant.insert(i, mutant[rng.randrange(len(mutant))])
            elif op == 3:
                mutant[i] = mutant[i][: rng.randrange(len(mutant[i]) + 1)]
            else:
                mutant[i] = mutant[i].replace("  ", "\t", 1)
        path.write_text("\n".join(mutant) + "\n", encoding="utf-8")
        try:
            loader.load(path, env=ENV)
        except ConfigError as exc:
            refused += 1
            assert str(exc).startswith(str(path))
    assert refused > 200  # the mutations do break sheets


# --------------------------------------------------------------------------- the CLI


def _no_traceback(result: object) -> None:
    stdout, stderr = getattr(result, "stdout", ""), getattr(result, "stderr", "")
    assert "Traceback" not in stdout + stderr
    assert 'File "' not in stderr


def test_cli_validate_good_and_json(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = h.mapsync("validate", str(path), cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "valid (2 sync(s): customers, orders)" in result.stdout
    _no_traceback(result)
    result = h.mapsync("validate", "--json", str(path), cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"valid": True, "syncs": ["customers", "orders"]}


def test_cli_validate_bad_lists_every_problem(tmp_path: Path) -> None:
    text = good(
        **{
            "state:": "stat:",
            "country: {from: land, country: iso3}": 'country: {from: land, country: "${TOKEN}"}',
            "to: {connection: portal, table: accounts}": "to: {connection: crm, table: accounts}",
        }
    )
    path = write(tmp_path, text)
    env = {"PORTAL_PW": CANARY, "TOKEN": CANARY + "-2"}
    result = h.mapsync("validate", str(path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    _no_traceback(result)
    assert CANARY not in result.stdout + result.stderr
    assert "3 problem(s)" in result.stderr
    assert (
        f"{path}:{line_of(text, 'stat:')}: stat: unknown key 'stat' (did you mean 'state'?)" in result.stderr
    )
    assert "syncs.customers.to.connection: unknown connection 'crm'" in result.stderr
    assert "syncs.customers.fields.country.country: unknown option '***'" in result.stderr

    result = h.mapsync("validate", "--json", str(path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    _no_traceback(result)
    assert CANARY not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert len(data["problems"]) == 3
    assert data["problems"][0] == {
        "file": str(path),
        "line": line_of(text, "stat:"),
        "column": 1,
        "path": "stat",
        "message": "unknown key 'stat' (did you mean 'state'?)",
    }
    assert data["problems"][1]["path"] == "syncs.customers.to.connection"  # a problem is an object


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param(
            "tab.yaml", b"version: 1\nconnections:\n\terp: {url: x}\n", ":3:1: invalid YAML", id="tab"
        ),
        pytest.param("dup.yaml", b"version: 1\nversion: 1\n", ":2:1: invalid YAML: duplicate key", id="dup"),
        pytest.param("bin.yaml", b"\xff\xfe\x00\x01", "cannot read", id="binary"),
        pytest.param("empty.yaml", b"", "must be a mapping", id="empty"),
        pytest.param("missing.yaml", None, "no such file", id="missing"),
        pytest.param("folder", "dir", "cannot read", id="directory"),
    ],
)
def test_cli_validate_never_shows_a_traceback(
    tmp_path: Path, name: str, content: bytes | str | None, expected: str
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = h.mapsync("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    _no_traceback(result)
    assert expected in result.stderr
    if name == "tab.yaml":
        json_result = h.mapsync("validate", "--json", str(path), cwd=tmp_path)
        assert json_result.returncode == 2
        problems_ = json.loads(json_result.stdout)["problems"]
        assert [(p["file"], p["line"], p["column"], p["path"]) for p in problems_] == [
            (str(path), 3, 1, None)
        ]
        assert problems_[0]["message"].startswith(
            "invalid YAML: found character '\\t' that cannot start any token"
        )


def test_missing_variable_names_it_on_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = h.mapsync("validate", str(path), cwd=tmp_path, env={"PORTAL_PW": ""})
    assert result.returncode == 2
    _no_traceback(result)
    assert (
        f"{path}:{line_of(GOOD, 'PORTAL_PW')}: connections.portal.url: environment variable PORTAL_PW is not set"
        in (result.stderr)
    )


# --------------------------------------------------------------------------- the example sheet


def test_init_writes_the_example_and_it_validates(tmp_path: Path) -> None:
    result = h.mapsync("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "mapsync.yaml"
    shipped = Path(loader.__file__).parents[1] / "examples" / "sheet.yaml"
    assert written.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")
    result = h.mapsync("validate", "mapsync.yaml", cwd=tmp_path, env={"PORTAL_URL": ""})
    assert result.returncode == 0, result.stderr
    assert "valid (2 sync(s): customers, orders)" in result.stdout
    # init never overwrites without --force
    written.write_text("mine", encoding="utf-8")
    result = h.mapsync("init", cwd=tmp_path)
    assert result.returncode == 2 and "--force" in result.stderr
    assert written.read_text(encoding="utf-8") == "mine"


def test_example_sheet_uses_the_features_it_shows() -> None:
    shipped = Path(loader.__file__).parents[1] / "examples" / "sheet.yaml"
    sheet = loader.load(shipped, env={}).sheet
    customers = sheet.syncs["customers"]
    rules = customers.fields.values()
    assert isinstance(customers.changes, models.WatermarkChanges)
    assert any(r.truncate for r in rules)
    assert any(r.map and r.on_unknown != "reject" for r in rules)
    assert any(r.country == "iso3" for r in rules)
    assert any("value" in r.model_fields_set for r in rules)
    assert any(r.cast == "decimal" for r in rules)
    assert customers.seed.where and customers.filter
    assert customers.deletes.policy != "ignore"
    assert customers.delivery.batch and customers.schedule.every
    assert sheet.syncs["orders"].after == ["customers"] and sheet.syncs["orders"].children
    # every line of commentary is a YAML comment, and the file explains itself
    text = shipped.read_text(encoding="utf-8")
    assert text.count("#") > 30


def test_example_sheet_runs_end_to_end(tmp_path: Path) -> None:
    """The example is not only valid: against tables shaped as it says, seed and run deliver."""
    assert h.mapsync("init", cwd=tmp_path).returncode == 0
    erp, portal = f"sqlite:///{tmp_path / 'erp.db'}", f"sqlite:///{tmp_path / 'portal.db'}"
    h.execute(
        erp,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, status TEXT, country TEXT, "
        "credit_limit TEXT, phone TEXT, is_test INTEGER NOT NULL DEFAULT 0, updated_at TEXT)",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, order_date TEXT, total TEXT)",
        "CREATE TABLE order_lines (order_id INTEGER, line_no INTEGER, item_code TEXT, qty TEXT, "
        "unit_price TEXT, PRIMARY KEY (order_id, line_no))",
        "INSERT INTO customers VALUES "
        "(1, 'Ada', 'A', 'Deutschland', '1000.005', NULL, 0, '2024-01-01 10:00:00'), "
        "(2, '" + "B" * 200 + "', 'X', 'France', '5', '+33 1', 0, '2024-01-01 10:00:00'), "
        "(3, 'Prospect', 'P', 'Italy', '1', NULL, 0, '2024-01-01 10:00:00'), "
        "(4, 'Test', 'A', 'Spain', '1', NULL, 1, '2024-01-01 10:00:00')",
        "INSERT INTO orders VALUES (10, 1, '2024-02-03', '19.99')",
        "INSERT INTO order_lines VALUES (10, 1, 'SKU-1', '2', '9.995'), (10, 2, 'SKU-2', '1', '0')",
    )
    h.execute(
        portal,
        "CREATE TABLE accounts (erp_id INTEGER PRIMARY KEY, name TEXT, display_name VARCHAR(150), "
        "state TEXT, country TEXT, credit_limit NUMERIC(12, 2), source_system TEXT, phone TEXT, "
        "active BOOLEAN NOT NULL DEFAULT 1)",
        "CREATE TABLE orders (erp_order_id INTEGER PRIMARY KEY, customer_erp_id INTEGER, "
        "ordered_on DATE, total NUMERIC(12, 2))",
        "CREATE TABLE order_lines (erp_order_id INTEGER, line_no INTEGER, sku TEXT, quantity INTEGER, "
        "price NUMERIC(12, 2), PRIMARY KEY (erp_order_id, line_no))",
    )
    env = {"PORTAL_URL": ""}
    result = h.mapsync("seed", "mapsync.yaml", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = h.query(
        portal,
        "SELECT erp_id, length(name), length(display_name), state, country, credit_limit, "
        "source_system, phone FROM accounts ORDER BY erp_id",
    )
    # seed.where (A, B only: 2 has the unlisted status X → seed skips it too), filter (no 4)
    assert [r[0] for r in rows] == [1]
    _, name_len, display_len, state, country, credit, source, phone = rows[0]
    assert (name_len, display_len, state, country, source, phone) == (3, 3, "active", "DEU", "erp", "")
    assert str(credit) in ("1000.01", "1000.010")  # half-up, exact
    # the later run sees every change that passes the filter: 2 and 3 arrive once touched
    # (stamped just inside the watermark window: after the seed's cursor, before now - lag)
    touched = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=4)
    h.execute(
        erp,
        "UPDATE customers SET updated_at = :ts WHERE id IN (2, 3, 4)",
        params={"ts": touched.strftime("%Y-%m-%d %H:%M:%S")},
    )
    time.sleep(max(0.0, (touched + dt.timedelta(seconds=6) - dt.datetime.now(dt.UTC)).total_seconds()))
    result = h.mapsync("run", "mapsync.yaml", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = h.query(portal, "SELECT erp_id, length(name), length(display_name), state, active FROM accounts")
    by_id = {r[0]: r[1:] for r in rows}
    assert set(by_id) == {1, 2, 3}  # 4 is a test customer: `filter` keeps it out
    assert by_id[2] == (200, 150, "inactive", 1)  # truncated; unlisted status → map_default
    assert by_id[3][2] == "prospect"
    assert h.query(portal, "SELECT erp_order_id, customer_erp_id, ordered_on, total FROM orders") == [
        (10, 1, "2024-02-03", 19.99)
    ]
    assert h.query(portal, "SELECT line_no, sku, quantity, price FROM order_lines ORDER BY line_no") == [
        (1, "SKU-1", 2, 10.0),
        (2, "SKU-2", 1, 0),
    ]


@pytest.mark.parametrize("url", ["mysql://sync:s3cr3t@db/state", "mariadb+pymysql://sync:s3cr3t@db/state"])
def test_a_mariadb_state_store_is_refused_up_front(tmp_path: Path, url: str) -> None:
    """The state store runs on SQLite or PostgreSQL; a MariaDB URL is a clear sheet error naming the
    line and key (it used to fail at schema creation as 'lost its connection'), never its password."""
    text = edit("  lease_ttl: 90s", f'  url: "{url}"\n  lease_ttl: 90s')
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0].startswith(f"{line_of(text, url)}: state.url: "), found
    assert "runs on SQLite or PostgreSQL" in found[0] and "s3cr3t" not in found[0], found
