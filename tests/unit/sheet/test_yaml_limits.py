"""Hostile sheets (issue 9 items 13 and 14): YAML alias bombs and aliases inside themselves are
refused in bounded time and memory, and `map_from: {file:}` reads only regular files of a bounded
size inside the sheet's folder unless the sheet allows another place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mapsync import errors
from mapsync import mapping as compile_
from mapsync.sheet import loader, yaml_limits
from mapsync.testing import fakes
from tests.helpers import mapsync

SHEET = """\
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  portal: {url: "sqlite:///portal.db"}
syncs:
  c:
    from: {connection: erp, table: customers}
    to: {connection: portal, table: accounts}
    key: {from: id, to: id}
    changes: {method: watermark, column: modified}
    fields:
"""


def _bomb(kind: str) -> str:
    """About 700 bytes that expand to 9**9 values (or 2**30 merged pairs)."""
    lines = [SHEET.rstrip("\n"), "x:"]
    if kind == "lists":
        lines.append('  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
        for i in range(1, 9):
            lines.append(f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    elif kind == "mappings":
        lines.append("  m0: &m0 {a: lol, b: lol, c: lol, d: lol, e: lol, f: lol, g: lol, h: lol, i: lol}")
        for i in range(1, 9):
            inner = ", ".join(f"{k}: *m{i - 1}" for k in "abcdefghi")
            lines.append(f"  m{i}: &m{i} {{{inner}}}")
    else:  # merge keys: each level merges the one before twice
        lines.append("  g0: &g0 {a: lol, b: lol}")
        for i in range(1, 30):
            lines.append(f"  g{i}: &g{i} {{<<: [*g{i - 1}, *g{i - 1}]}}")
    return "\n".join(lines) + "\n"


PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    from mapsync import errors
    from mapsync.sheet import loader
    start = time.perf_counter()
    try:
        loader.load(sys.argv[1])
        message = None
    except errors.ConfigError as exc:
        message = "\\n".join(exc.problems or [str(exc)])
    # this process's own peak: VmHWM (Linux) starts again at exec, while ru_maxrss keeps the
    # forked parent's (a big test worker's) peak across it
    try:
        with open("/proc/self/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": peak / 1024, "message": message}))
    """
)


def _limited() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: a bomb dies, not the machine


@pytest.mark.parametrize("kind", ["lists", "mappings", "merge"])
def test_an_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path, kind: str) -> None:
    sheet = tmp_path / "bomb.yaml"
    sheet.write_text(_bomb(kind))
    assert sheet.stat().st_size < 1200
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(sheet)],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=_limited,  # no threads are started here
        env={**os.environ},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    print(f"{kind} bomb: {result['seconds']:.3f} s, peak RSS {result['peak_mb']:.0f} MB")
    assert result["message"] is not None
    assert (
        f"{sheet}:" in result["message"]
        and "aliases add more than 250,000 values to the sheet" in (result["message"])
    )
    assert result["seconds"] < 5
    assert result["peak_mb"] < 300


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("x: &c [1, *c]\n", 1),  # a list holding itself
        ("x: &c {a: 1, b: [2, *c]}\n", 1),
        ("x: &c\n  a: 1\n  b:\n    - *c\n", 4),  # the alias's own line
    ],
)
def test_an_alias_inside_its_own_value_is_a_clear_error(tmp_path: Path, text: str, line: int) -> None:
    sheet = tmp_path / "rec.yaml"
    sheet.write_text(SHEET + "      name: {from: name}\n" + text)
    head = SHEET.count("\n") + 1
    with pytest.raises(errors.ConfigError) as caught:
        loader.load(sheet)
    assert str(caught.value).startswith(f"{sheet}:{head + line}: an alias refers to the value it stands in")
    result = mapsync("validate", str(sheet), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert len((result.stdout + result.stderr).splitlines()) <= 3


def test_nesting_and_size_limits(tmp_path: Path) -> None:
    sheet = tmp_path / "deep.yaml"
    # 70 levels, each an alias of the last: a few lines, nested deeper than the limit
    lines = ["x:", "  d0: &d0 [1]"] + [f"  d{i}: &d{i} [*d{i - 1}]" for i in range(1, 70)]
    sheet.write_text(SHEET + "      name: {from: name}\n" + "\n".join(lines) + "\n")
    with pytest.raises(errors.ConfigError, match=rf"{sheet}:\d+: the sheet nests .* more than 64 deep"):
        loader.load(sheet)
    big = tmp_path / "big.yaml"
    big.write_text(SHEET + "      name: {from: name}\n# " + "x" * yaml_limits.MAX_BYTES + "\n")
    with pytest.raises(
        errors.ConfigError, match=rf"{big}: the sheet is larger than the limit of 2,000,000 bytes"
    ):
        loader.load(big)


def test_ordinary_anchors_still_work(tmp_path: Path) -> None:
    sheet = tmp_path / "ok.yaml"
    sheet.write_text(
        SHEET
        + "      name: &trimmed {from: name, trim: true}\n"
        + "      city: {from: city, trim: true}\n"
        + "      street: *trimmed\n"
    )
    loaded = loader.load(sheet)
    assert loaded.sheet.syncs["c"].fields["street"].from_ == "name"


# --------------------------------------------------------------------------- map_from files


def _map_sheet(folder: Path, rule: str) -> Path:
    sheet = folder / "mapsync.yaml"
    sheet.write_text(SHEET + f"      st: {{from: status, map_from: {rule}}}\n")
    return sheet


def _compile(folder: Path, source: dict[str, object]) -> compile_.Mapping:
    loaded = fakes.sheet(
        {"c": {"key": {"from": "id", "to": "ref"}, "fields": {"st": {"from": "s", "map_from": source}}}},
        folder,
    )
    return compile_.Mapping(loaded.sheet.syncs["c"], {}, {}, folder=folder)


def _problems(sheet: Path) -> str:
    with pytest.raises(errors.ConfigError) as caught:
        loader.load(sheet)
    return "\n".join(caught.value.problems or [str(caught.value)])


def test_a_map_file_outside_the_sheets_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "sheet"
    folder.mkdir()
    (tmp_path / "outside.csv").write_text("source,destination\nA,secret\n")
    (folder / "link.csv").symlink_to(tmp_path / "outside.csv")
    line = SHEET.count("\n") + 1
    for rule, why in (
        ("{file: ../outside.csv}", "../outside.csv is outside the sheet's folder"),
        ("{file: /etc/passwd}", "/etc/passwd is an absolute path"),
        ("{file: link.csv}", "link.csv is outside the sheet's folder"),  # a symlink pointing out
    ):
        sheet = _map_sheet(folder, rule)
        text = _problems(sheet)
        assert f"{sheet}:{line}: syncs.c.fields.st.map_from.file: {why}" in text
        assert "allow_outside: true" in text
        # read when the mapping compiles (the run): the same refusal, nothing read
        with pytest.raises(errors.ConfigError, match=f"field `st`: map_from: {why}"):
            _compile(folder, {"file": rule[7:-1]})
    # explicitly allowed: read from there
    sheet = _map_sheet(folder, f"{{file: {tmp_path / 'outside.csv'}, allow_outside: true}}")
    loader.load(sheet)
    mapping = _compile(folder, {"file": "../outside.csv", "allow_outside": True})
    assert mapping is not None
    assert "for a map `file`" in _problems(
        _map_sheet(folder, "{connection: erp, table: t, from: a, to: b, max_bytes: 5}")
    )


def test_only_regular_files_of_bounded_size_are_read(tmp_path: Path) -> None:
    line = SHEET.count("\n") + 1
    os.mkfifo(tmp_path / "fifo.csv")  # opening it for reading would wait for a writer forever
    (tmp_path / "folder.csv").mkdir()
    for name in ("/dev/zero", "fifo.csv", "folder.csv"):
        sheet = _map_sheet(tmp_path, f"{{file: {name}, allow_outside: true}}")
        assert f"{sheet}:{line}: syncs.c.fields.st.map_from.file: {name} is not a regular file" in (
            _problems(sheet)
        )
        with pytest.raises(errors.ConfigError, match=f"{name} is not a regular file"):
            _compile(tmp_path, {"file": name, "allow_outside": True})

    big = tmp_path / "big.csv"
    big.write_text("source,destination\n" + "A,b\n" * 10)  # 59 bytes
    sheet = _map_sheet(tmp_path, "{file: big.csv, max_bytes: 50}")
    assert "big.csv is 59 bytes, more than `max_bytes` (50)" in _problems(sheet)
    with pytest.raises(errors.ConfigError, match=r"big\.csv is \d+ bytes, more than `max_bytes` \(50\)"):
        _compile(tmp_path, {"file": "big.csv", "max_bytes": 50})
    loader.load(_map_sheet(tmp_path, "{file: big.csv, max_bytes: 59}"))  # at the cap: fine
    assert _compile(tmp_path, {"file": "big.csv", "max_bytes": 59}) is not None
    # the default cap (10 MB) holds for a file that grows after `validate`
    sheet = _map_sheet(tmp_path, "{file: big.csv}")
    loader.load(sheet)
    with big.open("a") as handle:
        handle.truncate(10_000_001)
    with pytest.raises(errors.ConfigError, match=r"more than `max_bytes` \(10,000,000\)"):
        _compile(tmp_path, {"file": "big.csv"})
