"""mapsync.logs: JSON lines or console text on stderr and, with `--log-file`, in a file rotated by
size; a secret never appears at any level (DEBUG included), in a message, a field or a traceback,
on stderr or in the file; the CLI options refuse bad values with one line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapsync import logs
from tests import helpers as h

SECRET = "pw-C4NARY-51"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    logs.setup()  # back to the defaults (closes a test's file)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_the_file_rotates_by_size_and_holds_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mapsync.log"
    logs.setup("info", "json", file=path, max_bytes=2048, backups=2)
    log = logging.getLogger("mapsync.engine")
    for i in range(200):
        log.info("batch_committed", extra={"action": "batch_committed", "sync": "items", "n": i})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["mapsync.log", "mapsync.log.1", "mapsync.log.2"]  # older ones dropped
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2048
        for line in _lines(tmp_path / name):
            record = json.loads(line)
            assert record["action"] == "batch_committed" and record["sync"] == "items"
    newest = [json.loads(line)["n"] for line in _lines(path)]
    assert newest[-1] == 199 and newest == sorted(newest)
    err = capsys.readouterr().err.splitlines()  # stderr too, the same format
    assert len(err) == 200 and json.loads(err[-1])["n"] == 199


def test_console_is_the_text_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "text.log"
    logs.setup("info", "console", file=path)
    logging.getLogger("mapsync.engine").info("run_started", extra={"action": "run_started", "sync": "items"})
    line = capsys.readouterr().err.strip()
    assert line.endswith("info    run_started sync=items")
    assert _lines(path) == [line]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_secret_is_never_logged_at_any_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    logs.add_secrets((SECRET,))
    path = tmp_path / "secret.log"
    logs.setup("debug", fmt, file=path)
    log = logging.getLogger("mapsync.rest")
    log.debug(f"request with token {SECRET}", extra={"action": "request", "header": f"Bearer {SECRET}"})
    log.info("login", extra={"action": "login", "url": f"https://u:{SECRET}@api.example/x"})
    try:
        raise ConnectionError(f"refused for {SECRET}")
    except ConnectionError:
        log.exception("connect_failed", extra={"action": "connect_failed"})
    logging.getLogger("sqlalchemy.pool").warning(f"pool trouble {SECRET}")
    text = path.read_text(encoding="utf-8")
    err = capsys.readouterr().err
    for out in (text, err):
        assert SECRET not in out
        assert out.count("***") >= 5  # every one was there, redacted
    assert "request with token ***" in text and "ConnectionError" in text


def test_the_cli_refuses_a_bad_format_and_an_unwritable_file(tmp_path: Path) -> None:
    done = h.mapsync("--log-format", "yaml", "check", "x.yaml", cwd=tmp_path, process=False)
    assert done.returncode == 2 and "--log-format: unknown format 'yaml'" in done.stderr
    missing = tmp_path / "no" / "such" / "dir" / "m.log"
    done = h.mapsync("--log-file", str(missing), "check", "x.yaml", cwd=tmp_path, process=False)
    assert done.returncode == 2 and f"--log-file {missing}:" in done.stderr
    assert "Traceback" not in done.stderr
