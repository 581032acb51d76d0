"""What rules change on purpose is counted and reported per run (country auto-correction,
ambiguous daylight-saving times, updates written disabled because they show expiry); a rejected
record names every failing field; `python` hooks found by entry point."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mapsync import errors, records, transforms
from mapsync import mapping as compile_
from mapsync.sheet import models
from mapsync.testing import fakes


def _world(tmp_path: Path, fields: dict[str, Any], rows: list[dict[str, Any]], **spec: Any) -> Any:
    loaded = fakes.sheet({"c": {"key": {"from": "id", "to": "ref"}, "fields": fields, **spec}}, tmp_path)
    store = fakes.state_store(tmp_path)
    source = fakes.MemorySource(rows)
    dest = fakes.MemoryDestination()
    return fakes.MemoryEngine(loaded, store, {"c": (source, dest)}), source, dest, store


def test_corrections_and_ambiguous_times_are_counted_in_the_run_report(tmp_path: Path) -> None:
    fields = {
        "country": {"from": "country", "country": {"to": "iso2", "autocorrect": True}},
        "seen": {"from": "seen", "timezone": {"source": "Europe/Berlin"}},
    }
    fold = dt.datetime(2024, 10, 27, 2, 30)  # noqa: DTZ001  (happened twice in Berlin)
    plain = dt.datetime(2024, 10, 27, 12, 0)  # noqa: DTZ001
    rows = [
        {"id": 1, "country": "Germnay", "seen": fold, "version": 1},
        {"id": 2, "country": "Germany", "seen": plain, "version": 1},
        {"id": 3, "country": "Swizerland", "seen": fold, "version": 1},
        {"id": 4, "country": "Austrlia", "seen": plain, "version": 1},  # Australia or Austria?
    ]
    engine, _, dest, store = _world(tmp_path, fields, rows)
    try:
        report = engine.run("c", "seed")
    finally:
        store.close()
    assert report.corrected == {"country": 2}
    assert report.dst_ambiguous == {"seen": 2}
    assert {k: v["country"] for k, v in dest.rows.items()} == {(1,): "DE", (2,): "DE", (3,): "CH"}
    assert dest.rows[(1,)]["seen"] == dt.datetime(2024, 10, 27, 0, 30)  # noqa: DTZ001  (the earlier)
    assert [s.key for s in report.samples] == [(4,)]
    assert "ambiguous: close to Australia, Austria" in report.samples[0].message


def test_a_rejection_names_every_failing_field(tmp_path: Path) -> None:
    fields = {
        "a": {"from": "a", "cast": "int"},
        "b": {"from": "b", "required": True},
        "c": {"from": "c", "map": {"x": 1}},
    }
    cfg = models.SyncConfig.model_validate(
        {
            "from": {"connection": "erp", "table": "s"},
            "to": {"connection": "portal", "table": "d"},
            "key": {"from": "id", "to": "ref"},
            "fields": fields,
            "changes": {"method": "full"},
        }
    )
    m = compile_.Mapping(cfg, {}, {})
    change = records.Change("upsert", (1,), None, {"id": 1, "a": "one", "b": None, "c": "y"})
    out = m.apply(change, m.prepare([change]), transforms.Tally())
    assert isinstance(out, records.Rejection)
    # the first failing field stays the rejection's field and rule (unmapped values, retry)
    assert (out.field, out.rule) == ("a", "cast")
    assert "value 'one' of `a` is not a valid int" in out.message
    assert "also: field `b` is required but is None" in out.message
    assert "value 'y' of `c` is not in the map {x}" in out.message
    good = records.Change("upsert", (2,), None, {"id": 2, "a": "5", "b": "z", "c": "x"})
    assert isinstance(m.apply(good, m.prepare([good]), transforms.Tally()), records.Mapped)


def test_a_python_hook_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed-style distribution (dist-info with entry_points.txt) on sys.path."""
    (tmp_path / "acme_hooks.py").write_text(
        textwrap.dedent(
            """
            def shout(value, row):
                if value is None:
                    raise ValueError("nothing to shout")
                return str(value).upper() + "!"
            """
        )
    )
    info = tmp_path / "acme_hooks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-hooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mapsync.hooks]\nshout = acme_hooks:shout\nbroken = acme_hooks:nope\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def apply(python: Any, value: Any) -> Any:
        cfg = models.SyncConfig.model_validate(
            {
                "from": {"connection": "erp", "table": "s"},
                "to": {"connection": "portal", "table": "d"},
                "key": {"from": "id", "to": "ref"},
                "fields": {"f": {"from": "x", "python": python}},
                "changes": {"method": "full"},
            }
        )
        m = compile_.Mapping(cfg, {}, {})
        change = records.Change("upsert", (1,), None, {"id": 1, "x": value})
        return m.apply(change, m.prepare([change]), transforms.Tally())

    for form in ({"entry_point": "shout"}, "ep:shout"):
        out = apply(form, "hi")
        assert isinstance(out, records.Mapped) and out.values["f"] == "HI!"
    rejected = apply({"entry_point": "shout"}, None)
    assert isinstance(rejected, records.Rejection) and rejected.rule == "python"
    assert rejected.message == "field `f`: nothing to shout (python entry point shout)"
    with pytest.raises(errors.ConfigError, match=r"no entry point 'whisper' .*installed: broken, shout"):
        apply({"entry_point": "whisper"}, "hi")
    with pytest.raises(
        errors.ConfigError, match=r"cannot load python entry point broken \(acme_hooks:nope\)"
    ):
        apply("ep:broken", "hi")


def test_the_cli_report_shows_the_counters_and_the_fallback() -> None:
    from mapsync.cli import common as cli
    from mapsync.engine import RunReport
    from mapsync.state.store import Counts

    report = RunReport("c", "run", 7, "success", Counts(read=5, written=5))
    report.corrected, report.dst_ambiguous, report.expired = {"country": 2}, {"seen": 1}, {"active": 3}
    report.fell_back = 4
    with cli.out.capture() as captured:
        cli.print_report(report)
    text = captured.get()
    assert "country corrected: country ×2" in text
    assert "ambiguous DST time (earlier taken): seen ×1" in text
    assert "expired, written disabled: active ×3" in text
    assert "fell back: 4 hard delete(s) refused by the destination, disabled instead" in text
    quiet = RunReport("c", "run", 8, "success", Counts(read=1, written=1))
    with cli.out.capture() as captured:
        cli.print_report(quiet)
    assert "corrected" not in captured.get() and "fell back" not in captured.get()
